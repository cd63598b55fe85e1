// PERSISTENT RESERVE IN / OUT command descriptor blocks (SPC-4).
// Pure codecs: no validation of the opcode beyond what the encoder writes; callers
// that receive CDBs from the wire check cdb[0] first and then decode.

import { Opcode } from './constants';

export const PR_CDB_LENGTH = 10;

export interface PrInCdb {
  /** SERVICE ACTION, byte 1 bits 4..0. */
  action: number;
  /** ALLOCATION LENGTH, bytes 7..8 (BE16). */
  allocationLength: number;
  /** CONTROL byte (byte 9). */
  control: number;
}

export interface PrOutCdb {
  /** SERVICE ACTION, byte 1 bits 4..0. */
  action: number;
  /** SCOPE, byte 2 bits 7..4. */
  scope: number;
  /** TYPE, byte 2 bits 3..0. */
  type: number;
  /** PARAMETER LIST LENGTH, bytes 5..8 (BE32). */
  parameterListLength: number;
  control: number;
}

function checkUnsigned(name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${name} must be an integer in 0..${max}, got ${value}`);
  }
}

/** Reads a byte, treating bytes past the end of a short CDB as zero. */
function byteAt(cdb: Uint8Array, index: number): number {
  return index < cdb.length ? cdb[index] : 0;
}

export function encodePrInCdb(cdb: { action: number; allocationLength: number; control?: number }): Buffer {
  checkUnsigned('action', cdb.action, 0x1f);
  checkUnsigned('allocationLength', cdb.allocationLength, 0xffff);
  checkUnsigned('control', cdb.control ?? 0, 0xff);
  const out = Buffer.alloc(PR_CDB_LENGTH);
  out[0] = Opcode.PERSISTENT_RESERVE_IN;
  out[1] = cdb.action;
  out.writeUInt16BE(cdb.allocationLength, 7);
  out[9] = cdb.control ?? 0;
  return out;
}

/** Decodes a PR IN CDB; the opcode is assumed to have been checked already. */
export function decodePrInCdb(cdb: Uint8Array): PrInCdb {
  return {
    action: byteAt(cdb, 1) & 0x1f,
    allocationLength: (byteAt(cdb, 7) << 8) | byteAt(cdb, 8),
    control: byteAt(cdb, 9),
  };
}

export function encodePrOutCdb(cdb: {
  action: number;
  scope?: number;
  type?: number;
  parameterListLength: number;
  control?: number;
}): Buffer {
  checkUnsigned('action', cdb.action, 0x1f);
  checkUnsigned('scope', cdb.scope ?? 0, 0xf);
  checkUnsigned('type', cdb.type ?? 0, 0xf);
  checkUnsigned('parameterListLength', cdb.parameterListLength, 0xffffffff);
  checkUnsigned('control', cdb.control ?? 0, 0xff);
  const out = Buffer.alloc(PR_CDB_LENGTH);
  out[0] = Opcode.PERSISTENT_RESERVE_OUT;
  out[1] = cdb.action;
  out[2] = ((cdb.scope ?? 0) << 4) | (cdb.type ?? 0);
  out.writeUInt32BE(cdb.parameterListLength, 5);
  out[9] = cdb.control ?? 0;
  return out;
}

/**
 * Decodes a PR OUT CDB; the opcode is assumed to have been checked already.
 *
 * SPC-4 (PERSISTENT RESERVE OUT command) defines PARAMETER LIST LENGTH as 32 bits in bytes 5..8,
 * and that is what is decoded here. qemu-pr-helper reads only bytes 7..8
 * (scsi_cdb_xfer treats 0x5F like any 10-byte CDB) and its wire protocol refuses
 * anything above 8192 bytes, so a length with bytes 5..6 set is one qemu would
 * misread; the protocol layer rejects such lengths before they get here.
 */
export function decodePrOutCdb(cdb: Uint8Array): PrOutCdb {
  return {
    action: byteAt(cdb, 1) & 0x1f,
    scope: byteAt(cdb, 2) >> 4,
    type: byteAt(cdb, 2) & 0x0f,
    parameterListLength: ((byteAt(cdb, 5) << 24) | (byteAt(cdb, 6) << 16) | (byteAt(cdb, 7) << 8) | byteAt(cdb, 8)) >>> 0,
    control: byteAt(cdb, 9),
  };
}
