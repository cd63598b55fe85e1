// MPATH_PR_* return codes of libmpathpersist → SCSI status and sense, as qemu-pr-helper's
// mpath_reconstruct_sense() does it (QEMU scsi/qemu-pr-helper.c), so guests see
// the same answers as with qemu-pr-helper.
//
// libmpathpersist swallows the device's sense data and only returns a class. For the
// "device trouble" classes qemu sends TEST UNIT READY to recover a real sense; that step is
// injected here as `testUnitReady` so the backend can do it over SG_IO on the fd.

import { MPATH_PR, mpathPrName } from '../../../ffi/libmpathpersist';
import { Status } from '../../scsi/constants';
import { checkCondition, reservationConflict, Sense, statusOnly, type ScsiResult, type SenseCondition } from '../../scsi/sense';

export type MpathResultPlan =
  | { readonly action: 'good' }
  | { readonly action: 'reservation-conflict' }
  | { readonly action: 'check-condition'; readonly sense: SenseCondition }
  /** Send TEST UNIT READY; return its result if it is not GOOD, else CHECK CONDITION with `fallback`. */
  | { readonly action: 'test-unit-ready'; readonly fallback: SenseCondition };

/** Send TEST UNIT READY for the device's own sense, with `fallback` when it has none. */
function askTheDevice(fallback: SenseCondition): MpathResultPlan {
  return { action: 'test-unit-ready', fallback };
}

function answer(sense: SenseCondition): MpathResultPlan {
  return { action: 'check-condition', sense };
}

/** The fixed part of the mapping, one row per return code. */
const PLANS: ReadonlyMap<number, MpathResultPlan> = new Map([
  [MPATH_PR.SUCCESS, { action: 'good' }],
  [MPATH_PR.SENSE_NOT_READY, askTheDevice(Sense.NOT_READY_CAUSE_NOT_REPORTABLE)],
  [MPATH_PR.SENSE_MEDIUM_ERROR, askTheDevice(Sense.READ_ERROR)],
  [MPATH_PR.SENSE_HARDWARE_ERROR, askTheDevice(Sense.TARGET_FAILURE)],
  [MPATH_PR.SENSE_ABORTED_COMMAND, askTheDevice(Sense.IO_ERROR)],
  // The library retried the command and lost the unit attention; a bus reset makes the
  // guest re-read what it needs.
  [MPATH_PR.SENSE_UNIT_ATTENTION, answer(Sense.SCSI_BUS_RESET)],
  [MPATH_PR.SENSE_INVALID_OP, answer(Sense.INVALID_OPCODE)],
  // Sense key 5 with the ASC lost; qemu guesses INVALID FIELD IN PARAMETER LIST.
  [MPATH_PR.ILLEGAL_REQ, answer(Sense.INVALID_FIELD_IN_PARAMETER_LIST)],
  [MPATH_PR.NO_SENSE, answer(Sense.NO_SENSE)],
  [MPATH_PR.RESERV_CONFLICT, { action: 'reservation-conflict' }],
]);

// SYNTAX_ERROR (including "configured reservation key doesn't match"), FILE_ERROR,
// DMMP_ERROR, THREAD_ERROR, OTHER, MALFORMED, the newer internal codes, and the raw -1 that
// 0.9.4 returns when ioctl() fails.
const OTHERWISE = answer(Sense.LUN_COMMUNICATION_FAILURE);

/** The fixed part of the mapping for one return code (pure, no I/O). */
export function planMpathResult(rc: number): MpathResultPlan {
  return PLANS.get(rc) ?? OTHERWISE;
}

export interface MpathResultOptions {
  /**
   * Sends TEST UNIT READY to the device (over SG_IO on the same fd). Resolves with the
   * device's answer; a rejection counts as "no better sense available".
   */
  readonly testUnitReady: () => Promise<ScsiResult>;
  /** Data-in for a successful PR IN. */
  readonly dataIn?: Buffer;
}

/** The ScsiResult for a libmpathpersist return code. */
export async function mpathResultToScsi(rc: number, options: MpathResultOptions): Promise<ScsiResult> {
  const plan = planMpathResult(rc);
  switch (plan.action) {
    case 'good':
      return { status: Status.GOOD, sense: Buffer.alloc(0), dataIn: options.dataIn ?? Buffer.alloc(0) };
    case 'reservation-conflict':
      return reservationConflict();
    case 'check-condition':
      return checkCondition(plan.sense);
    case 'test-unit-ready': {
      let tur: ScsiResult | undefined;
      try {
        tur = await options.testUnitReady();
      } catch {
        tur = undefined;
      }
      if (tur && tur.status !== Status.GOOD) {
        return tur.status === Status.CHECK_CONDITION ? { status: tur.status, sense: tur.sense, dataIn: Buffer.alloc(0) } : statusOnly(tur.status);
      }
      return checkCondition(plan.fallback);
    }
  }
}

const DESCRIPTIONS: Record<number, string> = {
  [MPATH_PR.SYNTAX_ERROR]: 'invalid parameter, or the key does not match multipath.conf reservation_key',
  [MPATH_PR.FILE_ERROR]: 'the device node could not be opened or is not a block device',
  [MPATH_PR.DMMP_ERROR]: 'the fd is not a dm-multipath map, or device-mapper failed',
  [MPATH_PR.THREAD_ERROR]: 'libmpathpersist could not create its per-path threads',
  [MPATH_PR.OTHER]: 'transport or driver error, or no usable path',
  [MPATH_PR.SKIP]: 'SG_IO ioctl failed (libmpathpersist 0.9.4 returns -1)',
};

/** A log line for a return code: its name and what it usually means. */
export function describeMpathResult(rc: number): string {
  const why = DESCRIPTIONS[rc];
  return why ? `${mpathPrName(rc)}: ${why}` : mpathPrName(rc);
}
