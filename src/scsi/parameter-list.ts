// PERSISTENT RESERVE OUT parameter lists (SPC-4: the basic list and the REGISTER AND MOVE list).
// Decoders return a sense condition instead of throwing, so a device server can hand
// it straight back as CHECK CONDITION.

import { Sense, type SenseCondition } from './sense';
import { decodeTransportId, encodeTransportId, type TransportId } from './transport-id';

export const PR_OUT_BASIC_PARAMETER_LENGTH = 24;
/** The basic list plus the TRANSPORTID PARAMETER DATA LENGTH field that SPEC_I_PT adds. */
export const PR_OUT_SPEC_I_PT_HEADER_LENGTH = 28;
export const REGISTER_AND_MOVE_HEADER_LENGTH = 24;

const SPEC_I_PT = 0x08;
const ALL_TG_PT = 0x04;
const APTPL = 0x01;
const UNREG = 0x02;
const U64_MAX = (1n << 64n) - 1n;

export interface PrOutParameters {
  reservationKey: bigint;
  serviceActionKey: bigint;
  specIPT: boolean;
  allTgPt: boolean;
  aptpl: boolean;
  /** Only with specIPT. */
  transportIds: TransportId[];
}

export interface RegisterAndMoveParameters {
  reservationKey: bigint;
  serviceActionKey: bigint;
  unreg: boolean;
  aptpl: boolean;
  relativeTargetPort: number;
  transportId: TransportId;
}

export type ParameterDecodeResult<T> = { ok: true; value: T } | { ok: false; sense: SenseCondition; reason: string };

function checkKey(name: string, key: bigint): void {
  if (typeof key !== 'bigint' || key < 0n || key > U64_MAX) throw new RangeError(`${name} must be a 64-bit unsigned bigint`);
}

function fail<T>(sense: SenseCondition, reason: string): ParameterDecodeResult<T> {
  return { ok: false, sense, reason };
}

export function encodePrOutParameters(p: PrOutParameters): Buffer {
  checkKey('reservationKey', p.reservationKey);
  checkKey('serviceActionKey', p.serviceActionKey);
  if (!p.specIPT && p.transportIds.length > 0) throw new RangeError('TransportIDs are only sent with SPEC_I_PT');
  const header = Buffer.alloc(PR_OUT_BASIC_PARAMETER_LENGTH);
  header.writeBigUInt64BE(p.reservationKey, 0);
  header.writeBigUInt64BE(p.serviceActionKey, 8);
  header[20] = (p.specIPT ? SPEC_I_PT : 0) | (p.allTgPt ? ALL_TG_PT : 0) | (p.aptpl ? APTPL : 0);
  if (!p.specIPT) return header;
  const ids = Buffer.concat(p.transportIds.map(encodeTransportId));
  const length = Buffer.alloc(4);
  length.writeUInt32BE(ids.length, 0);
  return Buffer.concat([header, length, ids]);
}

/**
 * Decodes the basic PR OUT parameter list. Length rules (SPC-4 'Basic PERSISTENT RESERVE OUT parameter list'):
 * - fewer than 24 bytes: PARAMETER LIST LENGTH ERROR;
 * - SPEC_I_PT=0: "the parameter list shall be 24 bytes in length", otherwise
 *   PARAMETER LIST LENGTH ERROR;
 * - SPEC_I_PT=1: at least 28 bytes, and 28 + TRANSPORTID PARAMETER DATA LENGTH must equal
 *   the list length, otherwise PARAMETER LIST LENGTH ERROR. (LIO answers a mismatch with
 *   INVALID FIELD IN PARAMETER LIST, SCST with PARAMETER LIST LENGTH ERROR; the mismatch
 *   is a length error, so this follows SCST.)
 * A TransportID that is malformed, or that overruns the TransportID data, is INVALID
 * FIELD IN PARAMETER LIST (as qemu-pr-helper and LIO answer).
 * Whether SPEC_I_PT is allowed for the service action is the device server's business.
 */
export function decodePrOutParameters(data: Uint8Array): ParameterDecodeResult<PrOutParameters> {
  if (data.length < PR_OUT_BASIC_PARAMETER_LENGTH) {
    return fail(Sense.PARAMETER_LIST_LENGTH_ERROR, `parameter list is ${data.length} bytes, less than 24`);
  }
  const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
  const flags = buf[20];
  const value: PrOutParameters = {
    reservationKey: buf.readBigUInt64BE(0),
    serviceActionKey: buf.readBigUInt64BE(8),
    specIPT: (flags & SPEC_I_PT) !== 0,
    allTgPt: (flags & ALL_TG_PT) !== 0,
    aptpl: (flags & APTPL) !== 0,
    transportIds: [],
  };
  if (!value.specIPT) {
    if (data.length !== PR_OUT_BASIC_PARAMETER_LENGTH) {
      return fail(Sense.PARAMETER_LIST_LENGTH_ERROR, `parameter list is ${data.length} bytes; SPEC_I_PT=0 requires exactly 24`);
    }
    return { ok: true, value };
  }
  if (data.length < PR_OUT_SPEC_I_PT_HEADER_LENGTH) {
    return fail(Sense.PARAMETER_LIST_LENGTH_ERROR, `parameter list is ${data.length} bytes; SPEC_I_PT=1 requires at least 28`);
  }
  const idsLength = buf.readUInt32BE(24);
  if (PR_OUT_SPEC_I_PT_HEADER_LENGTH + idsLength !== data.length) {
    return fail(Sense.PARAMETER_LIST_LENGTH_ERROR, `TransportID parameter data length ${idsLength} + 28 does not match the ${data.length}-byte list`);
  }
  const ids = buf.subarray(PR_OUT_SPEC_I_PT_HEADER_LENGTH);
  for (let offset = 0; offset < ids.length; ) {
    const decoded = decodeTransportId(ids, offset);
    if (!decoded.ok) return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST, `TransportID at byte ${28 + offset}: ${decoded.reason}`);
    value.transportIds.push(decoded.id);
    offset += decoded.length;
  }
  return { ok: true, value };
}

export function encodeRegisterAndMoveParameters(p: RegisterAndMoveParameters): Buffer {
  checkKey('reservationKey', p.reservationKey);
  checkKey('serviceActionKey', p.serviceActionKey);
  if (!Number.isInteger(p.relativeTargetPort) || p.relativeTargetPort < 0 || p.relativeTargetPort > 0xffff) {
    throw new RangeError('relativeTargetPort must be 0..65535');
  }
  const id = encodeTransportId(p.transportId);
  const header = Buffer.alloc(REGISTER_AND_MOVE_HEADER_LENGTH);
  header.writeBigUInt64BE(p.reservationKey, 0);
  header.writeBigUInt64BE(p.serviceActionKey, 8);
  header[17] = (p.unreg ? UNREG : 0) | (p.aptpl ? APTPL : 0);
  header.writeUInt16BE(p.relativeTargetPort, 18);
  header.writeUInt32BE(id.length, 20);
  return Buffer.concat([header, id]);
}

/**
 * Decodes the REGISTER AND MOVE parameter list. Fewer than 24 bytes, or 24 +
 * TRANSPORTID PARAMETER DATA LENGTH not equal to the list length, is PARAMETER LIST
 * LENGTH ERROR (LIO: INVALID FIELD IN PARAMETER LIST for the mismatch). The list carries
 * exactly one TransportID (SPC-4 'PERSISTENT RESERVE OUT specifying REGISTER AND MOVE'); a malformed one, none, or bytes left over
 * after it are INVALID FIELD IN PARAMETER LIST.
 */
export function decodeRegisterAndMoveParameters(data: Uint8Array): ParameterDecodeResult<RegisterAndMoveParameters> {
  if (data.length < REGISTER_AND_MOVE_HEADER_LENGTH) {
    return fail(Sense.PARAMETER_LIST_LENGTH_ERROR, `parameter list is ${data.length} bytes, less than 24`);
  }
  const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
  const idLength = buf.readUInt32BE(20);
  if (REGISTER_AND_MOVE_HEADER_LENGTH + idLength !== data.length) {
    return fail(Sense.PARAMETER_LIST_LENGTH_ERROR, `TransportID parameter data length ${idLength} + 24 does not match the ${data.length}-byte list`);
  }
  const id = buf.subarray(REGISTER_AND_MOVE_HEADER_LENGTH);
  const decoded = decodeTransportId(id, 0);
  if (!decoded.ok) return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST, `TransportID: ${decoded.reason}`);
  if (decoded.length !== id.length) {
    return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST, `TransportID is ${decoded.length} bytes but the parameter data length says ${id.length}`);
  }
  return {
    ok: true,
    value: {
      reservationKey: buf.readBigUInt64BE(0),
      serviceActionKey: buf.readBigUInt64BE(8),
      unreg: (buf[17] & UNREG) !== 0,
      aptpl: (buf[17] & APTPL) !== 0,
      relativeTargetPort: buf.readUInt16BE(18),
      transportId: decoded.id,
    },
  };
}
