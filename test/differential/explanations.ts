// The recorded, explained differences between LIO and the engine:
// fixtures/differential/lio-deviations.json (LIO departs from SPC-4, or the two make
// different implementation choices SPC-4 allows) and engine-pending-fixes.json (the
// engine is wrong and a fix is owed; each entry says what to change).

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ExplainedDifference } from './scenarios';

export interface PendingFix extends ExplainedDifference {
  /** What to change in src/engine. */
  fix: string;
}

export interface Explanations {
  lists: Record<string, readonly ExplainedDifference[]>;
  pendingFixes(fabric: string): PendingFix[];
}

function readList<T>(file: string, property: string): T[] {
  if (!fs.existsSync(file)) return [];
  const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const list = parsed[property];
  if (!Array.isArray(list)) throw new Error(`${file}: "${property}" must be an array`);
  for (const [i, entry] of list.entries()) {
    const e = entry as Record<string, unknown>;
    for (const field of ['scenario', 'field', 'clause', 'explanation']) {
      if (typeof e[field] !== 'string' || e[field] === '') throw new Error(`${file}: ${property}[${i}].${field} must be a non-empty string`);
    }
    if (!Number.isInteger(e.step) || (e.step as number) < 1) throw new Error(`${file}: ${property}[${i}].step must be a positive integer`);
    if (!('lio' in e) || !('engine' in e)) throw new Error(`${file}: ${property}[${i}] needs "lio" and "engine"`);
  }
  return list as T[];
}

export function loadExplanations(repoRoot: string): Explanations {
  const dir = path.join(repoRoot, 'fixtures', 'differential');
  const deviations = readList<ExplainedDifference>(path.join(dir, 'lio-deviations.json'), 'deviations');
  const fixes = readList<PendingFix>(path.join(dir, 'engine-pending-fixes.json'), 'fixes');
  for (const [i, fix] of fixes.entries()) {
    if (typeof fix.fix !== 'string' || fix.fix === '') throw new Error(`engine-pending-fixes.json: fixes[${i}].fix must say what to change`);
  }
  return {
    lists: { 'LIO deviation': deviations, 'engine fix pending': fixes },
    pendingFixes: (fabric) => fixes.filter((f) => !f.fabrics || f.fabrics.includes(fabric)),
  };
}
