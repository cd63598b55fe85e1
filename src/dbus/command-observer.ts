// The one hook through which views (D-Bus, the multipathd key record) learn about
// commands: every command's outcome, for every backend, after it ran and before its
// reply is sent. Observers are views: whatever they do, the command's result is returned
// unchanged and at once.

import type { DeviceHandle } from '../backends/backend';
import type { PrHelperExecute } from '../protocol/server';
import { decodePrOutCdb } from '../scsi/cdb';
import { Opcode, PrOutAction } from '../scsi/constants';
import { decodePrOutParameters } from '../scsi/parameter-list';
import type { ScsiResult } from '../scsi/sense';

export interface ObservedCommand {
  /**
   * The device. Its fd is open only while the observer runs synchronously: an observer
   * that needs the device later reopens it by path or works from rdev.
   */
  readonly handle: DeviceHandle;
  readonly cdb: Uint8Array;
  readonly dataOut: Uint8Array;
  readonly result: ScsiResult;
}

/** Must be quick and synchronous; defer real work (setImmediate, promises). */
export type CommandObserver = (command: ObservedCommand) => void;

export class CommandObservers {
  private readonly observers = new Set<CommandObserver>();

  add(observer: CommandObserver): () => void {
    this.observers.add(observer);
    return () => this.observers.delete(observer);
  }

  get size(): number {
    return this.observers.size;
  }

  /** Tells every observer; a throwing observer is skipped, never propagated. */
  notify(command: ObservedCommand): void {
    for (const observer of this.observers) {
      try {
        observer(command);
      } catch {
        // A view's bug must not turn into a failed PR command.
      }
    }
  }
}

/** Wraps the server's execute so that observers see every command's outcome. */
export function observeExecute(execute: PrHelperExecute, observers: CommandObservers): PrHelperExecute {
  return async (request) => {
    const result = await execute(request);
    if (observers.size > 0) observers.notify({ handle: request.handle, cdb: request.cdb, dataOut: request.dataOut, result });
    return result;
  };
}

/** A PR OUT decoded far enough to say what it did to keys and the reservation. */
export interface DecodedPrOut {
  readonly action: number;
  readonly type: number;
  readonly reservationKey: bigint;
  readonly serviceActionKey: bigint;
  readonly aptpl: boolean;
}

/**
 * Decodes a PR OUT CDB and its parameter list; undefined for PR IN and for a malformed
 * list (such a command did not end GOOD anyway). REGISTER AND MOVE has its own list
 * layout; only its two keys are read.
 */
export function decodePrOut(cdb: Uint8Array, dataOut: Uint8Array): DecodedPrOut | undefined {
  if (cdb.length === 0 || cdb[0] !== Opcode.PERSISTENT_RESERVE_OUT) return undefined;
  const decoded = decodePrOutCdb(cdb);
  if (decoded.action === PrOutAction.REGISTER_AND_MOVE) {
    return { action: decoded.action, type: decoded.type, reservationKey: readKey(dataOut, 0), serviceActionKey: readKey(dataOut, 8), aptpl: false };
  }
  const parameters = decodePrOutParameters(dataOut);
  if (!parameters.ok) return undefined;
  return {
    action: decoded.action,
    type: decoded.type,
    reservationKey: parameters.value.reservationKey,
    serviceActionKey: parameters.value.serviceActionKey,
    aptpl: parameters.value.aptpl,
  };
}

function readKey(data: Uint8Array, offset: number): bigint {
  return data.length >= offset + 8 ? Buffer.from(data.buffer, data.byteOffset, data.byteLength).readBigUInt64BE(offset) : 0n;
}
