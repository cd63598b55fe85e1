// One client thread of the protocol benchmark: opens the LU file, holds `connections`
// PrHelperClient connections, and on "go" runs the same command back to back on each
// connection (each connection strictly one command at a time, as QEMU does) until the
// deadline. Runs in a worker_thread so that the main thread only coordinates and samples
// the servers' memory, and so 16 clients can be spread over several event loops.

import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { PrHelperClient } from '../src/protocol/client';
import { buildPrIn, buildPrOut } from '../src/backends/pr-commands';
import { PrInAction } from '../src/scsi/constants';
import { describeSense } from '../src/scsi/sense';

export type ProtocolOp = 'pr-in' | 'pr-out';

export interface WorkerSetup {
  readonly socketPath: string;
  readonly devicePath: string;
  readonly connections: number;
  readonly op: ProtocolOp;
  /** Distinguishes this worker's keys from the others' (PR OUT). */
  readonly workerIndex: number;
}

export type ToWorker = { type: 'go'; warmupMs: number; durationMs: number } | { type: 'stop' };

export interface WorkerResult {
  /** Commands completed during the warm-up, so server CPU time can be divided by everything it served. */
  readonly warmupOps: number;
  readonly ops: number;
  readonly elapsedMs: number;
  /** Per-command latencies of the measured window, microseconds. */
  readonly latenciesUs: Float64Array;
  readonly statuses: Record<number, number>;
  /** How busy this client thread's event loop was during the measured window (0..1). */
  readonly eventLoopUtilization: number;
  /** The first non-GOOD answer, described, so an unexpected failure shows in the output. */
  readonly firstFailure?: string;
}

export type FromWorker =
  | { type: 'ready' }
  | ({ type: 'done' } & WorkerResult)
  | { type: 'error'; message: string };

const KEY_CYCLE = 64;

function commandsFor(setup: WorkerSetup): { cdb: Buffer; dataOut: Buffer }[] {
  if (setup.op === 'pr-in') return [{ cdb: buildPrIn(PrInAction.READ_KEYS), dataOut: Buffer.alloc(0) }];
  return Array.from({ length: KEY_CYCLE }, (_, i) =>
    buildPrOut({ action: 'register-ignore', serviceActionKey: (BigInt(setup.workerIndex + 1) << 32n) + BigInt(i + 1) }),
  );
}

async function main(): Promise<void> {
  const setup = workerData as WorkerSetup;
  const port = parentPort!;
  const fd = fs.openSync(setup.devicePath, 'r+');
  const clients: PrHelperClient[] = [];
  for (let i = 0; i < setup.connections; i++) {
    const client = new PrHelperClient();
    await client.connect(setup.socketPath);
    clients.push(client);
  }
  const commands = commandsFor(setup);
  port.postMessage({ type: 'ready' } satisfies FromWorker);

  const go = await new Promise<ToWorker>((resolve) => port.once('message', resolve));
  if (go.type !== 'go') return shutdown();

  let measuring = false;
  let warmupOps = 0;
  let ops = 0;
  let latencies = new Float64Array(1 << 16);
  const statuses: Record<number, number> = {};
  let firstFailure: string | undefined;

  const loop = async (client: PrHelperClient, offset: number, deadline: number) => {
    for (let i = offset; performance.now() < deadline; i++) {
      const command = commands[i % commands.length];
      const t0 = performance.now();
      const reply = await client.execute(fd, command.cdb, command.dataOut);
      if (!measuring) {
        warmupOps++;
        continue;
      }
      const us = (performance.now() - t0) * 1000;
      if (ops === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[ops++] = us;
      statuses[reply.status] = (statuses[reply.status] ?? 0) + 1;
      if (reply.status !== 0 && firstFailure === undefined) {
        firstFailure = `status 0x${reply.status.toString(16)}${reply.sense.length ? `, sense ${describeSense(reply.sense)}` : ''}`;
      }
    }
  };

  const warmEnd = performance.now() + go.warmupMs;
  await Promise.all(clients.map((client, i) => loop(client, i * 7, warmEnd)));
  measuring = true;
  const elu = performance.eventLoopUtilization();
  const start = performance.now();
  await Promise.all(clients.map((client, i) => loop(client, i * 7, start + go.durationMs)));
  const elapsedMs = performance.now() - start;
  const eventLoopUtilization = performance.eventLoopUtilization(elu).utilization;
  const result: FromWorker = { type: 'done', warmupOps, ops, elapsedMs, latenciesUs: latencies.slice(0, ops), statuses, eventLoopUtilization, firstFailure };
  port.postMessage(result);
  shutdown();

  function shutdown(): void {
    for (const client of clients) client.close();
    fs.closeSync(fd);
  }
}

main().catch((error: unknown) => {
  parentPort!.postMessage({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies FromWorker);
});
