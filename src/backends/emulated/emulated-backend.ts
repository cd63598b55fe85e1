// The emulated backend: the SPC-4 engine behind a simulated multipath host, with the
// whole SAN's state in one SQLite file. This is the embedded default, and what lets
// failover and fencing be tested without a SAN.

import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { Status } from '../../scsi/constants';
import { checkCondition, Sense, type ScsiResult } from '../../scsi/sense';
import { parseTransportId, transportIdKey, type TransportId } from '../../scsi/transport-id';
import type { EngineOptions } from '../../engine';
import { parseState, serializeState, type PrState } from '../../engine/state';
import { CommandRunner } from './command-runner';
import { StoreWriter } from './store-writer';
import type { DeviceHandle, ExecuteOptions, PrBackend } from '../backend';
import type { PrCommand } from '../../scsi/pr-command';
import { EmulatedStore, type HostPath, type PathState } from './store';
import { reinstatePathRegistration, type KnownKey, type SimulatedHost } from './multipath-host';

export interface EmulatedBackendOptions {
  /** The SQLite state file shared by every simulated host of this SAN, or ':memory:'. */
  readonly statePath: string;
  /** This host's initiator name (an iSCSI name; a bare word gets an iqn prefix). */
  readonly initiator?: string;
  /** How many paths (I_T nexuses) this host has to every LU. */
  readonly paths?: number;
  /** Establish SPC-4 unit attentions for other nexuses (LIO does). */
  readonly unitAttentions?: boolean;
  readonly maxRegistrations?: number;
  /** false trades durability for speed (benchmarks only). */
  readonly durable?: boolean;
  /**
   * Run commands on a writer thread with group commit, so fsync never blocks the caller's
   * event loop (the daemon turns this on). Ignored for ':memory:', which one thread owns.
   */
  readonly writerThread?: boolean;
  /** Told about store failures, which the guest sees only as LUN COMMUNICATION FAILURE. */
  readonly logger?: { error(object: object, message: string): void };
}

/** A change the backend made, for logs and D-Bus. */
export interface EmulatedChange {
  readonly lu: string;
  readonly state: PrState;
  readonly pathsUsed: readonly number[];
}

export const DEFAULT_INITIATOR_PREFIX = 'iqn.2026-11.org.mpath-pr:';

/** Turns `--initiator NAME` into an iSCSI TransportID; bare names get our iqn prefix. */
export function initiatorTransportId(name: string): TransportId {
  const full = /^(iqn\.|eui\.|naa\.)/i.test(name) ? name : `${DEFAULT_INITIATOR_PREFIX}${name}`;
  const id = parseTransportId(full);
  if (id.protocol !== 'iscsi') throw new Error(`initiator ${name} is not an iSCSI name`);
  return id;
}

export function defaultInitiatorName(): string {
  return os.hostname().toLowerCase().replace(/[^a-z0-9.-]/g, '-') || 'localhost';
}

export class EmulatedBackend implements PrBackend {
  readonly name = 'emulated' as const;
  readonly store: EmulatedStore;
  readonly initiator: TransportId;
  /** The store's key for this host's rows. */
  readonly initiatorKey: string;
  private readonly runner: CommandRunner;
  private readonly writer?: StoreWriter;
  private readonly logger?: EmulatedBackendOptions['logger'];
  private readonly listeners = new Set<(change: EmulatedChange) => void>();
  private closed = false;
  /** Commands inside execute(); close() waits for the last one to leave. */
  private running = 0;
  /** Set while close() waits for running commands. */
  private wakeClose: (() => void) | undefined;

  constructor(options: EmulatedBackendOptions) {
    this.store = new EmulatedStore(options.statePath, { durable: options.durable });
    this.initiator = initiatorTransportId(options.initiator ?? defaultInitiatorName());
    this.initiatorKey = transportIdKey(this.initiator);
    const runnerOptions = { initiator: this.initiator, unitAttentions: options.unitAttentions ?? true, maxRegistrations: options.maxRegistrations };
    this.runner = new CommandRunner(this.store, runnerOptions);
    this.logger = options.logger;
    const paths = options.paths ?? 2;
    if (!Number.isInteger(paths) || paths < 1 || paths > 64) throw new RangeError(`paths must be 1..64, got ${paths}`);
    this.store.immediate(() => this.store.ensureHostPaths(this.initiatorKey, paths));
    if (options.writerThread && options.statePath !== ':memory:') {
      this.writer = new StoreWriter({ statePath: options.statePath, durable: options.durable !== false, ...runnerOptions });
    }
  }

  /** Resolves once the writer thread (if any) has opened the state file; rejects if it cannot. */
  async ready(): Promise<void> {
    await this.writer?.ready;
  }

  onChange(listener: (change: EmulatedChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async execute(device: DeviceHandle, command: PrCommand, options: ExecuteOptions = {}): Promise<ScsiResult> {
    if (this.closed) return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    this.running++;
    try {
      const lu = device.path;
      const delayMs = this.store.luDelayMs(lu);
      if (delayMs > 0) await sleep(delayMs, undefined, { signal: options.signal }).catch(() => undefined);
      if (options.signal?.aborted) return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
      const request = { lu, command };
      const outcome = this.writer ? await this.writer.run(request) : this.runner.run(request);
      if (outcome.state !== undefined && command.direction === 'out' && outcome.result.status === Status.GOOD) {
        this.emit({ lu, state: parseState(outcome.state), pathsUsed: outcome.pathsUsed });
      }
      return outcome.result;
    } catch (err) {
      // SQLITE_BUSY past the busy timeout, a corrupt state file, a full disk: nothing was
      // committed, and the guest sees what a broken path to the array looks like.
      this.logger?.error({ err, device: device.path, state: this.store.path }, 'emulated store failed; answering LUN COMMUNICATION FAILURE');
      return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    } finally {
      this.commandEnded();
    }
  }

  engineOptions(): EngineOptions {
    return this.runner.engineOptions();
  }

  /** The current PR state of an LU, read without changing anything. */
  readState(lu: string): PrState {
    return this.runner.loadState(lu);
  }

  listDevices(): string[] {
    return this.store.listLogicalUnits();
  }

  paths(initiatorKey = this.initiatorKey): HostPath[] {
    return this.store.hostPaths(initiatorKey);
  }

  /**
   * Changes whenever the state file changed under this backend's reading connection: a
   * command of this daemon (on its writer thread), another process sharing the SAN file
   * (another host, `mpath-pr emu path`). Compare two readings to know whether to re-read.
   */
  dataVersion(): number {
    return this.store.dataVersion();
  }

  /** The state file this backend keeps the SAN in. */
  get statePath(): string {
    return this.store.path;
  }

  /** The key this host last registered on an LU (what multipathd would know), if any. */
  knownKey(lu: string): KnownKey | undefined {
    return this.store.hostKey(this.initiatorKey, lu);
  }

  /**
   * Re-registers this host's known key on active paths of one LU that lost it, in one
   * transaction, as multipathd does for a reinstated path. Returns the repaired path
   * indexes. A host whose key is registered through no path was fenced and is left alone.
   */
  repairPaths(lu: string): number[] {
    const store = this.store;
    return store.immediate(() => {
      const text = store.readLuState(lu);
      if (text === undefined) return [];
      const host: SimulatedHost = { initiator: this.initiator, paths: store.hostPaths(this.initiatorKey) };
      const known = store.hostKey(this.initiatorKey, lu);
      const options = this.engineOptions();
      let state = parseState(text);
      const repaired: number[] = [];
      for (const path of host.paths) {
        if (path.state !== 'active') continue;
        const result = reinstatePathRegistration(state, host, path.index, known, options);
        if (result.changed) {
          state = result.state;
          repaired.push(path.index);
        }
      }
      if (repaired.length > 0) store.writeLuState(lu, serializeState(state));
      return repaired;
    });
  }

  /** Fails or reinstates one of this host's paths; a reinstate re-registers known keys. */
  setPathState(pathIndex: number, state: PathState): { changedLus: string[] } {
    return setHostPathState(this.store, this.initiator, pathIndex, state, this.engineOptions());
  }

  private emit(change: EmulatedChange): void {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch {
        // A broken observer (a D-Bus view, a log line) must never fail a command.
      }
    }
  }

  /** A command of execute() has ended; the last one to end is the event close() waits for. */
  private commandEnded(): void {
    this.running--;
    if (this.running === 0) this.wakeClose?.();
  }

  /**
   * Refuses new commands, lets the running ones finish, then stops the writer thread
   * (resolving once it has exited) and closes the state file.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.running > 0) await new Promise<void>((resolve) => (this.wakeClose = resolve));
    await this.writer?.close();
    this.store.close();
  }
}

/**
 * Path fault injection for any host of the SAN, usable from another process than the
 * daemon (the CLI's `emu path`). Reinstating a path does what multipathd does with a
 * reservation key configured: re-register the host's key on it, in the same transaction.
 */
export function setHostPathState(
  store: EmulatedStore,
  initiator: TransportId,
  pathIndex: number,
  state: PathState,
  options: EngineOptions,
): { changedLus: string[] } {
  const initiatorKey = transportIdKey(initiator);
  return store.immediate(() => {
    if (!store.setPathState(initiatorKey, pathIndex, state)) {
      const count = store.hostPaths(initiatorKey).length;
      throw new RangeError(
        count === 0 ? `no host ${initiatorKey} in ${store.path}` : `host ${initiatorKey} has paths 0..${count - 1}, not ${pathIndex}`,
      );
    }
    const changedLus: string[] = [];
    if (state !== 'active') return { changedLus };
    const host: SimulatedHost = { initiator, paths: store.hostPaths(initiatorKey) };
    for (const lu of store.listLogicalUnits()) {
      const text = store.readLuState(lu);
      if (text === undefined) continue;
      const result = reinstatePathRegistration(parseState(text), host, pathIndex, store.hostKey(initiatorKey, lu), options);
      if (result.changed) {
        store.writeLuState(lu, serializeState(result.state));
        changedLus.push(lu);
      }
    }
    return { changedLus };
  });
}
