// libmpathpersist (multipath-tools) through koffi: the struct layouts of <mpath_persist.h>
// for the LIBMPATHPERSIST_2.1.0 ABI (0.9.4, unchanged up to 0.14.x), the four entry points
// the project uses, and the conversion of the library's decoded PR IN answers back to SCSI
// wire bytes the way qemu-pr-helper does it.
//
// HAZARDS that shape this module:
// - mpath_persistent_reserve_{in,out} call exit(1) when device-mapper is unusable, print to
//   stderr, and libmpathpersist_init() raises RLIMIT_NOFILE. Only call them in the dedicated
//   child process the mpath backend runs; never in the daemon or a test runner.
// - The library mutates its arguments (clears SPEC_I_PT, swaps key/sa_key on rollback), so
//   every call gets freshly built buffers here; nothing is reused.
// - READ FULL STATUS unpacks descriptors into the 8192-byte private buffer, 270 bytes each,
//   plus a pointer per descriptor after it. More than 30 descriptors write past the 8456
//   bytes mpath_alloc_prin_response() allocates. We hand it a much larger buffer so the
//   overflow stays inside our own memory, and refuse the answer when it has more than 30.
// - Calls are not thread-safe: callers serialise them (the child process does one at a time).
//
// The library is loaded lazily by loadLibmpathpersist(), which never throws.

import koffi, { type TypeObject } from 'koffi';
import { loadOptional, MULTIPATH_TOOLS, type OpenedLibrary, type OptionalLibrarySpec, type OptionalLoadResult } from './optional-library';

// ---------------------------------------------------------------------------------------
// Constants of <mpath_persist.h>

export const MPATH_MAX_PARAM_LEN = 8192;
export const MPATH_MX_TIDS = 32;
export const MPATH_MX_TID_LEN = 256;

/** Return codes of mpath_persistent_reserve_{in,out}. */
export const MPATH_PR = {
  SKIP: -1,
  SUCCESS: 0,
  SYNTAX_ERROR: 1,
  SENSE_NOT_READY: 2,
  SENSE_MEDIUM_ERROR: 3,
  SENSE_HARDWARE_ERROR: 4,
  ILLEGAL_REQ: 5,
  SENSE_UNIT_ATTENTION: 6,
  SENSE_INVALID_OP: 7,
  SENSE_ABORTED_COMMAND: 8,
  NO_SENSE: 9,
  SENSE_MALFORMED: 10,
  RESERV_CONFLICT: 11,
  FILE_ERROR: 12,
  DMMP_ERROR: 13,
  THREAD_ERROR: 14,
  OTHER: 15,
  /** Newer than 0.9.4 (0.12.0), documented as internal only. */
  RETRYABLE_ERROR: 16,
  /** Newer than 0.9.4 (0.12.0), documented as internal only. */
  SUCCESS_UNREGISTER: 17,
} as const;

export function mpathPrName(rc: number): string {
  for (const [name, value] of Object.entries(MPATH_PR)) if (value === rc) return `MPATH_PR_${name}`;
  return `MPATH_PR_? (${rc})`;
}

export const MPATH_PRIN = { READ_KEYS: 0, READ_RESERVATION: 1, REPORT_CAPABILITIES: 2, READ_FULL_STATUS: 3 } as const;
export const MPATH_PROUT = {
  REGISTER: 0,
  RESERVE: 1,
  RELEASE: 2,
  CLEAR: 3,
  PREEMPT: 4,
  PREEMPT_AND_ABORT: 5,
  REGISTER_AND_IGNORE: 6,
  /** Declared by the header, rejected by the library with MPATH_PR_OTHER. */
  REGISTER_AND_MOVE: 7,
} as const;

export const MPATH_F_APTPL_MASK = 0x01;
export const MPATH_F_ALL_TG_PT_MASK = 0x04;
export const MPATH_F_SPEC_I_PT_MASK = 0x08;

export const MPATH_PROTOCOL_ID = { FC: 0x00, ISCSI: 0x05, SAS: 0x06 } as const;
export const MPATH_WWUI_DEVICE_NAME = 0x00;
export const MPATH_WWUI_PORT_IDENTIFIER = 0x40;

/** READ FULL STATUS answers with more descriptors than this overflow the library's buffer. */
export const RFSTAT_MAX_SAFE_DESCRIPTORS = 30;

// ---------------------------------------------------------------------------------------
// Struct layouts (x86-64 / LP64). Flexible array members cannot be declared in koffi without
// inflating sizeof, so they are left out; their offsets equal the sizeof of the enclosing
// struct, which the layout test checks against the C compiler. The first member carries an
// explicit 8-byte alignment where C gets it from the (omitted) pointer array.

export const PrinReadDescr = koffi.struct('mpath_prin_readdescr', {
  prgeneration: 'uint32_t',
  additional_length: 'uint32_t',
  key_list: koffi.array('uint8_t', MPATH_MAX_PARAM_LEN),
});

export const PrinResvDescr = koffi.struct('mpath_prin_resvdescr', {
  prgeneration: 'uint32_t',
  additional_length: 'uint32_t',
  key: koffi.array('uint8_t', 8),
  _obsolete: 'uint32_t',
  _reserved: 'uint8_t',
  scope_type: 'uint8_t',
  _obsolete1: 'uint16_t',
});

export const PrinCapDescr = koffi.struct('mpath_prin_capdescr', {
  length: 'uint16_t',
  flags: koffi.array('uint8_t', 2),
  pr_type_mask: 'uint16_t',
  _reserved: 'uint16_t',
});

/** The anonymous union inside struct transportid; named here so offsetof can reach it. */
export const TransportIdName = koffi.union('mpath_transportid_name', {
  n_port_name: koffi.array('uint8_t', 8),
  sas_address: koffi.array('uint8_t', 8),
  iscsi_name: koffi.array('uint8_t', MPATH_MX_TID_LEN),
});

export const TransportId = koffi.struct('mpath_transportid', {
  format_code: 'uint8_t',
  protocol_id: 'uint8_t',
  name: TransportIdName,
});

export const PrinFullDescr = koffi.struct('mpath_prin_fulldescr', {
  key: koffi.array('uint8_t', 8),
  flag: 'uint8_t',
  scope_type: 'uint8_t',
  rtpi: 'uint16_t',
  trnptid: TransportId,
});

export const PrintFullDescrList = koffi.struct('mpath_print_fulldescr_list', {
  prgeneration: [8, 'uint32_t'],
  number_of_descriptor: 'uint32_t',
  private_buffer: koffi.array('uint8_t', MPATH_MAX_PARAM_LEN),
  // struct prin_fulldescr *descriptors[]; at sizeof(print_fulldescr_list)
});

export const PrinResp = koffi.union('mpath_prin_resp', {
  prin_readkeys: PrinReadDescr,
  prin_readresv: PrinResvDescr,
  prin_readcap: PrinCapDescr,
  prin_readfd: PrintFullDescrList,
});

export const ProutParamDescriptor = koffi.struct('mpath_prout_param_descriptor', {
  key: [8, koffi.array('uint8_t', 8)],
  sa_key: koffi.array('uint8_t', 8),
  _obsolete: 'uint32_t',
  sa_flags: 'uint8_t',
  _reserved: 'uint8_t',
  _obsolete1: 'uint16_t',
  private_buffer: koffi.array('uint8_t', MPATH_MAX_PARAM_LEN),
  num_transportid: 'uint32_t',
  // struct transportid *trnptid_list[]; at sizeof(prout_param_descriptor)
});

const POINTER_SIZE = 8;

/** Offset of print_fulldescr_list.descriptors[] (a flexible array member). */
export const FULLDESCR_DESCRIPTORS_OFFSET = koffi.sizeof(PrintFullDescrList);
/** Offset of prout_param_descriptor.trnptid_list[] (a flexible array member). */
export const PROUT_TRNPTID_LIST_OFFSET = koffi.sizeof(ProutParamDescriptor);

/** What mpath_alloc_prin_response(RFSTAT) allocates: the list plus 32 descriptor pointers. */
export const RFSTAT_LIBRARY_ALLOCATION = FULLDESCR_DESCRIPTORS_OFFSET + POINTER_SIZE * MPATH_MX_TIDS;

/**
 * What we allocate for READ FULL STATUS. The unpacking loop consumes at least 24 input bytes
 * per descriptor and reads at most 8192, so at most 342 iterations, each writing 270 bytes at
 * 8+270*i and a pointer at 8200+8*i. 96 KiB holds every possible write.
 */
export const RFSTAT_RESPONSE_BYTES = 96 * 1024;
/** READ KEYS / READ RESERVATION / REPORT CAPABILITIES need only sizeof(struct prin_resp). */
export const PRIN_RESPONSE_BYTES = koffi.sizeof(PrinResp);

// ---------------------------------------------------------------------------------------
// PR IN: decoding the library's struct prin_resp (pure)

const off = (type: TypeObject, member: string): number => koffi.offsetof(type, member);

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
function wireLength(allocationLength: number): number {
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

// ---------------------------------------------------------------------------------------
// PR OUT: building struct prout_param_descriptor (pure apart from the final address patch)

/** One entry of trnptid_list, in the library's struct form (not SPC wire form). */
export interface ProutTransportId {
  /** OR'ed into byte 0 by the library: MPATH_WWUI_DEVICE_NAME (0x00) or MPATH_WWUI_PORT_IDENTIFIER (0x40). */
  readonly formatCode: number;
  readonly protocolId: number;
  /**
   * FC: the 8-byte N_Port name. SAS: the 8-byte SAS address. iSCSI: the BE16 length followed
   * by the NUL-terminated, 4-byte padded name (what SPC puts at TransportID bytes 2..), at most 256 bytes.
   */
  readonly name: Uint8Array;
}

export interface ProutParams {
  readonly key: bigint;
  readonly serviceActionKey: bigint;
  /** MPATH_F_* bits: APTPL 0x01, ALL_TG_PT 0x04, SPEC_I_PT 0x08. */
  readonly flags: number;
  readonly transportIds?: readonly ProutTransportId[];
}

export class ProutParamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProutParamError';
  }
}

export interface ProutLayout {
  /** The whole block: the struct, then the pointer list, then the transportid structs. */
  readonly bytes: Buffer;
  /** Pointer slots to fill with (block address + target) before the call. */
  readonly pointers: readonly { readonly at: number; readonly target: number }[];
}

const U64_MAX = (1n << 64n) - 1n;
const TRANSPORTID_SIZE = koffi.sizeof(TransportId);

export function layoutProutParam(params: ProutParams): ProutLayout {
  for (const [name, value] of [
    ['key', params.key],
    ['service action key', params.serviceActionKey],
  ] as const) {
    if (typeof value !== 'bigint' || value < 0n || value > U64_MAX) throw new ProutParamError(`${name} must be a 64-bit unsigned bigint`);
  }
  if (!Number.isInteger(params.flags) || params.flags < 0 || params.flags > 0xff) throw new ProutParamError('flags must fit one byte');
  const tids = params.transportIds ?? [];
  if (tids.length > MPATH_MX_TIDS) throw new ProutParamError(`at most ${MPATH_MX_TIDS} transport IDs, got ${tids.length}`);
  for (const tid of tids) {
    if (tid.formatCode !== MPATH_WWUI_DEVICE_NAME && tid.formatCode !== MPATH_WWUI_PORT_IDENTIFIER) {
      throw new ProutParamError(`transport ID format code must be 0x00 or 0x40, got 0x${tid.formatCode.toString(16)}`);
    }
    if (!(Object.values(MPATH_PROTOCOL_ID) as number[]).includes(tid.protocolId)) {
      throw new ProutParamError(`transport ID protocol ${tid.protocolId} is not FC, iSCSI or SAS`);
    }
    const limit = tid.protocolId === MPATH_PROTOCOL_ID.ISCSI ? MPATH_MX_TID_LEN : 8;
    if (tid.name.length > limit) throw new ProutParamError(`transport ID name is ${tid.name.length} bytes, more than ${limit}`);
  }

  const listAt = PROUT_TRNPTID_LIST_OFFSET;
  const tidsAt = listAt + POINTER_SIZE * tids.length;
  const bytes = Buffer.alloc(tidsAt + TRANSPORTID_SIZE * tids.length);
  bytes.writeBigUInt64BE(params.key, off(ProutParamDescriptor, 'key'));
  bytes.writeBigUInt64BE(params.serviceActionKey, off(ProutParamDescriptor, 'sa_key'));
  bytes[off(ProutParamDescriptor, 'sa_flags')] = params.flags;
  bytes.writeUInt32LE(tids.length, off(ProutParamDescriptor, 'num_transportid'));
  const pointers: { at: number; target: number }[] = [];
  tids.forEach((tid, i) => {
    const at = tidsAt + TRANSPORTID_SIZE * i;
    bytes[at + off(TransportId, 'format_code')] = tid.formatCode;
    bytes[at + off(TransportId, 'protocol_id')] = tid.protocolId;
    Buffer.from(tid.name).copy(bytes, at + off(TransportId, 'name'));
    pointers.push({ at: listAt + POINTER_SIZE * i, target: at });
  });
  return { bytes, pointers };
}

/** Fills the pointer list once the block's address is known. Host order (little-endian). */
export function patchProutPointers(layout: ProutLayout, baseAddress: bigint): void {
  for (const p of layout.pointers) layout.bytes.writeBigUInt64LE(baseAddress + BigInt(p.target), p.at);
}

/**
 * A fresh struct prout_param_descriptor block, pointers filled, ready to pass as the
 * `paramp` argument. koffi hands a Buffer argument over by address without copying, so the
 * pointers patched here point into the very block the library receives.
 */
export function prepareProutBlock(params: ProutParams): Buffer {
  const layout = layoutProutParam(params);
  patchProutPointers(layout, koffi.address(layout.bytes));
  return layout.bytes;
}

// ---------------------------------------------------------------------------------------
// Loading and calling

export interface PrinRequest {
  /** An fd of the dm-multipath node itself (not a partition); only fstat'ed by the library. */
  readonly fd: number;
  readonly serviceAction: number;
  /** The CDB's allocation length; the returned wire bytes are min(8192, this) long. */
  readonly allocationLength: number;
  readonly noisy?: boolean;
  /** 0..4; the library overwrites its global verbosity with it on every call. */
  readonly verbose?: number;
}

export interface ProutRequest {
  readonly fd: number;
  readonly serviceAction: number;
  readonly scope: number;
  readonly type: number;
  readonly params: ProutParams;
  readonly noisy?: boolean;
  readonly verbose?: number;
}

export interface MpathPersistLib {
  /** Where the library was mapped from (from /proc/self/maps). */
  readonly path: string | undefined;
  /** 'LIBMPATHPERSIST_2.1.0' (0.9.x) or 'LIBMPATHPERSIST_2.2.0+' (0.10.0 and later). */
  readonly abi: 'LIBMPATHPERSIST_2.1.0' | 'LIBMPATHPERSIST_2.2.0+';
  /** 0 on success. A second init after exit fails (pthread_once). Raises RLIMIT_NOFILE. */
  init(): number;
  exit(): number;
  /** May call exit(1) when device-mapper is unusable: only in the isolated child process. */
  reserveIn(request: PrinRequest): PrinResult;
  /** May call exit(1) when device-mapper is unusable: only in the isolated child process. */
  reserveOut(request: ProutRequest): { rc: number };
}

export type LoadResult = OptionalLoadResult<MpathPersistLib>;

export const LIBMPATHPERSIST_SONAME = 'libmpathpersist.so.0';

function clampVerbosity(v: number | undefined): number {
  return v === undefined ? 0 : Math.max(0, Math.min(4, Math.trunc(v)));
}

type ReserveIn = (fd: number, sa: number, resp: Buffer, noisy: number, verbose: number) => number;
type ReserveOut = (fd: number, sa: number, scope: number, type: number, paramp: Buffer, noisy: number, verbose: number) => number;

const LIBMPATHPERSIST: OptionalLibrarySpec<MpathPersistLib> = {
  soname: LIBMPATHPERSIST_SONAME,
  ...MULTIPATH_TOOLS,
  missingSymbolHint: 'libmpathpersist_init appeared in multipath-tools 0.8.x; this library is older, or not multipath-tools',
  unsupported: () =>
    process.arch === 'x64' || process.arch === 'arm64' ? undefined : `struct layouts are declared for LP64 little-endian; this is ${process.arch}`,
  bind: bindLibmpathpersist,
};

/**
 * Loads libmpathpersist once. Never throws; says why when it cannot. `soname` exists for
 * tests of the failure reports; other names are not cached.
 */
export function loadLibmpathpersist(soname: string = LIBMPATHPERSIST_SONAME): LoadResult {
  return loadOptional(LIBMPATHPERSIST, soname);
}

function bindLibmpathpersist(library: OpenedLibrary): MpathPersistLib {
  const init = library.func<() => number>('int libmpathpersist_init(void)');
  const exit = library.func<() => number>('int libmpathpersist_exit(void)');
  const reserveInNative = library.func<ReserveIn>('int mpath_persistent_reserve_in(int fd, int rq_servact, void *resp, int noisy, int verbose)');
  const reserveOutNative = library.func<ReserveOut>(
    'int mpath_persistent_reserve_out(int fd, int rq_servact, int rq_scope, unsigned int rq_type, void *paramp, int noisy, int verbose)',
  );
  let abi: MpathPersistLib['abi'] = 'LIBMPATHPERSIST_2.1.0';
  try {
    library.handle.symbol('mpath_persistent_reserve_in__');
    abi = 'LIBMPATHPERSIST_2.2.0+';
  } catch {
    // Absent before 0.10.0: the 0.9.x ABI this module was written against.
  }
  return {
    path: library.mappedPath(),
    abi,
    init: () => init(),
    exit: () => exit(),
    reserveIn: (request) => reserveIn(reserveInNative, request),
    reserveOut(request) {
      const rc = reserveOutNative(
        request.fd,
        request.serviceAction,
        request.scope,
        request.type,
        prepareProutBlock(request.params),
        request.noisy ? 1 : 0,
        clampVerbosity(request.verbose),
      );
      return { rc };
    },
  };
}

/** One PR IN, refused before the call when the library would not understand it. */
function reserveIn(reserveInNative: ReserveIn, request: PrinRequest): PrinResult {
  wireLength(request.allocationLength);
  if (!(Object.values(MPATH_PRIN) as number[]).includes(request.serviceAction)) {
    return { rc: MPATH_PR.SYNTAX_ERROR, refused: `PR IN service action ${request.serviceAction} is not supported by libmpathpersist` };
  }
  const resp = Buffer.alloc(prinResponseBytes(request.serviceAction));
  const rc = reserveInNative(request.fd, request.serviceAction, resp, request.noisy ? 1 : 0, clampVerbosity(request.verbose));
  if (rc !== MPATH_PR.SUCCESS) return { rc };
  const decoded = decodePrinResponse(request.serviceAction, resp, request.allocationLength);
  if ('refused' in decoded) return { rc, refused: decoded.refused };
  return { rc, data: decoded };
}
