// One guest command, decoded once. The boundary (protocol server, CLI, D-Bus) turns the
// CDB and the parameter list into a PrCommand here; the guards, the backends, the logger
// and the D-Bus view all read its fields and never parse the bytes again.
//
// Decoding answers only what is wrong with the command's framing: an opcode that is not
// PERSISTENT RESERVE IN/OUT, a short CDB, data-out on PR IN, or a parameter list shorter
// than the CDB announces. What the device server decides (a reserved
// service action, a bad TYPE or SCOPE, the contents of the parameter list) is carried in
// the command for the device server to answer in its own order: the emulated engine
// reports a pending unit attention first (SAM-5), and a pass-through backend lets the real
// device answer. The original bytes travel with the command for the backends that send
// them unchanged (SG_IO).

import { prInActionByCode, prOutActionByCode, type PrInActionName, type PrOutActionName } from './actions';
import { decodePrInCdb, decodePrOutCdb, PR_CDB_LENGTH } from './cdb';
import { Opcode, PrOutAction } from './constants';
import {
  decodePrOutParameters,
  decodeRegisterAndMoveParameters,
  type ParameterDecodeResult,
  type PrOutParameters,
  type RegisterAndMoveParameters,
} from './parameter-list';
import { checkCondition, Sense, type ScsiResult } from './sense';

/** SPEC_I_PT, byte 20 bit 3 of the basic parameter list (SPC-4 'Basic PERSISTENT RESERVE OUT parameter list'). */
const SPEC_I_PT_BIT = 0x08;
const SPEC_I_PT_BYTE = 20;

export interface PrInCommand {
  readonly direction: 'in';
  /** SERVICE ACTION code as sent. */
  readonly code: number;
  /** Undefined for a reserved service action; the device server answers INVALID FIELD IN CDB. */
  readonly action: PrInActionName | undefined;
  readonly allocationLength: number;
  /** The 10-byte CDB as received. */
  readonly cdb: Uint8Array;
}

interface PrOutFields {
  readonly direction: 'out';
  readonly code: number;
  /** SCOPE, CDB byte 2 bits 7..4. */
  readonly scope: number;
  /** TYPE, CDB byte 2 bits 3..0. */
  readonly type: number;
  /** The 10-byte CDB as received. */
  readonly cdb: Uint8Array;
  /** Exactly PARAMETER LIST LENGTH bytes. */
  readonly parameterList: Uint8Array;
  /** The SPEC_I_PT bit of the basic list (false when the list is too short to have it, or for REGISTER AND MOVE). */
  readonly specIPT: boolean;
}

export type PrOutCommand =
  | (PrOutFields & { readonly action: 'register-move'; readonly parameters: ParameterDecodeResult<RegisterAndMoveParameters> })
  | (PrOutFields & {
      /** Undefined for a reserved service action. */
      readonly action: Exclude<PrOutActionName, 'register-move'> | undefined;
      readonly parameters: ParameterDecodeResult<PrOutParameters>;
    });

export type PrCommand = PrInCommand | PrOutCommand;

/** A PR OUT command with the basic parameter list: every service action but REGISTER AND MOVE. */
export type BasicPrOutCommand = Exclude<PrOutCommand, { readonly action: 'register-move' }>;

export type PrCommandDecoding = { readonly ok: true; readonly command: PrCommand } | { readonly ok: false; readonly result: ScsiResult; readonly reason: string };

function refuse(result: ScsiResult, reason: string): PrCommandDecoding {
  return { ok: false, result, reason };
}

/** Decodes a PERSISTENT RESERVE IN or OUT command. Never throws; any bytes get an answer. */
export function decodePrCommand(cdb: Uint8Array, dataOut: Uint8Array): PrCommandDecoding {
  const opcode = cdb.length > 0 ? cdb[0] : -1;
  if (opcode !== Opcode.PERSISTENT_RESERVE_IN && opcode !== Opcode.PERSISTENT_RESERVE_OUT) {
    return refuse(checkCondition(Sense.INVALID_OPCODE), `opcode ${opcode < 0 ? '(none)' : `0x${opcode.toString(16)}`} is not PERSISTENT RESERVE IN/OUT`);
  }
  if (cdb.length < PR_CDB_LENGTH) return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `CDB is ${cdb.length} bytes, less than ${PR_CDB_LENGTH}`);
  const cdb10 = cdb.subarray(0, PR_CDB_LENGTH);
  if (opcode === Opcode.PERSISTENT_RESERVE_IN) {
    // PR IN carries no data-out; a caller that sends some has confused the directions.
    if (dataOut.length !== 0) return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `PR IN with ${dataOut.length} bytes of data-out`);
    const { action, allocationLength } = decodePrInCdb(cdb10);
    return { ok: true, command: { direction: 'in', code: action, action: prInActionByCode(action)?.name, allocationLength, cdb: cdb10 } };
  }
  const fields = decodePrOutCdb(cdb10);
  // The transport delivered fewer bytes than the CDB announced: the list is short. Bytes
  // beyond the announced length are not part of the list.
  if (dataOut.length < fields.parameterListLength) {
    return refuse(
      checkCondition(Sense.PARAMETER_LIST_LENGTH_ERROR),
      `CDB announces ${fields.parameterListLength} parameter bytes, ${dataOut.length} were sent`,
    );
  }
  const list = dataOut.subarray(0, fields.parameterListLength);
  const common = { direction: 'out' as const, code: fields.action, scope: fields.scope, type: fields.type, cdb: cdb10, parameterList: list };
  if (fields.action === PrOutAction.REGISTER_AND_MOVE) {
    return { ok: true, command: { ...common, action: 'register-move', specIPT: false, parameters: decodeRegisterAndMoveParameters(list) } };
  }
  const name = prOutActionByCode(fields.action)?.name as Exclude<PrOutActionName, 'register-move'> | undefined;
  const specIPT = list.length > SPEC_I_PT_BYTE && (list[SPEC_I_PT_BYTE] & SPEC_I_PT_BIT) !== 0;
  return { ok: true, command: { ...common, action: name, specIPT, parameters: decodePrOutParameters(list) } };
}

/** The command's keys when its parameter list decoded (for logs and views): RK and SARK. */
export function commandKeys(command: PrOutCommand): { reservationKey: bigint; serviceActionKey: bigint } | undefined {
  return command.parameters.ok ? { reservationKey: command.parameters.value.reservationKey, serviceActionKey: command.parameters.value.serviceActionKey } : undefined;
}
