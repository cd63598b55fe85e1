// What the mpath backend does with one admitted command, decided without I/O. The checks
// are qemu-pr-helper's for multipath fds (QEMU scsi/qemu-pr-helper.c),
// with two documented refusals where the library cannot do the job:
//
// - REGISTER AND MOVE (SA 7): struct prout_param_descriptor cannot carry its parameter list
//   and libmpathpersist answers MPATH_PR_OTHER; refused with INVALID FIELD IN CDB, as
//   qemu-pr-helper does.
// - SPEC_I_PT=1: libmpathpersist 0.9.4 sends the TransportIDs on the first path only and
//   clears the bit for the others, so the registrations it creates for other initiators
//   depend on which path came first; refused with INVALID FIELD IN PARAMETER LIST (the
//   response SPC-4 gives a device server that does not support SPEC_I_PT). qemu-pr-helper
//   passes it through.
//
// PR IN data describes the logical unit, so any path gives the whole answer: every PR IN
// goes by SG_IO on the first path that answers, with libmpathpersist as the fallback when
// none does. READ FULL STATUS has no fallback: the library cannot return it safely (its
// buffer overflows past 30 descriptors) and qemu-pr-helper refuses it.

import { PR_OUT_BASIC_PARAMETER_LENGTH } from '../../scsi/parameter-list';
import type { PrCommand, PrInCommand, PrOutCommand } from '../../scsi/pr-command';
import { checkCondition, Sense, type ScsiResult } from '../../scsi/sense';

export type MpathPlan =
  | { readonly kind: 'refuse'; readonly result: ScsiResult; readonly reason: string }
  /** PR IN by SG_IO on a path; `libraryFallback` when libmpathpersist can answer it too. */
  | { readonly kind: 'in'; readonly command: PrInCommand; readonly serviceAction: number; readonly allocationLength: number; readonly libraryFallback: boolean }
  | {
      readonly kind: 'out';
      /** The guest's command, sent unchanged to each path when the backend fans it out itself. */
      readonly command: PrOutCommand;
      readonly serviceAction: number;
      readonly scope: number;
      readonly type: number;
      readonly reservationKey: bigint;
      readonly serviceActionKey: bigint;
      readonly aptpl: boolean;
      readonly allTgPt: boolean;
    };

function refuse(result: ScsiResult, reason: string): MpathPlan {
  return { kind: 'refuse', result, reason };
}

/** The plan for one admitted command. */
export function planMpathCommand(command: PrCommand): MpathPlan {
  if (command.direction === 'in') {
    const { code, allocationLength } = command;
    switch (command.action) {
      case 'read-keys':
      case 'read-reservation':
      case 'report-capabilities':
        return { kind: 'in', command, serviceAction: code, allocationLength, libraryFallback: true };
      case 'read-full-status':
        return { kind: 'in', command, serviceAction: code, allocationLength, libraryFallback: false };
      default:
        return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `PR IN service action ${code} does not exist`);
    }
  }
  const { code, scope, type } = command;
  if (command.action === 'register-move') {
    return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), 'REGISTER AND MOVE is not supported on dm-multipath maps (libmpathpersist cannot send it)');
  }
  if (command.action === undefined || command.action === 'replace-lost') {
    return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `PR OUT service action ${code} does not exist`);
  }
  if (command.parameterList.length < PR_OUT_BASIC_PARAMETER_LENGTH) {
    return refuse(checkCondition(Sense.PARAMETER_LIST_LENGTH_ERROR), `parameter list is ${command.parameterList.length} bytes, less than 24`);
  }
  if (command.specIPT) {
    return refuse(
      checkCondition(Sense.INVALID_FIELD_IN_PARAMETER_LIST),
      'SPEC_I_PT is not supported on dm-multipath maps (libmpathpersist 0.9.4 applies it on one path only)',
    );
  }
  if (!command.parameters.ok) return refuse(checkCondition(command.parameters.sense), command.parameters.reason);
  const p = command.parameters.value;
  return {
    kind: 'out',
    command,
    serviceAction: code,
    scope,
    type,
    reservationKey: p.reservationKey,
    serviceActionKey: p.serviceActionKey,
    aptpl: p.aptpl,
    allTgPt: p.allTgPt,
  };
}

/** MPATH_F_* flag bits for struct prout_param_descriptor's sa_flags. */
export function libraryFlags(plan: { aptpl: boolean; allTgPt: boolean }): number {
  return (plan.aptpl ? 0x01 : 0) | (plan.allTgPt ? 0x04 : 0);
}

/** A PR IN the backend sends (on a path, or to the library). */
export type MpathInPlan = Extract<MpathPlan, { kind: 'in' }>;
/** A PR OUT the backend sends (fanned out over the paths, or to the library). */
export type MpathOutPlan = Extract<MpathPlan, { kind: 'out' }>;
