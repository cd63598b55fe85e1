// Protocol round trips over a real Unix socket: our daemon (a child process) and Debian's
// qemu-pr-helper answering the same client loop on the same regular file, plus the
// daemons' memory. Clients run in worker_threads (see protocol-worker.ts).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { PrHelperClient } from '../src/protocol/client';
import { buildPrOut } from '../src/backends/pr-commands';
import { statusName } from '../src/scsi/constants';
import { launchDaemon, MPATH_PR } from '../test/support/daemon';
import { percentiles, readCpuTimeUs, readProcStatus, round, throughput, type Metric } from './measure';
import type { FromWorker, ProtocolOp, ToWorker, WorkerSetup } from './protocol-worker';

export type ServerKind = 'ours' | 'ours-tmpfs' | 'peer';

export interface ServerHandle {
  readonly kind: ServerKind;
  readonly pid: number;
  readonly socketPath: string;
  readonly command: string;
  readonly logPath: string;
  stop(): Promise<void>;
}

/** Debian's qemu-pr-helper; BENCH_PEER_BINARY points at another build (or at nothing, to test the no-peer path). */
export const PEER_BINARY = process.env.BENCH_PEER_BINARY || '/usr/bin/qemu-pr-helper';

async function startProcess(kind: ServerKind, file: string, args: string[], socketPath: string, logPath: string, program: boolean): Promise<ServerHandle> {
  // Output to a file: the bench process must not spend its time reading the daemon's log.
  const daemon = await launchDaemon(file, args, { program, ready: { socket: socketPath }, logFile: logPath });
  return {
    kind,
    pid: daemon.pid,
    socketPath,
    logPath,
    command: [...(program ? [] : [process.execPath]), file, ...args].join(' '),
    async stop() {
      await daemon.stop('SIGTERM', { killAfterMs: 5000 });
    },
  };
}

/** Our daemon with the emulated backend, production settings (durable state, info log to a file). */
export function startOurs(kind: 'ours' | 'ours-tmpfs', dir: string, stateDir: string): Promise<ServerHandle> {
  const socketPath = path.join(dir, `${kind}.sock`);
  const args = ['serve', '--backend', 'emulated', '--socket', socketPath, '--state', path.join(stateDir, `${kind}-state.db`), '--initiator', 'bench'];
  return startProcess(kind, MPATH_PR, args, socketPath, path.join(dir, `${kind}.log`), false);
}

/** Debian's qemu-pr-helper in the foreground (7.2 has no -q; it is quiet unless tracing). */
export function startPeer(dir: string): Promise<ServerHandle> {
  const socketPath = path.join(dir, 'peer.sock');
  return startProcess('peer', PEER_BINARY, ['-k', socketPath, '-f', path.join(dir, 'peer.pid')], socketPath, path.join(dir, 'peer.log'), true);
}

export function peerVersion(): string | null {
  try {
    return execFileSync(PEER_BINARY, ['--version'], { encoding: 'utf8' }).split('\n')[0].trim();
  } catch {
    return null;
  }
}

/** Registers a key so READ KEYS has something to return (our daemon; the peer just fails it). */
export async function seedRegistration(server: ServerHandle, devicePath: string): Promise<void> {
  const client = new PrHelperClient();
  const fd = fs.openSync(devicePath, 'r+');
  try {
    await client.connect(server.socketPath);
    const { cdb, dataOut } = buildPrOut({ action: 'register-ignore', serviceActionKey: 0xbe7cn });
    await client.execute(fd, cdb, dataOut);
  } finally {
    client.close();
    fs.closeSync(fd);
  }
}

export interface ClientLayout {
  readonly workers: number;
  readonly connectionsPerWorker: number;
}

export interface RunSpec {
  readonly server: ServerHandle;
  readonly op: ProtocolOp;
  readonly layout: ClientLayout;
  readonly devicePath: string;
  readonly seconds: number;
  readonly warmupSeconds: number;
  /**
   * One more connection, on its own thread, running this op at the same time; its commands
   * are not counted in the metric. Shows whether one client's work delays another's.
   */
  readonly background?: ProtocolOp;
  /** Called every 100 ms while commands run (RSS sampling). */
  readonly onTick?: () => void;
}

const OP_LABEL: Record<ProtocolOp, string> = { 'pr-in': 'PR IN READ KEYS', 'pr-out': 'PR OUT REGISTER AND IGNORE' };

export function runId(kind: ServerKind, op: ProtocolOp, layout: ClientLayout, background?: ProtocolOp): string {
  const clients = layout.workers * layout.connectionsPerWorker;
  return `protocol.${kind}.${op}.c${clients}${layout.workers > 1 ? `.${layout.workers}-threads` : ''}${background ? `.with-${background}` : ''}`;
}

/**
 * Runs one client configuration against one server: client-side throughput and latency,
 * and the server's CPU time per command (warm-up included on both sides of the division).
 */
export async function runClients(spec: RunSpec): Promise<Metric> {
  const { layout } = spec;
  const workerFile = path.join(__dirname, 'protocol-worker.js');
  const workers: Worker[] = [];
  const results: Extract<FromWorker, { type: 'done' }>[] = [];
  let backgroundResult: Extract<FromWorker, { type: 'done' }> | undefined;
  const threads = layout.workers + (spec.background ? 1 : 0);
  let tick: NodeJS.Timeout | undefined;
  let cpuBefore: number | null = null;
  let cpuAfter: number | null = null;
  try {
    const ready: Promise<void>[] = [];
    const done: Promise<void>[] = [];
    for (let i = 0; i < threads; i++) {
      const isBackground = i === layout.workers;
      const setup: WorkerSetup = {
        socketPath: spec.server.socketPath,
        devicePath: spec.devicePath,
        connections: isBackground ? 1 : layout.connectionsPerWorker,
        op: isBackground ? spec.background! : spec.op,
        workerIndex: i,
      };
      const worker = new Worker(workerFile, { workerData: setup });
      workers.push(worker);
      let markReady!: () => void;
      ready.push(new Promise<void>((resolve) => (markReady = resolve)));
      done.push(
        new Promise<void>((resolve, reject) => {
          worker.on('message', (message: FromWorker) => {
            if (message.type === 'ready') markReady();
            else if (message.type === 'done') {
              if (isBackground) backgroundResult = message;
              else results.push(message);
              resolve();
            } else reject(new Error(`client worker ${i}: ${message.message}`));
          });
          worker.once('error', reject);
          worker.once('exit', (code) => reject(new Error(`client worker ${i} exited with ${code} before reporting`)));
        }),
      );
      // A worker that fails during connect never becomes ready: surface its error instead of hanging.
      done[i].catch(() => markReady());
    }
    await Promise.all(ready);
    const go: ToWorker = { type: 'go', warmupMs: spec.warmupSeconds * 1000, durationMs: spec.seconds * 1000 };
    if (spec.onTick) tick = setInterval(spec.onTick, 100);
    cpuBefore = readCpuTimeUs(spec.server.pid);
    for (const worker of workers) worker.postMessage(go);
    await Promise.all(done);
    cpuAfter = readCpuTimeUs(spec.server.pid);
  } finally {
    if (tick) clearInterval(tick);
    await Promise.all(workers.map((worker) => worker.terminate()));
  }

  const ops = results.reduce((sum, r) => sum + r.ops, 0);
  const elapsedMs = Math.max(...results.map((r) => r.elapsedMs));
  const latencies = new Float64Array(ops);
  let at = 0;
  for (const r of results) {
    latencies.set(r.latenciesUs, at);
    at += r.latenciesUs.length;
  }
  const statuses: Record<string, number> = {};
  for (const r of results) for (const [status, n] of Object.entries(r.statuses)) statuses[statusName(Number(status))] = (statuses[statusName(Number(status))] ?? 0) + n;
  const failure = results.find((r) => r.firstFailure)?.firstFailure;
  const clients = layout.workers * layout.connectionsPerWorker;
  const id = runId(spec.server.kind, spec.op, layout, spec.background);
  const label =
    `${spec.server.kind}: ${OP_LABEL[spec.op]}, ${clients} client${clients > 1 ? 's' : ''} (${layout.workers} thread${layout.workers > 1 ? 's' : ''} x ${layout.connectionsPerWorker})` +
    (spec.background ? ` while 1 other client runs ${OP_LABEL[spec.background]}` : '');
  const served = ops + results.reduce((sum, r) => sum + r.warmupOps, 0);
  const notes: string[] = [];
  if (failure) notes.push(`first non-GOOD reply: ${failure}`);
  if (backgroundResult) {
    const bg = backgroundResult;
    notes.push(
      `background ${OP_LABEL[spec.background!]}: ${Math.round(bg.ops / (bg.elapsedMs / 1000))} ops/s, p50 ${percentiles(bg.latenciesUs).p50Us} us` +
        (bg.firstFailure ? `, ${bg.firstFailure}` : ''),
    );
  }
  return throughput({
    id,
    section: 'protocol',
    label,
    ops,
    elapsedMs,
    latency: percentiles(latencies),
    // With a background client the server's CPU is shared between two kinds of command.
    cpuUsPerOp: spec.background || cpuBefore === null || cpuAfter === null || served === 0 ? undefined : round((cpuAfter - cpuBefore) / served, 1),
    statuses,
    clientEventLoopUtilization: round(Math.max(...results.map((r) => r.eventLoopUtilization)), 2),
    note: notes.length ? notes.join('; ') : undefined,
  });
}

/** Tracks the largest VmRSS seen for a pid while a run is loaded. */
export class RssSampler {
  maxRssKb = 0;
  constructor(readonly pid: number) {}
  sample(): void {
    const status = readProcStatus(this.pid);
    if (status && status.vmRssKb > this.maxRssKb) this.maxRssKb = status.vmRssKb;
  }
}
