// One PERSISTENT RESERVE IN/OUT CDB sent unchanged with SG_IO, the way qemu-pr-helper's
// non-multipath path does it, minus its oddities: the CDB goes out as the 10 bytes it is
// (QEMU sends cmd_len 16), PR IN asks for exactly the allocation length (QEMU asks for
// 8192 whatever the CDB says), and the command timeout is real (QEMU passes 1 ms).

import { sgIo, DEFAULT_SG_TIMEOUT_MS } from '../../../ffi/sg-io';
import { decodePrInCdb, decodePrOutCdb, PR_CDB_LENGTH } from '../../scsi/cdb';
import { Opcode, Status } from '../../scsi/constants';
import { resultFromSgIo } from '../../scsi/errno-sense';
import { checkCondition, Sense, statusOnly, type ScsiResult } from '../../scsi/sense';

export { DEFAULT_SG_TIMEOUT_MS };

export interface PassThroughOutcome {
  readonly result: ScsiResult;
  /** Set when SG_IO itself failed, i.e. the command never reached a device. */
  readonly errno?: number;
}

/** Checks that need no device: the opcode, the CDB size and the data length against the CDB. */
export function validatePrCdb(cdb: Uint8Array, dataOut: Uint8Array): ScsiResult | undefined {
  if (cdb.length === 0 || (cdb[0] !== Opcode.PERSISTENT_RESERVE_IN && cdb[0] !== Opcode.PERSISTENT_RESERVE_OUT)) {
    return checkCondition(Sense.INVALID_OPCODE);
  }
  if (cdb.length < PR_CDB_LENGTH) return checkCondition(Sense.INVALID_FIELD_IN_CDB);
  if (cdb[0] === Opcode.PERSISTENT_RESERVE_IN) {
    // PR IN carries no data-out; a caller that sends some has confused the directions.
    if (dataOut.length !== 0) return checkCondition(Sense.INVALID_FIELD_IN_CDB);
    return undefined;
  }
  if (decodePrOutCdb(cdb).parameterListLength !== dataOut.length) return checkCondition(Sense.PARAMETER_LIST_LENGTH_ERROR);
  return undefined;
}

/**
 * Sends a PR IN or PR OUT CDB on `fd` and maps the outcome with resultFromSgIo. Never
 * rejects: a failure to even queue the ioctl becomes TASK SET FULL.
 */
export async function passThroughPr(fd: number, cdb: Uint8Array, dataOut: Uint8Array, timeoutMs: number = DEFAULT_SG_TIMEOUT_MS): Promise<PassThroughOutcome> {
  const invalid = validatePrCdb(cdb, dataOut);
  if (invalid) return { result: invalid };
  const command = Buffer.from(cdb.subarray(0, PR_CDB_LENGTH));
  const isIn = cdb[0] === Opcode.PERSISTENT_RESERVE_IN;
  const allocationLength = isIn ? decodePrInCdb(cdb).allocationLength : 0;
  let raw;
  try {
    raw = isIn
      ? await sgIo(fd, { cdb: command, direction: allocationLength > 0 ? 'from-dev' : 'none', dxferLength: allocationLength || undefined, timeoutMs })
      : await sgIo(fd, { cdb: command, direction: dataOut.length > 0 ? 'to-dev' : 'none', data: dataOut.length > 0 ? dataOut : undefined, timeoutMs });
  } catch {
    // koffi's async queue is full (max_async_calls): the host is saturated, try again later.
    return { result: statusOnly(Status.TASK_SET_FULL) };
  }
  const result = resultFromSgIo(raw);
  if (result.dataIn.length > allocationLength) result.dataIn = result.dataIn.subarray(0, allocationLength);
  return raw.errno !== undefined ? { result, errno: raw.errno } : { result };
}
