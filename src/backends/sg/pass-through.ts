// One PERSISTENT RESERVE IN/OUT CDB sent unchanged with SG_IO, the way qemu-pr-helper's
// non-multipath path does it, minus its oddities: the CDB goes out as the 10 bytes it is
// (QEMU sends cmd_len 16), PR IN asks for exactly the allocation length (QEMU asks for
// 8192 whatever the CDB says), and the command timeout is real (QEMU passes 1 ms).

import { sgIo, DEFAULT_SG_TIMEOUT_MS } from '../../../ffi/sg-io';
import { Status } from '../../scsi/constants';
import { resultFromSgIo } from '../../scsi/errno-sense';
import type { PrCommand } from '../../scsi/pr-command';
import { statusOnly, type ScsiResult } from '../../scsi/sense';

export { DEFAULT_SG_TIMEOUT_MS };

export interface PassThroughOutcome {
  readonly result: ScsiResult;
  /** Set when SG_IO itself failed, i.e. the command never reached a device. */
  readonly errno?: number;
}

/**
 * Sends an admitted PR IN or PR OUT command on `fd`, its bytes unchanged, and maps the
 * outcome with resultFromSgIo. The bytes are copied first: the ioctl runs on another
 * thread, and the caller's buffers belong to the caller. Never rejects: a failure to even
 * queue the ioctl becomes TASK SET FULL.
 */
export async function passThroughPr(fd: number, command: PrCommand, timeoutMs: number = DEFAULT_SG_TIMEOUT_MS): Promise<PassThroughOutcome> {
  const cdb = Buffer.from(command.cdb);
  const allocationLength = command.direction === 'in' ? command.allocationLength : 0;
  const dataOut = command.direction === 'out' ? Buffer.from(command.parameterList) : undefined;
  let raw;
  try {
    raw = !dataOut
      ? await sgIo(fd, { cdb, direction: allocationLength > 0 ? 'from-dev' : 'none', dxferLength: allocationLength || undefined, timeoutMs })
      : await sgIo(fd, { cdb, direction: dataOut.length > 0 ? 'to-dev' : 'none', data: dataOut.length > 0 ? dataOut : undefined, timeoutMs });
  } catch {
    // koffi's async queue is full (max_async_calls): the host is saturated, try again later.
    return { result: statusOnly(Status.TASK_SET_FULL) };
  }
  const result = resultFromSgIo(raw);
  if (result.dataIn.length > allocationLength) result.dataIn = result.dataIn.subarray(0, allocationLength);
  return raw.errno !== undefined ? { result, errno: raw.errno } : { result };
}
