// PERSISTENT RESERVE IN parameter data (SPC-4: READ KEYS, READ RESERVATION, REPORT
// CAPABILITIES, READ FULL STATUS).
// Every encoder builds the whole response and then cuts it to the allocation length;
// the header keeps reporting the full length (SPC-4: the ADDITIONAL LENGTH is not
// altered by the allocation length), which is how initiators learn to ask again with
// a bigger buffer. Decoders accept truncated data, decode the items that are wholly
// present, and say so.

import { PrType } from './constants';
import { decodeTransportId, encodeTransportId, type TransportId } from './transport-id';

export type InDataDecodeResult<T> = { ok: true; value: T; truncated: boolean } | { ok: false; reason: string };

const HEADER_LENGTH = 8;
const READ_RESERVATION_DESCRIPTOR_LENGTH = 16;
const REPORT_CAPABILITIES_LENGTH = 8;
const FULL_STATUS_DESCRIPTOR_HEADER = 24;

function checkAllocationLength(allocationLength: number): void {
  if (!Number.isInteger(allocationLength) || allocationLength < 0 || allocationLength > 0xffff) {
    throw new RangeError(`allocationLength must be 0..65535, got ${allocationLength}`);
  }
}

function truncate(full: Buffer, allocationLength: number): Buffer {
  checkAllocationLength(allocationLength);
  return full.length <= allocationLength ? full : Buffer.from(full.subarray(0, allocationLength));
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.length);
}

function header(generation: number, additionalLength: number): Buffer {
  const out = Buffer.alloc(HEADER_LENGTH);
  out.writeUInt32BE(generation >>> 0, 0);
  out.writeUInt32BE(additionalLength >>> 0, 4);
  return out;
}

// ---- READ KEYS ----

export interface ReadKeysData {
  generation: number;
  keys: bigint[];
}

export function encodeReadKeys(data: ReadKeysData, allocationLength: number): Buffer {
  const body = Buffer.alloc(8 * data.keys.length);
  data.keys.forEach((key, i) => body.writeBigUInt64BE(key, 8 * i));
  return truncate(Buffer.concat([header(data.generation, body.length), body]), allocationLength);
}

export function decodeReadKeys(data: Uint8Array): InDataDecodeResult<ReadKeysData> {
  if (data.length < HEADER_LENGTH) return { ok: false, reason: `READ KEYS data is ${data.length} bytes, shorter than its 8-byte header` };
  const buf = asBuffer(data);
  const additionalLength = buf.readUInt32BE(4);
  if (additionalLength % 8 !== 0) return { ok: false, reason: `READ KEYS additional length ${additionalLength} is not a multiple of 8` };
  const present = Math.min(additionalLength, buf.length - HEADER_LENGTH);
  const keys: bigint[] = [];
  for (let offset = HEADER_LENGTH; offset + 8 <= HEADER_LENGTH + present; offset += 8) keys.push(buf.readBigUInt64BE(offset));
  return { ok: true, value: { generation: buf.readUInt32BE(0), keys }, truncated: keys.length * 8 < additionalLength };
}

// ---- READ RESERVATION ----

export interface ReadReservationData {
  generation: number;
  reservation?: { key: bigint; scope: number; type: number };
}

export function encodeReadReservation(data: ReadReservationData, allocationLength: number): Buffer {
  if (!data.reservation) return truncate(header(data.generation, 0), allocationLength);
  const body = Buffer.alloc(READ_RESERVATION_DESCRIPTOR_LENGTH);
  body.writeBigUInt64BE(data.reservation.key, 0);
  body[13] = ((data.reservation.scope & 0xf) << 4) | (data.reservation.type & 0xf);
  return truncate(Buffer.concat([header(data.generation, body.length), body]), allocationLength);
}

export function decodeReadReservation(data: Uint8Array): InDataDecodeResult<ReadReservationData> {
  if (data.length < HEADER_LENGTH) return { ok: false, reason: `READ RESERVATION data is ${data.length} bytes, shorter than its 8-byte header` };
  const buf = asBuffer(data);
  const generation = buf.readUInt32BE(0);
  const additionalLength = buf.readUInt32BE(4);
  if (additionalLength === 0) return { ok: true, value: { generation }, truncated: false };
  if (additionalLength !== READ_RESERVATION_DESCRIPTOR_LENGTH) {
    return { ok: false, reason: `READ RESERVATION additional length ${additionalLength}, expected 0 or 16` };
  }
  if (buf.length < HEADER_LENGTH + READ_RESERVATION_DESCRIPTOR_LENGTH) return { ok: true, value: { generation }, truncated: true };
  return {
    ok: true,
    value: { generation, reservation: { key: buf.readBigUInt64BE(8), scope: buf[21] >> 4, type: buf[21] & 0xf } },
    truncated: false,
  };
}

// ---- REPORT CAPABILITIES ----

export interface Capabilities {
  /** RLR_C: REPLACE LOST RESERVATION supported. */
  replaceLostReservation?: boolean;
  /** CRH: compatible reservation handling (the SPC-2 RESERVE/RELEASE exceptions). */
  crh: boolean;
  /** SIP_C: SPEC_I_PT supported. */
  sipC: boolean;
  /** ATP_C: ALL_TG_PT supported. */
  atpC: boolean;
  /** PTPL_C: persist through power loss supported. */
  ptplC: boolean;
  /** TMV: the type mask is valid. */
  tmv: boolean;
  /** ALLOW COMMANDS, 3 bits. */
  allowCommands: number;
  /** PTPL_A: persist through power loss is active. */
  ptplA: boolean;
  /** Reservation types the device server supports. */
  types: number[];
}

/** PERSISTENT RESERVATION TYPE MASK bits (bytes 4..5 as a BE16). */
export const TYPE_MASK_BITS: ReadonlyArray<readonly [number, number]> = [
  [PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, 0x8000],
  [PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, 0x4000],
  [PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, 0x2000],
  [PrType.EXCLUSIVE_ACCESS, 0x0800],
  [PrType.WRITE_EXCLUSIVE, 0x0200],
  [PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS, 0x0001],
];
const TYPE_MASK_DEFINED = TYPE_MASK_BITS.reduce((mask, [, bit]) => mask | bit, 0);

export function encodeReportCapabilities(caps: Capabilities, allocationLength: number): Buffer {
  if (!Number.isInteger(caps.allowCommands) || caps.allowCommands < 0 || caps.allowCommands > 7) {
    throw new RangeError('allowCommands is a 3-bit field');
  }
  const out = Buffer.alloc(REPORT_CAPABILITIES_LENGTH);
  out.writeUInt16BE(REPORT_CAPABILITIES_LENGTH, 0);
  out[2] = (caps.replaceLostReservation ? 0x80 : 0) | (caps.crh ? 0x10 : 0) | (caps.sipC ? 0x08 : 0) | (caps.atpC ? 0x04 : 0) | (caps.ptplC ? 0x01 : 0);
  out[3] = (caps.tmv ? 0x80 : 0) | (caps.allowCommands << 4) | (caps.ptplA ? 0x01 : 0);
  let mask = 0;
  for (const type of caps.types) {
    const entry = TYPE_MASK_BITS.find(([t]) => t === type);
    if (!entry) throw new RangeError(`reservation type ${type} has no type-mask bit`);
    mask |= entry[1];
  }
  out.writeUInt16BE(mask, 4);
  return truncate(out, allocationLength);
}

/** Decodes REPORT CAPABILITIES; needs the whole 8 bytes. Undefined mask bits are an error. */
export function decodeReportCapabilities(data: Uint8Array): InDataDecodeResult<Capabilities> {
  if (data.length < REPORT_CAPABILITIES_LENGTH) return { ok: false, reason: `REPORT CAPABILITIES data is ${data.length} bytes, expected 8` };
  const buf = asBuffer(data);
  const length = buf.readUInt16BE(0);
  if (length !== REPORT_CAPABILITIES_LENGTH) return { ok: false, reason: `REPORT CAPABILITIES length field is ${length}, expected 8` };
  const mask = buf.readUInt16BE(4);
  if ((mask & ~TYPE_MASK_DEFINED) !== 0) return { ok: false, reason: `type mask 0x${mask.toString(16)} has undefined bits set` };
  return {
    ok: true,
    truncated: false,
    value: {
      replaceLostReservation: (buf[2] & 0x80) !== 0,
      crh: (buf[2] & 0x10) !== 0,
      sipC: (buf[2] & 0x08) !== 0,
      atpC: (buf[2] & 0x04) !== 0,
      ptplC: (buf[2] & 0x01) !== 0,
      tmv: (buf[3] & 0x80) !== 0,
      allowCommands: (buf[3] >> 4) & 0x7,
      ptplA: (buf[3] & 0x01) !== 0,
      types: TYPE_MASK_BITS.filter(([, bit]) => (mask & bit) !== 0).map(([type]) => type),
    },
  };
}

// ---- READ FULL STATUS ----

export interface FullStatusDescriptor {
  key: bigint;
  allTgPt: boolean;
  /** R_HOLDER: this I_T nexus holds the reservation; scope and type are meaningful only then. */
  holder: boolean;
  scope: number;
  type: number;
  relativeTargetPort: number;
  transportId: TransportId;
}

export interface ReadFullStatusData {
  generation: number;
  descriptors: FullStatusDescriptor[];
}

export function encodeReadFullStatus(data: ReadFullStatusData, allocationLength: number): Buffer {
  const descriptors = data.descriptors.map((d) => {
    const id = encodeTransportId(d.transportId);
    const fixed = Buffer.alloc(FULL_STATUS_DESCRIPTOR_HEADER);
    fixed.writeBigUInt64BE(d.key, 0);
    fixed[12] = (d.allTgPt ? 0x02 : 0) | (d.holder ? 0x01 : 0);
    fixed[13] = ((d.scope & 0xf) << 4) | (d.type & 0xf);
    fixed.writeUInt16BE(d.relativeTargetPort & 0xffff, 18);
    fixed.writeUInt32BE(id.length, 20);
    return Buffer.concat([fixed, id]);
  });
  const body = Buffer.concat(descriptors);
  return truncate(Buffer.concat([header(data.generation, body.length), body]), allocationLength);
}

export function decodeReadFullStatus(data: Uint8Array): InDataDecodeResult<ReadFullStatusData> {
  if (data.length < HEADER_LENGTH) return { ok: false, reason: `READ FULL STATUS data is ${data.length} bytes, shorter than its 8-byte header` };
  const buf = asBuffer(data);
  const additionalLength = buf.readUInt32BE(4);
  const end = HEADER_LENGTH + Math.min(additionalLength, buf.length - HEADER_LENGTH);
  const descriptors: FullStatusDescriptor[] = [];
  let offset = HEADER_LENGTH;
  while (offset + FULL_STATUS_DESCRIPTOR_HEADER <= end) {
    const idLength = buf.readUInt32BE(offset + 20);
    if (offset + FULL_STATUS_DESCRIPTOR_HEADER + idLength > end) break;
    const idBytes = buf.subarray(offset + FULL_STATUS_DESCRIPTOR_HEADER, offset + FULL_STATUS_DESCRIPTOR_HEADER + idLength);
    const id = decodeTransportId(idBytes, 0);
    if (!id.ok) return { ok: false, reason: `descriptor at byte ${offset}: ${id.reason}` };
    if (id.length !== idLength) return { ok: false, reason: `descriptor at byte ${offset}: TransportID is ${id.length} bytes, descriptor says ${idLength}` };
    descriptors.push({
      key: buf.readBigUInt64BE(offset),
      allTgPt: (buf[offset + 12] & 0x02) !== 0,
      holder: (buf[offset + 12] & 0x01) !== 0,
      scope: buf[offset + 13] >> 4,
      type: buf[offset + 13] & 0xf,
      relativeTargetPort: buf.readUInt16BE(offset + 18),
      transportId: id.id,
    });
    offset += FULL_STATUS_DESCRIPTOR_HEADER + idLength;
  }
  const complete = offset === HEADER_LENGTH + additionalLength;
  if (!complete && end === HEADER_LENGTH + additionalLength) {
    return { ok: false, reason: `READ FULL STATUS additional length ${additionalLength} does not end on a descriptor boundary` };
  }
  return { ok: true, value: { generation: buf.readUInt32BE(0), descriptors }, truncated: !complete };
}
