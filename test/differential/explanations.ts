// The recorded, explained differences between LIO and the engine, one entry per cause
// with every step where it shows: fixtures/differential/lio-deviations.json (LIO departs
// from SPC-4, or the two make different choices SPC-4 allows) and
// engine-pending-fixes.json (the engine is wrong and a fix is owed; each entry says what
// to change).

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ExplainedDifference } from './scenarios';

export interface PendingFix extends ExplainedDifference {
  /** What to change in src/engine. */
  fix: string;
}

export interface Explanations {
  lists: Record<string, readonly ExplainedDifference[]>;
  pendingFixes(fabric: string): Array<{ clause: string; fix: string; occurrences: number }>;
}

interface Group {
  clause: string;
  explanation: string;
  fix?: string;
  fabrics?: string[];
  occurrences: Array<{ scenario: string; step: number; field: string; lio: unknown; engine: unknown }>;
}

function readGroups(file: string, property: string, needFix: boolean): Group[] {
  if (!fs.existsSync(file)) return [];
  const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const list = parsed[property];
  const where = `${path.basename(file)}: ${property}`;
  if (!Array.isArray(list)) throw new Error(`${where} must be an array`);
  for (const [i, entry] of list.entries()) {
    const g = entry as Record<string, unknown>;
    for (const field of ['clause', 'explanation', ...(needFix ? ['fix'] : [])]) {
      if (typeof g[field] !== 'string' || g[field] === '') throw new Error(`${where}[${i}].${field} must be a non-empty string`);
    }
    if (!Array.isArray(g.occurrences) || g.occurrences.length === 0) throw new Error(`${where}[${i}].occurrences must be a non-empty array`);
    for (const [j, o] of (g.occurrences as Array<Record<string, unknown>>).entries()) {
      if (typeof o.scenario !== 'string' || typeof o.field !== 'string' || !Number.isInteger(o.step) || (o.step as number) < 1 || !('lio' in o) || !('engine' in o)) {
        throw new Error(`${where}[${i}].occurrences[${j}] needs scenario, step (1-based), field, lio and engine`);
      }
    }
  }
  return list as Group[];
}

function flatten(groups: Group[]): ExplainedDifference[] {
  return groups.flatMap((g) =>
    g.occurrences.map((o) => ({ scenario: o.scenario, step: o.step, field: o.field, lio: o.lio, engine: o.engine, fabrics: g.fabrics, clause: g.clause, explanation: g.explanation })),
  );
}

export function loadExplanations(repoRoot: string): Explanations {
  const dir = path.join(repoRoot, 'fixtures', 'differential');
  const deviations = readGroups(path.join(dir, 'lio-deviations.json'), 'deviations', false);
  const fixes = readGroups(path.join(dir, 'engine-pending-fixes.json'), 'fixes', true);
  return {
    lists: { 'LIO deviation': flatten(deviations), 'engine fix pending': flatten(fixes) },
    pendingFixes: (fabric) =>
      fixes.filter((f) => !f.fabrics || f.fabrics.includes(fabric)).map((f) => ({ clause: f.clause, fix: f.fix!, occurrences: f.occurrences.length })),
  };
}
