// Exit codes follow sg3_utils (sg_lib.h SG_LIB_*), so scripts written for sg_persist
// keep working with `mpath-pr in/out`.

import { SenseKey, Status } from '../scsi/constants';
import { decodeSense, Sense, type ScsiResult } from '../scsi/sense';

export const ExitCode = {
  OK: 0,
  /** Bad command line. */
  USAGE: 1,
  NOT_READY: 2,
  MEDIUM_OR_HARDWARE_ERROR: 3,
  ILLEGAL_REQUEST: 5,
  UNIT_ATTENTION: 6,
  DATA_PROTECT: 7,
  INVALID_OPCODE: 9,
  ABORTED_COMMAND: 11,
  /** The device or the daemon's socket could not be opened. */
  FILE_ERROR: 15,
  NO_SENSE: 20,
  RESERVATION_CONFLICT: 24,
  BUSY: 26,
  TASK_SET_FULL: 27,
  /** The device answered GOOD with data that does not decode. */
  MALFORMED_RESPONSE: 97,
  OTHER: 99,
} as const;

/** A status other than CHECK CONDITION decides the code by itself. */
const BY_STATUS: Readonly<Record<number, number>> = {
  [Status.GOOD]: ExitCode.OK,
  [Status.RESERVATION_CONFLICT]: ExitCode.RESERVATION_CONFLICT,
  [Status.BUSY]: ExitCode.BUSY,
  [Status.TASK_SET_FULL]: ExitCode.TASK_SET_FULL,
};

/** CHECK CONDITION: the sense key decides (sg_lib's sg_err_category_sense). */
const BY_SENSE_KEY: Readonly<Record<number, number>> = {
  [SenseKey.NO_SENSE]: ExitCode.NO_SENSE,
  [SenseKey.NOT_READY]: ExitCode.NOT_READY,
  [SenseKey.MEDIUM_ERROR]: ExitCode.MEDIUM_OR_HARDWARE_ERROR,
  [SenseKey.HARDWARE_ERROR]: ExitCode.MEDIUM_OR_HARDWARE_ERROR,
  [SenseKey.ILLEGAL_REQUEST]: ExitCode.ILLEGAL_REQUEST,
  [SenseKey.UNIT_ATTENTION]: ExitCode.UNIT_ATTENTION,
  [SenseKey.DATA_PROTECT]: ExitCode.DATA_PROTECT,
  [SenseKey.ABORTED_COMMAND]: ExitCode.ABORTED_COMMAND,
};

export function exitCodeForResult(result: ScsiResult): number {
  if (result.status !== Status.CHECK_CONDITION) return BY_STATUS[result.status] ?? ExitCode.OTHER;
  const sense = decodeSense(result.sense);
  if (!sense) return ExitCode.OTHER;
  const { key, asc, ascq } = Sense.INVALID_OPCODE;
  if (sense.key === key && sense.asc === asc && sense.ascq === ascq) return ExitCode.INVALID_OPCODE;
  return BY_SENSE_KEY[sense.key] ?? ExitCode.OTHER;
}
