// How a failed or completed pass-through becomes the SCSI status and sense a client sees.
// Pure functions. The tables follow qemu-pr-helper (scsi/utils.c scsi_sense_from_errno and
// scsi_sense_from_host_status, scsi/qemu-pr-helper.c do_sgio_worker) so that guests see the
// same answers, with three deliberate differences, each marked "Differs from QEMU":
//   1. an unknown non-zero host status is an error here (QEMU answers GOOD, so a PR OUT that
//      failed on a dead path, e.g. DID_TRANSPORT_FAILFAST or DID_ERROR, looks successful);
//   2. ENOTTY / EOPNOTSUPP ("this fd has no SG_IO" / "this disk has no pr_ops") answer
//      INVALID OPERATION CODE, a final "not supported here", where QEMU's default gives the
//      retryable ABORTED COMMAND / I/O PROCESS TERMINATED;
//   3. the driver-timeout test compares the driver byte's value (DRIVER_TIMEOUT = 6) instead
//      of masking with 6, which would also match DRIVER_SOFT (2) and DRIVER_ERROR (4).

// ffi/errno.ts is plain data (no koffi): importing it keeps this module pure.
import { LinuxErrno } from '../../ffi/errno';
import { Status } from './constants';
import { checkCondition, good, Sense, statusOnly, type ScsiResult, type SenseCondition } from './sense';

const errno = LinuxErrno;

/** Linux host byte values (DID_*, include/scsi/scsi_status.h). */
export const HostStatus = {
  OK: 0x00,
  NO_CONNECT: 0x01,
  BUS_BUSY: 0x02,
  TIME_OUT: 0x03,
  BAD_TARGET: 0x04,
  ABORT: 0x05,
  PARITY: 0x06,
  ERROR: 0x07,
  RESET: 0x08,
  BAD_INTR: 0x09,
  PASSTHROUGH: 0x0a,
  SOFT_ERROR: 0x0b,
  IMM_RETRY: 0x0c,
  REQUEUE: 0x0d,
  TRANSPORT_DISRUPTED: 0x0e,
  TRANSPORT_FAILFAST: 0x0f,
  TARGET_FAILURE: 0x10,
  NEXUS_FAILURE: 0x11,
  ALLOC_FAILURE: 0x12,
  MEDIUM_ERROR: 0x13,
  TRANSPORT_MARGINAL: 0x14,
} as const;

/** Driver byte values (the low nibble of sg_io_hdr.driver_status). */
export const DriverStatus = {
  OK: 0x00,
  TIMEOUT: 0x06,
  SENSE: 0x08,
} as const;

/** Sense conditions QEMU builds for host errors that src/scsi/sense.ts does not name. */
export const HostErrorSense = {
  LUN_NOT_RESPONDING: freeze(0x0b, 0x05, 0x00),
  COMMAND_TIMEOUT: freeze(0x0b, 0x2e, 0x02),
  COMMANDS_CLEARED_BY_DEVICE_SERVER: freeze(0x0b, 0x2f, 0x02),
  POWER_ON_RESET: freeze(0x06, 0x29, 0x00),
} as const;

function freeze(key: number, asc: number, ascq: number): SenseCondition {
  return Object.freeze({ key, asc, ascq });
}

/** qemu's scsi_sense_from_errno, row for row. 0 is GOOD; anything unlisted is ABORTED COMMAND / I/O PROCESS TERMINATED. */
export function resultFromErrno(errnoValue: number): ScsiResult {
  switch (errnoValue) {
    case 0:
      return good();
    case errno.EDOM:
      return statusOnly(Status.TASK_SET_FULL);
    case errno.ENODEV:
    case errno.EREMOTEIO:
      return checkCondition(Sense.TARGET_FAILURE);
    case errno.EBADE:
      return statusOnly(Status.RESERVATION_CONFLICT);
    case errno.ENODATA:
      return checkCondition(Sense.READ_ERROR);
    case errno.ENOMEDIUM:
      return checkCondition(Sense.MEDIUM_NOT_PRESENT);
    case errno.ENOMEM:
      return checkCondition(Sense.TARGET_FAILURE);
    case errno.EINVAL:
      return checkCondition(Sense.INVALID_FIELD_IN_CDB);
    case errno.ENOSPC:
      return checkCondition(Sense.SPACE_ALLOCATION_FAILED_WRITE_PROTECT);
    default:
      return checkCondition(Sense.IO_ERROR);
  }
}

/**
 * qemu's scsi_sense_from_host_status for a non-zero host byte.
 * Differs from QEMU: host bytes QEMU does not list answer ABORTED COMMAND / I/O PROCESS
 * TERMINATED (retryable) instead of GOOD.
 */
export function resultFromHostStatus(hostStatus: number): ScsiResult {
  switch (hostStatus) {
    case HostStatus.OK:
      return good();
    case HostStatus.NO_CONNECT:
      return checkCondition(HostErrorSense.LUN_NOT_RESPONDING);
    case HostStatus.BUS_BUSY:
      return statusOnly(Status.BUSY);
    case HostStatus.TIME_OUT:
      return checkCondition(HostErrorSense.COMMAND_TIMEOUT);
    case HostStatus.BAD_TARGET:
      return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    case HostStatus.ABORT:
      return checkCondition(HostErrorSense.COMMANDS_CLEARED_BY_DEVICE_SERVER);
    case HostStatus.RESET:
      return checkCondition(HostErrorSense.POWER_ON_RESET);
    case HostStatus.TRANSPORT_DISRUPTED:
      return checkCondition(Sense.TRANSPORT_DISRUPTED);
    case HostStatus.TARGET_FAILURE:
      return checkCondition(Sense.TARGET_FAILURE);
    case HostStatus.NEXUS_FAILURE:
      return statusOnly(Status.RESERVATION_CONFLICT);
    case HostStatus.ALLOC_FAILURE:
      return checkCondition(Sense.SPACE_ALLOCATION_FAILED_WRITE_PROTECT);
    case HostStatus.MEDIUM_ERROR:
      return checkCondition(Sense.READ_ERROR);
    default:
      return checkCondition(Sense.IO_ERROR);
  }
}

/** The errnos that mean "this fd does not offer that interface at all" rather than "the command failed". */
export function isInterfaceMissing(errnoValue: number): boolean {
  return errnoValue === errno.ENOTTY || errnoValue === errno.EOPNOTSUPP;
}

/** The answer for a device that cannot take PERSISTENT RESERVE commands at all. */
export function notPrCapable(): ScsiResult {
  return checkCondition(Sense.INVALID_OPCODE);
}

function resultFromIoctlErrno(errnoValue: number): ScsiResult {
  if (isInterfaceMissing(errnoValue)) return notPrCapable();
  // ioctl returned -1 but errno reads 0: the failure is real, its cause unknown.
  if (errnoValue === 0) return checkCondition(Sense.IO_ERROR);
  return resultFromErrno(errnoValue);
}

/** The fields of an SG_IO outcome that decide the result (ffi/sg-io.ts SgIoResult fits). */
export interface SgIoOutcome {
  readonly errno?: number;
  readonly status: number;
  readonly hostStatus: number;
  readonly driverStatus: number;
  readonly sense: Uint8Array;
  readonly dataIn: Uint8Array;
}

const EMPTY = Buffer.alloc(0);

/**
 * do_sgio_worker's decision order: ioctl errno, then host status, then driver timeout
 * (BUSY), then the device's own status with its sense bytes unchanged. Data-in is kept only
 * for GOOD; sense only for CHECK CONDITION.
 */
export function resultFromSgIo(outcome: SgIoOutcome): ScsiResult {
  if (outcome.errno !== undefined) return resultFromIoctlErrno(outcome.errno);
  if (outcome.hostStatus !== HostStatus.OK) return resultFromHostStatus(outcome.hostStatus & 0xff);
  if ((outcome.driverStatus & 0x0f) === DriverStatus.TIMEOUT) return statusOnly(Status.BUSY);
  const status = outcome.status & 0xff;
  if (status === Status.GOOD) return good(Buffer.from(outcome.dataIn));
  if (status === Status.CHECK_CONDITION) return { status, sense: Buffer.from(outcome.sense), dataIn: EMPTY };
  return statusOnly(status);
}

/**
 * The return of an IOC_PR_* ioctl. Negative (ret -1): errno. Positive: the SCSI result word
 * (host byte << 16 | status byte), which is also how 6.5+ PR_STS_* values are encoded.
 * The kernel has already consumed any sense data (sd only logs it), so a CHECK CONDITION
 * can only be reported as ABORTED COMMAND / I/O PROCESS TERMINATED, the kernel's own
 * PR_STS_IOERR meaning.
 */
export function resultFromBlockPrReturn(ret: number, errnoValue: number): ScsiResult {
  if (ret === 0) return good();
  if (ret < 0) return resultFromIoctlErrno(errnoValue);
  const hostByte = (ret >>> 16) & 0xff;
  const statusByte = ret & 0xff;
  if (hostByte !== HostStatus.OK) return resultFromHostStatus(hostByte);
  // A positive word with neither host nor status byte set (e.g. a pre-5.14 driver byte alone) is still a failure.
  if (statusByte === Status.GOOD || statusByte === Status.CHECK_CONDITION) return checkCondition(Sense.IO_ERROR);
  return statusOnly(statusByte);
}
