// The qemu-pr-helper wire protocol (QEMU scsi/pr-helper.h, docs/interop/pr-helper.rst):
// message shapes, sizes and the reasons a connection is dropped. Big-endian throughout.

import { Opcode, PR_HELPER_DATA_SIZE } from '../scsi/constants';

export { PR_HELPER_DATA_SIZE };
export const PR_HELPER_CDB_SIZE = 16;
export const PR_HELPER_SENSE_SIZE = 96;
/** The features word each side sends once after connect. */
export const PR_HELPER_FEATURES_SIZE = 4;
/** We support no optional features; QEMU requests none. */
export const PR_HELPER_SUPPORTED_FEATURES = 0;
/** BE32 result, BE32 sz, 96 bytes of sense: struct PRHelperResponse, no padding. */
export const PR_HELPER_REPLY_HEADER_SIZE = 8 + PR_HELPER_SENSE_SIZE;

/** One command as the server reads it off the wire. */
export interface PrHelperRequest {
  /** Always 16 bytes; the client zero-pads shorter CDBs. */
  readonly cdb: Buffer;
  /** The device fd that came with the CDB via SCM_RIGHTS. Whoever holds the request owns it. */
  readonly fd: number;
  /** The PR OUT parameter list (transfer-length bytes), empty for PR IN. */
  readonly dataOut: Buffer;
}

/** One reply: what QEMU's pr-manager-helper reads back. */
export interface PrHelperReply {
  /** SCSI status byte, sent as BE32. */
  readonly status: number;
  /** Sense bytes (at most 96 are sent; the rest of the field is zero). */
  readonly sense: Buffer;
  /** PR IN data; non-empty only for PR IN with GOOD status. */
  readonly data: Buffer;
}

/**
 * Why a connection is closed without a reply. qemu-pr-helper never sends an error frame:
 * it drops the connection, and QEMU fails the command with LUN COMMUNICATION FAILURE.
 */
export type ProtocolViolation =
  /** The client's features word was not 0. */
  | 'unsupported-features'
  /** A complete CDB arrived with no fd. */
  | 'missing-fd'
  /** More than one fd arrived for one request. */
  | 'too-many-fds'
  /** fds arrived where no CDB was being read (with the features word or a parameter list). */
  | 'unexpected-fd'
  /** The kernel dropped fds that did not fit our control buffer (MSG_CTRUNC). */
  | 'control-truncated'
  /** cdb[0] is neither PERSISTENT RESERVE IN (0x5E) nor OUT (0x5F). */
  | 'invalid-opcode'
  /** The CDB's transfer length exceeds 8192. */
  | 'transfer-too-long'
  /** Bytes arrived after an earlier violation. */
  | 'after-violation'
  /** A reply that breaks the protocol (client side): bad size. */
  | 'invalid-reply'
  /** The server's features word was not 0 (client side). */
  | 'unsupported-server-features';

export class ProtocolError extends Error {
  readonly violation: ProtocolViolation;
  /**
   * Every fd the parser held or was handed in the offending chunk. The receiver of the
   * error owns them and must close them.
   */
  readonly fds: number[];

  constructor(violation: ProtocolViolation, message: string, fds: number[] = []) {
    super(message);
    this.name = 'ProtocolError';
    this.violation = violation;
    this.fds = fds;
  }
}

/** A chunk as read from the socket: bytes and whatever fds arrived with them. */
export interface InboundChunk {
  readonly bytes: Buffer;
  readonly fds: readonly number[];
  /** MSG_CTRUNC was set on the recvmsg that produced this chunk. */
  readonly controlTruncated?: boolean;
}

export function isPrIn(cdb: Uint8Array): boolean {
  return cdb[0] === Opcode.PERSISTENT_RESERVE_IN;
}

export function isPrOut(cdb: Uint8Array): boolean {
  return cdb[0] === Opcode.PERSISTENT_RESERVE_OUT;
}

/**
 * QEMU's scsi_cdb_xfer() for these group-2 opcodes: BE16 at CDB[7..8]. For PR IN this is
 * the allocation length, for PR OUT the parameter list length. Bytes 5-6 are ignored, as
 * QEMU ignores them.
 */
export function transferLength(cdb: Uint8Array): number {
  return (cdb[7] << 8) | cdb[8];
}
