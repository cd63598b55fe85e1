// PERSISTENT RESERVE OUT (CDB + parameter list) → one IOC_PR_* ioctl. Pure.
//
// What <linux/pr.h> on kernel 6.1 can express, and what it cannot:
//   REGISTER                  → IOC_PR_REGISTER {old_key, new_key}
//   REGISTER AND IGNORE       → IOC_PR_REGISTER with PR_FL_IGNORE_KEY
//   RESERVE / RELEASE         → IOC_PR_RESERVE / IOC_PR_RELEASE {key, type}
//   PREEMPT (AND ABORT)       → IOC_PR_PREEMPT / IOC_PR_PREEMPT_ABORT {old_key, new_key, type}
//   CLEAR                     → IOC_PR_CLEAR {key}
//   REGISTER AND MOVE, REPLACE LOST RESERVATION, other SAs
//                             → INVALID FIELD IN CDB: no ioctl exists for them.
//   SPEC_I_PT=1               → INVALID FIELD IN PARAMETER LIST: pr_registration carries no
//                               TransportIDs.
//   ALL_TG_PT=1 (REGISTER*)   → INVALID FIELD IN PARAMETER LIST: sd_pr_command always sends
//                               ALL_TG_PT=0 and there is no flag for it.
//   APTPL                     → accepted either way, but NOT honoured as asked: 6.1's
//                               sd_pr_register always sets APTPL=1 (and nvme_pr_register
//                               always sets PTPL), and pr_registration has no flag to change
//                               that. Refusing APTPL=0 would refuse nearly every REGISTER a
//                               guest sends, so the register is done and the difference is
//                               documented instead.
//   SCOPE other than LU_SCOPE, or a TYPE that is not one of the six SPC-4 types, on the
//   actions that use them   → INVALID FIELD IN CDB (the kernel has no value to carry them).

import { BlockPrType, type BlockPrTypeCode } from '../../../ffi/block-pr-type';
import { prOutAction } from '../../scsi/actions';
import { isPrType, LU_SCOPE, PrOutAction, PrType } from '../../scsi/constants';
import type { PrOutCommand } from '../../scsi/pr-command';
import { checkCondition, Sense, type ScsiResult } from '../../scsi/sense';

/** enum pr_type of <linux/pr.h>, from the koffi-free ffi/block-pr-type.ts (this module stays pure). */
export const KernelPrType = BlockPrType;
export type KernelPrTypeCode = BlockPrTypeCode;

const SCSI_TO_KERNEL_TYPE: ReadonlyMap<number, KernelPrTypeCode> = new Map<number, KernelPrTypeCode>([
  [PrType.WRITE_EXCLUSIVE, KernelPrType.WRITE_EXCLUSIVE],
  [PrType.EXCLUSIVE_ACCESS, KernelPrType.EXCLUSIVE_ACCESS],
  [PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, KernelPrType.WRITE_EXCLUSIVE_REG_ONLY],
  [PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, KernelPrType.EXCLUSIVE_ACCESS_REG_ONLY],
  [PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, KernelPrType.WRITE_EXCLUSIVE_ALL_REGS],
  [PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS, KernelPrType.EXCLUSIVE_ACCESS_ALL_REGS],
]);

/** SCSI TYPE code (1,3,5,6,7,8) → kernel enum pr_type (1..6); undefined for anything else. */
export function scsiTypeToKernel(scsiType: number): KernelPrTypeCode | undefined {
  return SCSI_TO_KERNEL_TYPE.get(scsiType);
}

export type BlockPrOperation =
  | { readonly op: 'register'; readonly oldKey: bigint; readonly newKey: bigint; readonly ignoreExistingKey: boolean }
  | { readonly op: 'reserve'; readonly key: bigint; readonly type: KernelPrTypeCode }
  | { readonly op: 'release'; readonly key: bigint; readonly type: KernelPrTypeCode }
  | { readonly op: 'preempt'; readonly key: bigint; readonly victimKey: bigint; readonly type: KernelPrTypeCode; readonly abort: boolean }
  | { readonly op: 'clear'; readonly key: bigint };

export type Translation = { readonly ok: true; readonly operation: BlockPrOperation } | { readonly ok: false; readonly result: ScsiResult; readonly reason: string };

function refuse(result: ScsiResult, reason: string): Translation {
  return { ok: false, result, reason };
}

/** Translates an admitted PR OUT command into the IOC_PR_* operation that does the same. */
export function translatePrOut(command: PrOutCommand): Translation {
  const action = command.code;
  switch (command.action) {
    case 'register':
    case 'reserve':
    case 'release':
    case 'clear':
    case 'preempt':
    case 'preempt-abort':
    case 'register-ignore':
      break;
    case 'register-move':
      return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), 'REGISTER AND MOVE has no IOC_PR_* ioctl');
    default:
      return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `service action 0x${action.toString(16)} has no IOC_PR_* ioctl`);
  }
  let kernelType: KernelPrTypeCode | undefined;
  if (prOutAction(command.action).usesType) {
    if (command.scope !== LU_SCOPE) return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `scope ${command.scope} is not LU_SCOPE`);
    kernelType = isPrType(command.type) ? scsiTypeToKernel(command.type) : undefined;
    if (kernelType === undefined) return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `type ${command.type} is not a persistent reservation type`);
  }
  const decoded = command.parameters;
  if (!decoded.ok) return refuse(checkCondition(decoded.sense), decoded.reason);
  const p = decoded.value;
  if (p.specIPT) return refuse(checkCondition(Sense.INVALID_FIELD_IN_PARAMETER_LIST), 'SPEC_I_PT: IOC_PR_REGISTER cannot carry TransportIDs');
  const registers = action === PrOutAction.REGISTER || action === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY;
  if (registers && p.allTgPt) return refuse(checkCondition(Sense.INVALID_FIELD_IN_PARAMETER_LIST), 'ALL_TG_PT: IOC_PR_REGISTER always registers one target port');

  switch (action) {
    case PrOutAction.REGISTER:
      return { ok: true, operation: { op: 'register', oldKey: p.reservationKey, newKey: p.serviceActionKey, ignoreExistingKey: false } };
    case PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY:
      return { ok: true, operation: { op: 'register', oldKey: p.reservationKey, newKey: p.serviceActionKey, ignoreExistingKey: true } };
    case PrOutAction.RESERVE:
      return { ok: true, operation: { op: 'reserve', key: p.reservationKey, type: kernelType! } };
    case PrOutAction.RELEASE:
      return { ok: true, operation: { op: 'release', key: p.reservationKey, type: kernelType! } };
    case PrOutAction.CLEAR:
      return { ok: true, operation: { op: 'clear', key: p.reservationKey } };
    default:
      return {
        ok: true,
        operation: { op: 'preempt', key: p.reservationKey, victimKey: p.serviceActionKey, type: kernelType!, abort: action === PrOutAction.PREEMPT_AND_ABORT },
      };
  }
}
