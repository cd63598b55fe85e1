// Tests that speak in CDB and parameter-list bytes reach the typed interfaces through the
// same decoder and admission stage production uses, so the bytes are checked exactly once.

import { execute, type EngineOptions, type ExecuteOutcome, type Nexus, type PrState } from '../../src/engine';
import type { DeviceHandle, ExecuteOptions, PrBackend } from '../../src/backends/backend';
import { bindBackend } from '../../src/backends/pr-commands';
import { decodePrCommand, type PrCommand } from '../../src/scsi/pr-command';
import type { ScsiResult } from '../../src/scsi/sense';

const EMPTY = new Uint8Array(0);

/** The decoded command; throws when the bytes are not a well-framed PR command. */
export function decoded(cdb: Uint8Array, dataOut: Uint8Array = EMPTY): PrCommand {
  const outcome = decodePrCommand(cdb, dataOut);
  if (!outcome.ok) throw new Error(`test built an ill-framed command: ${outcome.reason}`);
  return outcome.command;
}

/** The engine behind the decoder: ill-framed bytes get the decoder's answer and leave the state alone. */
export function executeBytes(state: PrState, nexus: Nexus, cdb: Uint8Array, dataOut: Uint8Array, options: EngineOptions): ExecuteOutcome {
  const outcome = decodePrCommand(cdb, dataOut);
  if (!outcome.ok) return { state, result: outcome.result, changed: false };
  return execute(state, nexus, outcome.command, options);
}

/** A backend behind the admission stage, as the protocol server drives it. */
export function runBytes(backend: PrBackend, device: DeviceHandle, cdb: Uint8Array, dataOut: Uint8Array = EMPTY, options?: ExecuteOptions): Promise<ScsiResult> {
  return bindBackend(backend, device, options)(Buffer.from(cdb), Buffer.from(dataOut));
}
