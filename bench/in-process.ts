// In-process throughput: the pure SPC-4 engine, then the emulated backend (engine +
// simulated multipath host + SQLite store) in three storage modes. No sockets, no fds:
// this is the ceiling for what the daemon can answer per second on one core.

import fs from 'node:fs';
import path from 'node:path';
import { execute as engineExecute, defaultEngineOptions, initialState, type Nexus, type PrState } from '../src/engine';
import { EmulatedBackend, initiatorTransportId } from '../src/backends/emulated/emulated-backend';
import { bindBackend, buildPrIn, buildPrOut, type PrExecutor } from '../src/backends/pr-commands';
import type { DeviceHandle } from '../src/backends/backend';
import { PrInAction, PrType, statusName } from '../src/scsi/constants';
import { decodePrCommand, type PrCommand } from '../src/scsi/pr-command';
import { StatusCounter, throughput, timeAsync, timeSync, type Metric } from './measure';

export interface InProcessOptions {
  readonly seconds: number;
  readonly warmupSeconds: number;
  /** Where the durable and no-fsync SQLite files go (a real disk, not tmpfs, for honest fsyncs). */
  readonly scratchDir: string;
  readonly log: (line: string) => void;
}

/** Keys cycle through this many values so REGISTER AND IGNORE always changes the state. */
const KEY_CYCLE = 64;
const HOLDER_KEY = 0xb0057n;
const RESERVATION_TYPE = PrType.WRITE_EXCLUSIVE;

/** Prebuilt commands: the bench measures executing them, not encoding them. */
const commands = (() => {
  const registerIgnore = Array.from({ length: KEY_CYCLE }, (_, i) => buildPrOut({ action: 'register-ignore', serviceActionKey: 0x1000n + BigInt(i) }));
  return {
    registerIgnore,
    registerHolder: buildPrOut({ action: 'register-ignore', serviceActionKey: HOLDER_KEY }),
    reserve: buildPrOut({ action: 'reserve', reservationKey: HOLDER_KEY, type: RESERVATION_TYPE }),
    release: buildPrOut({ action: 'release', reservationKey: HOLDER_KEY, type: RESERVATION_TYPE }),
    readKeys: buildPrIn(PrInAction.READ_KEYS),
    readReservation: buildPrIn(PrInAction.READ_RESERVATION),
  };
})();

const EMPTY = Buffer.alloc(0);

type Command = { cdb: Buffer; dataOut: Buffer };

/** The engine takes decoded commands; decoding is the boundary's cost, not the engine's, so it happens once here. */
const decodedCommands = new WeakMap<Command, PrCommand>();
function decodedOnce(command: Command): PrCommand {
  let typed = decodedCommands.get(command);
  if (!typed) {
    const outcome = decodePrCommand(command.cdb, command.dataOut);
    if (!outcome.ok) throw new Error(`bench command is ill-framed: ${outcome.reason}`);
    typed = outcome.command;
    decodedCommands.set(command, typed);
  }
  return typed;
}

/** The four workloads every in-process target runs, in this order. */
const WORKLOADS = [
  { key: 'pr-out.register-ignore', label: 'PR OUT REGISTER AND IGNORE (cycling keys)', setup: [] as Command[], pick: (i: number) => commands.registerIgnore[i % KEY_CYCLE] },
  {
    key: 'pr-out.reserve-release',
    label: 'PR OUT RESERVE/RELEASE (alternating; each counts)',
    setup: [commands.registerHolder],
    pick: (i: number) => (i % 2 === 0 ? commands.reserve : commands.release),
  },
  { key: 'pr-in.read-keys', label: 'PR IN READ KEYS', setup: [commands.registerHolder, commands.reserve], pick: () => ({ cdb: commands.readKeys, dataOut: EMPTY }) },
  {
    key: 'pr-in.read-reservation',
    label: 'PR IN READ RESERVATION',
    setup: [commands.registerHolder, commands.reserve],
    pick: () => ({ cdb: commands.readReservation, dataOut: EMPTY }),
  },
] as const;

/** The pure engine with one nexus: the cost of the SPC-4 rules and PrState copying alone. */
export function benchEngine(options: InProcessOptions): Metric[] {
  const nexus: Nexus = { initiator: initiatorTransportId('bench'), targetPort: 1 };
  const engineOptions = { ...defaultEngineOptions([1, 2]), unitAttentions: true };
  const metrics: Metric[] = [];
  for (const workload of WORKLOADS) {
    let state: PrState = initialState();
    const run = (command: Command) => engineExecute(state, nexus, decodedOnce(command), engineOptions);
    // The reservation RELEASE below releases it again; start from a clean release so the pair toggles.
    for (const command of workload.setup) state = run(command).state;
    if (workload.key === 'pr-out.reserve-release') state = run(commands.release).state;
    const statuses = new StatusCounter();
    const timed = timeSync(
      options.seconds,
      options.warmupSeconds,
      (i) => {
        const outcome = run(workload.pick(i));
        state = outcome.state;
        statuses.add(outcome.result.status);
      },
      () => statuses.reset(),
    );
    metrics.push(
      throughput({ id: `engine.${workload.key}`, section: 'engine', label: `engine: ${workload.label}`, ...timed, statuses: statuses.named(statusName) }),
    );
    options.log(`  engine ${workload.key}: ${Math.round(metrics[metrics.length - 1].value)} ops/s`);
  }
  return metrics;
}

export type StorageMode = 'durable' | 'no-fsync' | 'memory';

export const STORAGE_MODES: readonly { mode: StorageMode; label: string }[] = [
  { mode: 'durable', label: 'SQLite file, WAL, synchronous=FULL (default)' },
  { mode: 'no-fsync', label: 'SQLite file, WAL, synchronous=OFF (durable: false)' },
  { mode: 'memory', label: "SQLite ':memory:'" },
];

/** The emulated backend as the daemon runs it (2 paths, unit attentions on), per storage mode. */
export async function benchBackend(mode: StorageMode, options: InProcessOptions): Promise<Metric[]> {
  const statePath = mode === 'memory' ? ':memory:' : path.join(options.scratchDir, `in-process-${mode}.db`);
  const metrics: Metric[] = [];
  for (const workload of WORKLOADS) {
    // A fresh SAN per workload, so one workload's leftovers do not change the next one's cost.
    if (statePath !== ':memory:') for (const suffix of ['', '-wal', '-shm']) fs.rmSync(statePath + suffix, { force: true });
    const backend = new EmulatedBackend({ statePath, initiator: 'bench', paths: 2, durable: mode !== 'no-fsync' });
    try {
      const device: DeviceHandle = { fd: -1, path: '/bench/lu-0', writable: true };
      const run: PrExecutor = bindBackend(backend, device);
      for (const command of workload.setup) await run(command.cdb, command.dataOut);
      if (workload.key === 'pr-out.reserve-release') await run(commands.release.cdb, commands.release.dataOut);
      const statuses = new StatusCounter();
      const timed = await timeAsync(
        options.seconds,
        options.warmupSeconds,
        async (i) => {
          const command = workload.pick(i);
          statuses.add((await run(command.cdb, command.dataOut)).status);
        },
        () => statuses.reset(),
      );
      metrics.push(
        throughput({
          id: `backend.${mode}.${workload.key}`,
          section: `emulated backend, ${mode}`,
          label: `backend ${mode}: ${workload.label}`,
          ...timed,
          statuses: statuses.named(statusName),
        }),
      );
      options.log(`  backend ${mode} ${workload.key}: ${Math.round(metrics[metrics.length - 1].value)} ops/s`);
    } finally {
      await backend.close();
    }
  }
  return metrics;
}
