// PR IN through libmpathpersist: decoding the struct prin_resp a successful
// mpath_persistent_reserve_in fills, and converting it back to SCSI wire bytes the way
// qemu-pr-helper does. Pure: buffers in, values out.

import koffi from 'koffi';
import {
  memberOffset as off,
  MPATH_MAX_PARAM_LEN,
  MPATH_MX_TID_LEN,
  MPATH_PRIN,
  MPATH_PROTOCOL_ID,
  PRIN_RESPONSE_BYTES,
  PrinCapDescr,
  PrinFullDescr,
  PrinReadDescr,
  PrinResvDescr,
  PrintFullDescrList,
  RFSTAT_MAX_SAFE_DESCRIPTORS,
  RFSTAT_RESPONSE_BYTES,
  TransportId,
} from './libmpathpersist-layout';

export interface ReadKeysData {
  readonly kind: 'read-keys';
  readonly generation: number;
  readonly additionalLength: number;
  /** The keys present in the answer (at most what fit in the 8192-byte transfer). */
  readonly keys: readonly bigint[];
}

export interface ReadReservationData {
  readonly kind: 'read-reservation';
  readonly generation: number;
  readonly additionalLength: number;
  /** Absent when additional_length is 0 (no reservation). */
  readonly reservation?: { readonly key: bigint; readonly scope: number; readonly type: number };
}

export interface ReportCapabilitiesData {
  readonly kind: 'report-capabilities';
  readonly length: number;
  readonly flags: readonly [number, number];
  readonly typeMask: number;
}

export interface FullStatusTransportId {
  /** (byte0 >> 6) & 3 as the library decodes it: 0 device name, 1 port identifier. */
  readonly formatCode: number;
  readonly protocolId: number;
  /** n_port_name / sas_address (8 bytes) or the iSCSI name bytes (up to 256, NUL padded). */
  readonly name: Buffer;
}

export interface FullStatusDescriptor {
  readonly key: bigint;
  /** bit0 reservation holder, bit1 ALL_TG_PT (raw byte 12 of the SPC descriptor). */
  readonly flag: number;
  readonly scopeType: number;
  readonly relativeTargetPortId: number;
  readonly transportId: FullStatusTransportId;
}

export interface ReadFullStatusData {
  readonly kind: 'read-full-status';
  readonly generation: number;
  readonly descriptors: readonly FullStatusDescriptor[];
}

export type PrinData = ReadKeysData | ReadReservationData | ReportCapabilitiesData | ReadFullStatusData;

export type PrinDecoded = PrinData & {
  /** SCSI PR IN data-in bytes for the given allocation length, as qemu-pr-helper builds them. */
  readonly wire: Buffer;
};

export interface PrinResult {
  readonly rc: number;
  /** Present only when rc is MPATH_PR_SUCCESS and the answer could be decoded safely. */
  readonly data?: PrinDecoded;
  /** Why a successful call still has no data (e.g. READ FULL STATUS overflow). */
  readonly refused?: string;
}

export class PrinDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PrinDecodeError';
  }
}

function hostU32(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at);
}
function hostU16(buf: Buffer, at: number): number {
  return buf.readUInt16LE(at);
}

/** The wire answer is min(8192, allocation length) bytes, zero padded, like qemu-pr-helper. */
export function wireLength(allocationLength: number): number {
  if (!Number.isInteger(allocationLength) || allocationLength < 0 || allocationLength > 0xffff) {
    throw new PrinDecodeError(`allocation length ${allocationLength} is not a 16-bit CDB field`);
  }
  return Math.min(MPATH_MAX_PARAM_LEN, allocationLength);
}

/**
 * READ KEYS and READ RESERVATION share qemu's conversion: BE32 generation, BE32 additional
 * length, then MIN(additional_length + 8, size) - 8 raw bytes from key_list, then zeros.
 */
function readKeysWire(resp: Buffer, allocationLength: number): Buffer {
  const size = wireLength(allocationLength);
  const wire = Buffer.alloc(size);
  const generation = hostU32(resp, off(PrinReadDescr, 'prgeneration'));
  const additionalLength = hostU32(resp, off(PrinReadDescr, 'additional_length'));
  const header = Buffer.alloc(8);
  header.writeUInt32BE(generation, 0);
  header.writeUInt32BE(additionalLength, 4);
  header.copy(wire, 0, 0, Math.min(8, size));
  if (size > 8) {
    const listStart = off(PrinReadDescr, 'key_list');
    const count = Math.max(0, Math.min(additionalLength + 8, size) - 8);
    resp.copy(wire, 8, listStart, listStart + Math.min(count, MPATH_MAX_PARAM_LEN));
  }
  return wire;
}

export function decodeReadKeys(resp: Buffer, allocationLength: number): ReadKeysData & { wire: Buffer } {
  const generation = hostU32(resp, off(PrinReadDescr, 'prgeneration'));
  const additionalLength = hostU32(resp, off(PrinReadDescr, 'additional_length'));
  const listStart = off(PrinReadDescr, 'key_list');
  // The device may report more keys than the 8192-byte transfer carried (8184 bytes of list).
  const keyCount = Math.floor(Math.min(additionalLength, MPATH_MAX_PARAM_LEN - 8) / 8);
  const keys: bigint[] = [];
  for (let i = 0; i < keyCount; i++) keys.push(resp.readBigUInt64BE(listStart + 8 * i));
  return { kind: 'read-keys', generation, additionalLength, keys, wire: readKeysWire(resp, allocationLength) };
}

export function decodeReadReservation(resp: Buffer, allocationLength: number): ReadReservationData & { wire: Buffer } {
  const generation = hostU32(resp, off(PrinResvDescr, 'prgeneration'));
  const additionalLength = hostU32(resp, off(PrinResvDescr, 'additional_length'));
  const scopeType = resp[off(PrinResvDescr, 'scope_type')];
  const reservation =
    additionalLength === 0
      ? undefined
      : { key: resp.readBigUInt64BE(off(PrinResvDescr, 'key')), scope: scopeType >> 4, type: scopeType & 0x0f };
  return { kind: 'read-reservation', generation, additionalLength, reservation, wire: readKeysWire(resp, allocationLength) };
}

export function decodeReportCapabilities(resp: Buffer, allocationLength: number): ReportCapabilitiesData & { wire: Buffer } {
  const length = hostU16(resp, off(PrinCapDescr, 'length'));
  const flagsAt = off(PrinCapDescr, 'flags');
  const flags: [number, number] = [resp[flagsAt], resp[flagsAt + 1]];
  const typeMask = hostU16(resp, off(PrinCapDescr, 'pr_type_mask'));
  const full = Buffer.alloc(8);
  full.writeUInt16BE(length, 0);
  full[2] = flags[0];
  full[3] = flags[1];
  full.writeUInt16BE(typeMask, 4);
  const wire = Buffer.alloc(wireLength(allocationLength));
  full.copy(wire, 0, 0, Math.min(8, wire.length));
  return { kind: 'report-capabilities', length, flags, typeMask, wire };
}

const FULLDESCR_SIZE = koffi.sizeof(PrinFullDescr);

/** Rebuilds an SPC TransportID from the library's struct transportid. */
function transportIdWire(tid: FullStatusTransportId): Buffer {
  const byte0 = ((tid.formatCode & 0x3) << 6) | (tid.protocolId & 0x0f);
  if (tid.protocolId === MPATH_PROTOCOL_ID.ISCSI) {
    // The library keeps the name but not its length field; SPC wants the NUL-terminated
    // name padded to a multiple of 4, at least 20 bytes.
    let nameLength = tid.name.indexOf(0);
    if (nameLength < 0) nameLength = tid.name.length;
    const padded = Math.max(20, Math.ceil((nameLength + 1) / 4) * 4);
    const out = Buffer.alloc(4 + padded);
    out[0] = byte0;
    out.writeUInt16BE(padded, 2);
    tid.name.copy(out, 4, 0, Math.min(nameLength, padded - 1));
    return out;
  }
  const out = Buffer.alloc(24);
  out[0] = byte0;
  if (tid.protocolId === MPATH_PROTOCOL_ID.FC) tid.name.copy(out, 8, 0, 8);
  else if (tid.protocolId === MPATH_PROTOCOL_ID.SAS) tid.name.copy(out, 4, 0, 8);
  return out;
}

export function decodeReadFullStatus(
  resp: Buffer,
  allocationLength: number,
): (ReadFullStatusData & { wire: Buffer }) | { refused: string } {
  const generation = hostU32(resp, off(PrintFullDescrList, 'prgeneration'));
  const count = hostU32(resp, off(PrintFullDescrList, 'number_of_descriptor'));
  if (count > RFSTAT_MAX_SAFE_DESCRIPTORS) {
    return {
      refused:
        `READ FULL STATUS returned ${count} descriptors; libmpathpersist can only unpack ` +
        `${RFSTAT_MAX_SAFE_DESCRIPTORS} without overwriting its own buffer`,
    };
  }
  const base = off(PrintFullDescrList, 'private_buffer');
  const tidAt = off(PrinFullDescr, 'trnptid');
  const nameAt = tidAt + off(TransportId, 'name');
  const descriptors: FullStatusDescriptor[] = [];
  for (let i = 0; i < count; i++) {
    const at = base + FULLDESCR_SIZE * i;
    const protocolId = resp[at + tidAt + off(TransportId, 'protocol_id')];
    const nameBytes = protocolId === MPATH_PROTOCOL_ID.ISCSI ? MPATH_MX_TID_LEN : 8;
    descriptors.push({
      key: resp.readBigUInt64BE(at + off(PrinFullDescr, 'key')),
      flag: resp[at + off(PrinFullDescr, 'flag')],
      scopeType: resp[at + off(PrinFullDescr, 'scope_type')],
      relativeTargetPortId: hostU16(resp, at + off(PrinFullDescr, 'rtpi')),
      transportId: {
        formatCode: resp[at + tidAt + off(TransportId, 'format_code')],
        protocolId,
        name: Buffer.from(resp.subarray(at + nameAt, at + nameAt + nameBytes)),
      },
    });
  }
  const bodies = descriptors.map((d) => {
    const tid = transportIdWire(d.transportId);
    const head = Buffer.alloc(24);
    head.writeBigUInt64BE(d.key, 0);
    head[12] = d.flag;
    head[13] = d.scopeType;
    head.writeUInt16BE(d.relativeTargetPortId, 18);
    head.writeUInt32BE(tid.length, 20);
    return Buffer.concat([head, tid]);
  });
  const body = Buffer.concat(bodies);
  const full = Buffer.alloc(8 + body.length);
  full.writeUInt32BE(generation, 0);
  full.writeUInt32BE(body.length, 4);
  body.copy(full, 8);
  const wire = Buffer.alloc(wireLength(allocationLength));
  full.copy(wire, 0, 0, Math.min(full.length, wire.length));
  return { kind: 'read-full-status', generation, descriptors, wire };
}

/** Decodes a struct prin_resp filled by a successful mpath_persistent_reserve_in. */
export function decodePrinResponse(serviceAction: number, resp: Buffer, allocationLength: number): PrinDecoded | { refused: string } {
  switch (serviceAction) {
    case MPATH_PRIN.READ_KEYS:
      return decodeReadKeys(resp, allocationLength);
    case MPATH_PRIN.READ_RESERVATION:
      return decodeReadReservation(resp, allocationLength);
    case MPATH_PRIN.REPORT_CAPABILITIES:
      return decodeReportCapabilities(resp, allocationLength);
    case MPATH_PRIN.READ_FULL_STATUS:
      return decodeReadFullStatus(resp, allocationLength);
    default:
      throw new PrinDecodeError(`PR IN service action ${serviceAction} is not one libmpathpersist knows`);
  }
}

export function prinResponseBytes(serviceAction: number): number {
  return serviceAction === MPATH_PRIN.READ_FULL_STATUS ? RFSTAT_RESPONSE_BYTES : PRIN_RESPONSE_BYTES;
}
