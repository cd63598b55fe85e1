// Runs emulated-host commands against the store: one command per transaction, or a
// batch in one transaction with a SAVEPOINT per command (group commit: one fsync for
// every command that arrived while the previous batch was being written). The same code
// runs on the daemon's thread or in the store's worker thread.

import { defaultEngineOptions, type EngineOptions } from '../../engine';
import { initialState, parseState, serializeState, type PrState } from '../../engine/state';
import type { PrCommand } from '../../scsi/pr-command';
import type { ScsiResult } from '../../scsi/sense';
import { transportIdKey, type TransportId } from '../../scsi/transport-id';
import { runHostCommand } from './multipath-host';
import type { EmulatedStore } from './store';

export interface CommandRunnerOptions {
  readonly initiator: TransportId;
  readonly unitAttentions: boolean;
  readonly maxRegistrations?: number;
}

export interface CommandRequest {
  readonly lu: string;
  readonly command: PrCommand;
}

export interface CommandReply {
  readonly result: ScsiResult;
  readonly changed: boolean;
  /** The LU's new state, serialized, when the command changed it. */
  readonly state?: string;
  readonly pathsUsed: readonly number[];
}

export class CommandRunner {
  readonly initiatorKey: string;

  constructor(
    readonly store: EmulatedStore,
    private readonly options: CommandRunnerOptions,
  ) {
    this.initiatorKey = transportIdKey(options.initiator);
  }

  engineOptions(): EngineOptions {
    const targetPorts = Array.from({ length: this.store.targetPortCount() }, (_, i) => i + 1);
    const defaults = defaultEngineOptions(targetPorts);
    return {
      ...defaults,
      unitAttentions: this.options.unitAttentions,
      maxRegistrations: this.options.maxRegistrations ?? defaults.maxRegistrations,
    };
  }

  loadState(lu: string): PrState {
    const text = this.store.readLuState(lu);
    return text === undefined ? initialState() : parseState(text);
  }

  /** One command in its own BEGIN IMMEDIATE transaction. */
  run(request: CommandRequest): CommandReply {
    return this.store.immediate(() => this.runInTransaction(request));
  }

  /**
   * Several commands, in order, in one transaction: each in a SAVEPOINT, so a command that
   * throws (a corrupt row) is undone alone and reported as an Error. Nothing is visible
   * or durable until the whole batch commits, and the caller replies only after that.
   */
  runBatch(requests: readonly CommandRequest[]): (CommandReply | Error)[] {
    return this.store.immediate(() =>
      requests.map((request) => {
        try {
          return this.store.savepoint(() => this.runInTransaction(request));
        } catch (error) {
          return error instanceof Error ? error : new Error(String(error));
        }
      }),
    );
  }

  private runInTransaction({ lu, command }: CommandRequest): CommandReply {
    const host = { initiator: this.options.initiator, paths: this.store.hostPaths(this.initiatorKey) };
    const known = this.store.hostKey(this.initiatorKey, lu);
    const outcome = runHostCommand(this.loadState(lu), host, known, command, this.engineOptions());
    let state: string | undefined;
    if (outcome.changed) {
      state = serializeState(outcome.state);
      this.store.writeLuState(lu, state);
    }
    if (outcome.knownKey === null) this.store.clearHostKey(this.initiatorKey, lu);
    else if (outcome.knownKey) this.store.setHostKey(this.initiatorKey, lu, outcome.knownKey.key, outcome.knownKey.aptpl);
    return { result: outcome.result, changed: outcome.changed, state, pathsUsed: outcome.pathsUsed };
  }
}
