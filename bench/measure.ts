// Shared pieces of the benchmark: the metric record every section produces, timed loops,
// and the machine description stored with each run so two runs can be compared honestly.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

export interface Latency {
  readonly p50Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
}

/**
 * One measured number. `id` is stable across runs (compare.ts joins on it); `value` is
 * what the table shows and what compare.ts divides, in `unit`.
 */
export interface Metric {
  readonly id: string;
  readonly section: string;
  readonly label: string;
  readonly value: number;
  readonly unit: 'ops/s' | 'kB' | 'ratio' | 'us/op';
  readonly higherIsBetter: boolean;
  /** For throughput metrics: how many operations ran in how long. */
  readonly ops?: number;
  readonly elapsedMs?: number;
  readonly latency?: Latency;
  /**
   * CPU time per operation: for in-process metrics this process's user+system time over the
   * timed window; for protocol metrics the server process's (all threads, warm-up included).
   * Much steadier than throughput when other work competes for the CPUs.
   */
  readonly cpuUsPerOp?: number;
  /** Protocol runs: the busiest client thread's event-loop utilization (near 1: the client is the bottleneck). */
  readonly clientEventLoopUtilization?: number;
  /** Result statuses seen, by name, so a run that silently failed is visible. */
  readonly statuses?: Readonly<Record<string, number>>;
  readonly note?: string;
}

export function throughput(
  fields: Omit<Metric, 'value' | 'unit' | 'higherIsBetter'> & { ops: number; elapsedMs: number },
): Metric {
  return {
    ...fields,
    elapsedMs: round(fields.elapsedMs, 1),
    cpuUsPerOp: fields.cpuUsPerOp === undefined ? undefined : round(fields.cpuUsPerOp, 2),
    value: fields.ops / (fields.elapsedMs / 1000),
    unit: 'ops/s',
    higherIsBetter: true,
  };
}

/** Time checks are amortised over this many operations so the clock is not what we measure. */
const CLOCK_STRIDE = 64;

/** Runs `op` back to back for `seconds` (after `warmupSeconds`); returns count and elapsed time. */
export function timeSync(
  seconds: number,
  warmupSeconds: number,
  op: (i: number) => void,
  onMeasureStart: () => void = () => undefined,
): { ops: number; elapsedMs: number; cpuUsPerOp: number } {
  let i = 0;
  const warmEnd = performance.now() + warmupSeconds * 1000;
  while (performance.now() < warmEnd) for (let k = 0; k < CLOCK_STRIDE; k++) op(i++);
  onMeasureStart();
  const cpu = process.cpuUsage();
  const start = performance.now();
  const end = start + seconds * 1000;
  let ops = 0;
  let now = start;
  while (now < end) {
    for (let k = 0; k < CLOCK_STRIDE; k++) op(i++);
    ops += CLOCK_STRIDE;
    now = performance.now();
  }
  return { ops, elapsedMs: now - start, cpuUsPerOp: cpuSince(cpu) / ops };
}

/** The async twin of timeSync: each operation is awaited before the next starts. */
export async function timeAsync(
  seconds: number,
  warmupSeconds: number,
  op: (i: number) => Promise<void>,
  onMeasureStart: () => void = () => undefined,
): Promise<{ ops: number; elapsedMs: number; cpuUsPerOp: number }> {
  let i = 0;
  const warmEnd = performance.now() + warmupSeconds * 1000;
  while (performance.now() < warmEnd) await op(i++);
  onMeasureStart();
  const cpu = process.cpuUsage();
  const start = performance.now();
  const end = start + seconds * 1000;
  let ops = 0;
  // Every awaited op costs at least a microtask turn, so reading the clock each time is noise.
  while (performance.now() < end) {
    await op(i++);
    ops++;
  }
  return { ops, elapsedMs: performance.now() - start, cpuUsPerOp: cpuSince(cpu) / ops };
}

function cpuSince(start: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(start);
  return used.user + used.system;
}

/** Counts SCSI statuses by code in the hot loop; names them once at the end. */
export class StatusCounter {
  private readonly counts = new Uint32Array(256);
  add(status: number): void {
    this.counts[status & 0xff]++;
  }
  reset(): void {
    this.counts.fill(0);
  }
  named(nameOf: (status: number) => string): Record<string, number> {
    const out: Record<string, number> = {};
    this.counts.forEach((n, status) => {
      if (n > 0) out[nameOf(status)] = n;
    });
    return out;
  }
}

export function percentiles(samplesUs: Float64Array | number[]): Latency {
  const sorted = Float64Array.from(samplesUs).sort();
  if (sorted.length === 0) return { p50Us: NaN, p99Us: NaN, maxUs: NaN };
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { p50Us: round(at(0.5), 1), p99Us: round(at(0.99), 1), maxUs: round(sorted[sorted.length - 1], 1) };
}

export function round(value: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export interface MachineInfo {
  readonly node: string;
  readonly v8: string;
  readonly platform: string;
  readonly arch: string;
  readonly kernel: string;
  readonly cpus: number;
  readonly cpuModel: string;
  readonly totalMemoryMb: number;
  readonly loadAverage: readonly number[];
  readonly hostname: string;
  /** Filesystem holding the durable SQLite state; fsync cost depends on it. */
  readonly stateFilesystem: string;
  readonly sqlite?: string;
}

export function machineInfo(stateDir: string): MachineInfo {
  const cpus = os.cpus();
  return {
    node: process.version,
    v8: process.versions.v8,
    platform: process.platform,
    arch: process.arch,
    kernel: `${os.type()} ${os.release()} ${os.version()}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    totalMemoryMb: Math.round(os.totalmem() / 2 ** 20),
    loadAverage: os.loadavg().map((l) => round(l, 2)),
    hostname: os.hostname(),
    stateFilesystem: filesystemOf(stateDir),
  };
}

function filesystemOf(dir: string): string {
  try {
    return execFileSync('df', ['--output=fstype,source', dir], { encoding: 'utf8' }).trim().split('\n').slice(1).join(' ').replace(/\s+/g, ' ');
  } catch (error) {
    return `unknown (${(error as Error).message})`;
  }
}

export interface GitInfo {
  readonly commit: string | null;
  /** True when tracked files differ from the commit, so the commit alone does not identify the code. */
  readonly dirty: boolean | null;
}

export function gitInfo(repoDir: string): GitInfo {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repoDir, encoding: 'utf8' }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoDir, encoding: 'utf8' });
    return { commit, dirty: status.trim().length > 0 };
  } catch {
    return { commit: null, dirty: null };
  }
}

/** The repository root: dist/bench/*.js sits two levels below it. */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

/** User + system CPU time of a process (all threads), in microseconds; null when it is gone. */
export function readCpuTimeUs(pid: number): number | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS_PER_SECOND;
}

/** USER_HZ: 100 on every Linux architecture Node supports. */
const CLOCK_TICKS_PER_SECOND = 100;

export function readProcStatus(pid: number): { vmRssKb: number; vmHwmKb: number } | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { vmRssKb: field('VmRSS'), vmHwmKb: field('VmHWM') };
}
