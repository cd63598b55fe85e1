// `node dist/bench/compare.js a.json b.json`: per-metric ratios b/a of two bench runs, with
// a verdict that knows which direction is better, and the machine/commit differences that
// may explain them.

import fs from 'node:fs';
import type { Metric } from './measure';

/** Changes within this factor are reported as noise, not as better or worse. */
export const NOISE_FACTOR = 1.05;

export interface RunFile {
  readonly startedAt?: string;
  readonly git?: { commit: string | null; dirty: boolean | null };
  readonly machine?: Record<string, unknown>;
  readonly loadAverage?: { before: number[]; after: number[] };
  readonly metrics: readonly Metric[];
}

export interface ComparisonRow {
  readonly id: string;
  readonly label: string;
  readonly unit: string;
  readonly a: number | null;
  readonly b: number | null;
  /** b / a; null when either side is missing or a is 0. */
  readonly ratio: number | null;
  readonly verdict: 'better' | 'worse' | 'same' | 'only in a' | 'only in b';
  /** b/a of CPU time per op, when both runs recorded it (lower is better). */
  readonly cpuRatio: number | null;
}

export function compareRuns(a: RunFile, b: RunFile, noise = NOISE_FACTOR): ComparisonRow[] {
  const byId = (run: RunFile) => new Map(run.metrics.map((m) => [m.id, m]));
  const left = byId(a);
  const right = byId(b);
  const ids = [...new Set([...left.keys(), ...right.keys()])];
  return ids.map((id) => {
    const ma = left.get(id);
    const mb = right.get(id);
    const any = (ma ?? mb)!;
    const ratio = ma && mb && ma.value !== 0 ? mb.value / ma.value : null;
    let verdict: ComparisonRow['verdict'];
    if (!mb) verdict = 'only in a';
    else if (!ma) verdict = 'only in b';
    else if (ratio === null || (ratio <= noise && ratio >= 1 / noise)) verdict = 'same';
    else verdict = ratio > 1 === any.higherIsBetter ? 'better' : 'worse';
    const cpuRatio = ma?.cpuUsPerOp && mb?.cpuUsPerOp ? mb.cpuUsPerOp / ma.cpuUsPerOp : null;
    return { id, label: any.label, unit: any.unit, a: ma?.value ?? null, b: mb?.value ?? null, ratio, verdict, cpuRatio };
  });
}

function formatNumber(value: number | null, unit: string): string {
  if (value === null) return '-';
  if (unit === 'ratio') return value.toFixed(2);
  return value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toFixed(1);
}

export function formatComparison(a: RunFile, b: RunFile, rows: readonly ComparisonRow[]): string {
  const lines: string[] = [];
  const describe = (name: string, run: RunFile) =>
    `${name}: ${run.startedAt ?? '?'}  commit ${run.git?.commit?.slice(0, 12) ?? '?'}${run.git?.dirty ? ' (dirty)' : ''}  load ${run.loadAverage?.before?.join(' ') ?? '?'}`;
  lines.push(describe('a', a), describe('b', b));
  for (const key of ['node', 'kernel', 'cpus', 'cpuModel', 'stateFilesystem']) {
    const va = a.machine?.[key];
    const vb = b.machine?.[key];
    if (JSON.stringify(va) !== JSON.stringify(vb)) lines.push(`  machine ${key} differs: a=${JSON.stringify(va)} b=${JSON.stringify(vb)}`);
  }
  lines.push('');
  const idWidth = Math.max(...rows.map((r) => r.id.length));
  lines.push(`${'metric'.padEnd(idWidth)}  ${'a'.padStart(10)}  ${'b'.padStart(10)}  ${'b/a'.padStart(6)}  ${'cpu b/a'.padStart(7)}  unit    verdict`);
  for (const row of rows) {
    lines.push(
      `${row.id.padEnd(idWidth)}  ${formatNumber(row.a, row.unit).padStart(10)}  ${formatNumber(row.b, row.unit).padStart(10)}  ${(row.ratio === null ? '-' : row.ratio.toFixed(2)).padStart(6)}  ${(row.cpuRatio === null ? '-' : row.cpuRatio.toFixed(2)).padStart(7)}  ${row.unit.padEnd(6)}  ${row.verdict}`,
    );
  }
  lines.push('', `b/a > 1 means b is larger; the verdict knows whether larger is better for each unit (ops/s and ratios of throughput: higher; kB and CPU: lower). Within ${NOISE_FACTOR}x either way counts as same.`);
  return lines.join('\n');
}

function readRun(file: string): RunFile {
  const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as RunFile;
  if (!parsed || !Array.isArray(parsed.metrics)) throw new Error(`${file} is not a bench result (no metrics array)`);
  return parsed;
}

if (require.main === module) {
  const [fileA, fileB] = process.argv.slice(2);
  if (!fileA || !fileB) {
    process.stderr.write('usage: node dist/bench/compare.js <a.json> <b.json>   (ratios are b/a)\n');
    process.exit(2);
  }
  try {
    const a = readRun(fileA);
    const b = readRun(fileB);
    process.stdout.write(`${formatComparison(a, b, compareRuns(a, b))}\n`);
  } catch (error) {
    process.stderr.write(`compare: ${(error as Error).message}\n`);
    process.exit(1);
  }
}
