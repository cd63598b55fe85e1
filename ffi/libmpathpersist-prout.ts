// PR OUT through libmpathpersist: building the struct prout_param_descriptor block that
// mpath_persistent_reserve_out reads (pure apart from the final address patch).

import koffi from 'koffi';
import {
  memberOffset as off,
  MPATH_MX_TID_LEN,
  MPATH_MX_TIDS,
  MPATH_PROTOCOL_ID,
  MPATH_WWUI_DEVICE_NAME,
  MPATH_WWUI_PORT_IDENTIFIER,
  POINTER_SIZE,
  PROUT_TRNPTID_LIST_OFFSET,
  ProutParamDescriptor,
  TransportId,
} from './libmpathpersist-layout';

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
