// The one hook through which views (D-Bus, the multipathd key record) learn about
// commands: every command's outcome, for every backend, after it ran and before its
// reply is sent. Observers are views: whatever they do, the command's result is returned
// unchanged and at once.

import type { DeviceHandle } from '../backends/backend';
import type { PrHelperExecute } from '../protocol/server';
import type { PrCommand } from '../scsi/pr-command';
import type { ScsiResult } from '../scsi/sense';

export interface ObservedCommand {
  /**
   * The device. Its fd is open only while the observer runs synchronously: an observer
   * that needs the device later reopens it by path or works from rdev.
   */
  readonly handle: DeviceHandle;
  readonly command: PrCommand;
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
    if (observers.size > 0) observers.notify({ handle: request.handle, command: request.command, result });
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
 * What a PR OUT did to keys and the reservation, from the decoded command; undefined for
 * PR IN and for a parameter list that did not decode (such a command did not end GOOD anyway).
 */
export function decodePrOut(command: PrCommand): DecodedPrOut | undefined {
  if (command.direction !== 'out' || !command.parameters.ok) return undefined;
  const p = command.parameters.value;
  return { action: command.code, type: command.type, reservationKey: p.reservationKey, serviceActionKey: p.serviceActionKey, aptpl: p.aptpl };
}
