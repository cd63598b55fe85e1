// Pure encoders for the qemu-pr-helper protocol. No I/O.

import { Status } from '../scsi/constants';
import {
  PR_HELPER_CDB_SIZE,
  PR_HELPER_DATA_SIZE,
  PR_HELPER_FEATURES_SIZE,
  PR_HELPER_REPLY_HEADER_SIZE,
  PR_HELPER_SENSE_SIZE,
  PR_HELPER_SUPPORTED_FEATURES,
  PrHelperReply,
  isPrIn,
  isPrOut,
  transferLength,
} from './messages';

export function serializeFeatures(features: number = PR_HELPER_SUPPORTED_FEATURES): Buffer {
  const buffer = Buffer.alloc(PR_HELPER_FEATURES_SIZE);
  buffer.writeUInt32BE(features >>> 0, 0);
  return buffer;
}

/**
 * How many data bytes a reply to `cdb` may carry, the way qemu-pr-helper sizes it:
 * only PR IN with GOOD status carries data, and never more than the allocation length
 * or 8192. QEMU asserts both (`resp.sz <= dxfer_len` for PR IN, `resp.sz == 0` otherwise),
 * so a larger value would crash the VM.
 */
export function replyDataLength(cdb: Uint8Array, reply: Pick<PrHelperReply, 'status' | 'data'>): number {
  if (!isPrIn(cdb) || reply.status !== Status.GOOD) return 0;
  return Math.min(reply.data.length, transferLength(cdb), PR_HELPER_DATA_SIZE);
}

/**
 * The reply to the request whose CDB is `cdb`: BE32 status, BE32 sz, 96 bytes of sense
 * (zero-filled past what we were given, unlike qemu-pr-helper's uninitialised stack
 * bytes), then sz data bytes. Data is truncated to what QEMU accepts (see
 * replyDataLength) and sense to 96 bytes. A status that is not a byte is a bug and throws.
 */
export function serializeReply(cdb: Uint8Array, reply: PrHelperReply): Buffer {
  if (!Number.isInteger(reply.status) || reply.status < 0 || reply.status > 0xff) {
    throw new RangeError(`SCSI status must be a byte, got ${reply.status}`);
  }
  const dataLength = replyDataLength(cdb, reply);
  const buffer = Buffer.alloc(PR_HELPER_REPLY_HEADER_SIZE + dataLength);
  buffer.writeInt32BE(reply.status, 0);
  buffer.writeInt32BE(dataLength, 4);
  reply.sense.copy(buffer, 8, 0, Math.min(reply.sense.length, PR_HELPER_SENSE_SIZE));
  reply.data.copy(buffer, PR_HELPER_REPLY_HEADER_SIZE, 0, dataLength);
  return buffer;
}

/**
 * A request as the client sends it: the CDB zero-padded to 16 bytes, then the PR OUT
 * parameter list. Rejects what would desynchronise the stream or what QEMU itself refuses:
 * a CDB longer than 16 bytes, an opcode other than PR IN/OUT, a PR OUT parameter list
 * whose length differs from the CDB's, data with PR IN, or more than 8192 bytes.
 * (The fd travels separately, as SCM_RIGHTS on the first byte.)
 */
export function serializeRequest(cdb: Uint8Array, dataOut: Uint8Array = Buffer.alloc(0)): Buffer {
  if (cdb.length === 0 || cdb.length > PR_HELPER_CDB_SIZE) throw new RangeError(`CDB must be 1..16 bytes, got ${cdb.length}`);
  const padded = Buffer.alloc(PR_HELPER_CDB_SIZE);
  padded.set(cdb, 0);
  if (!isPrIn(padded) && !isPrOut(padded)) throw new RangeError(`opcode 0x${padded[0].toString(16)} is not PERSISTENT RESERVE IN/OUT`);
  const length = transferLength(padded);
  if (length > PR_HELPER_DATA_SIZE) throw new RangeError(`transfer length ${length} exceeds ${PR_HELPER_DATA_SIZE}`);
  if (isPrIn(padded) && dataOut.length !== 0) throw new RangeError('PR IN carries no parameter list');
  if (isPrOut(padded) && dataOut.length !== length) {
    throw new RangeError(`PR OUT parameter list is ${dataOut.length} bytes but the CDB says ${length}`);
  }
  return Buffer.concat([padded, dataOut]);
}
