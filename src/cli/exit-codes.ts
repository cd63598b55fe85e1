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

export function exitCodeForResult(result: ScsiResult): number {
  switch (result.status) {
    case Status.GOOD:
      return ExitCode.OK;
    case Status.RESERVATION_CONFLICT:
      return ExitCode.RESERVATION_CONFLICT;
    case Status.BUSY:
      return ExitCode.BUSY;
    case Status.TASK_SET_FULL:
      return ExitCode.TASK_SET_FULL;
    case Status.CHECK_CONDITION:
      break;
    default:
      return ExitCode.OTHER;
  }
  const sense = decodeSense(result.sense);
  if (!sense) return ExitCode.OTHER;
  switch (sense.key) {
    case SenseKey.NO_SENSE:
      return ExitCode.NO_SENSE;
    case SenseKey.NOT_READY:
      return ExitCode.NOT_READY;
    case SenseKey.MEDIUM_ERROR:
    case SenseKey.HARDWARE_ERROR:
      return ExitCode.MEDIUM_OR_HARDWARE_ERROR;
    case SenseKey.ILLEGAL_REQUEST:
      return sense.asc === Sense.INVALID_OPCODE.asc && sense.ascq === Sense.INVALID_OPCODE.ascq
        ? ExitCode.INVALID_OPCODE
        : ExitCode.ILLEGAL_REQUEST;
    case SenseKey.UNIT_ATTENTION:
      return ExitCode.UNIT_ATTENTION;
    case SenseKey.DATA_PROTECT:
      return ExitCode.DATA_PROTECT;
    case SenseKey.ABORTED_COMMAND:
      return ExitCode.ABORTED_COMMAND;
    default:
      return ExitCode.OTHER;
  }
}
