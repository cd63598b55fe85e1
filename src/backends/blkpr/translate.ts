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

import { decodePrOutCdb, PR_CDB_LENGTH } from '../../scsi/cdb';
import { isPrType, LU_SCOPE, PrOutAction, PrType } from '../../scsi/constants';
import { decodePrOutParameters } from '../../scsi/parameter-list';
import { checkCondition, Sense, type ScsiResult } from '../../scsi/sense';

/** enum pr_type of <linux/pr.h> (checked against ffi/block-pr.ts BlockPrType in the unit tests). */
export const KernelPrType = {
  WRITE_EXCLUSIVE: 1,
  EXCLUSIVE_ACCESS: 2,
  WRITE_EXCLUSIVE_REG_ONLY: 3,
  EXCLUSIVE_ACCESS_REG_ONLY: 4,
  WRITE_EXCLUSIVE_ALL_REGS: 5,
  EXCLUSIVE_ACCESS_ALL_REGS: 6,
} as const;
export type KernelPrTypeCode = (typeof KernelPrType)[keyof typeof KernelPrType];

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

const TYPED_ACTIONS: ReadonlySet<number> = new Set([PrOutAction.RESERVE, PrOutAction.RELEASE, PrOutAction.PREEMPT, PrOutAction.PREEMPT_AND_ABORT]);

/** Translates a PR OUT command; `cdb` must already be known to be a PR OUT CDB. */
export function translatePrOut(cdb: Uint8Array, dataOut: Uint8Array): Translation {
  if (cdb.length < PR_CDB_LENGTH) return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `CDB is ${cdb.length} bytes`);
  const fields = decodePrOutCdb(cdb);
  const action = fields.action;
  switch (action) {
    case PrOutAction.REGISTER:
    case PrOutAction.RESERVE:
    case PrOutAction.RELEASE:
    case PrOutAction.CLEAR:
    case PrOutAction.PREEMPT:
    case PrOutAction.PREEMPT_AND_ABORT:
    case PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY:
      break;
    case PrOutAction.REGISTER_AND_MOVE:
      return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), 'REGISTER AND MOVE has no IOC_PR_* ioctl');
    default:
      return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `service action 0x${action.toString(16)} has no IOC_PR_* ioctl`);
  }
  let kernelType: KernelPrTypeCode | undefined;
  if (TYPED_ACTIONS.has(action)) {
    if (fields.scope !== LU_SCOPE) return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `scope ${fields.scope} is not LU_SCOPE`);
    kernelType = isPrType(fields.type) ? scsiTypeToKernel(fields.type) : undefined;
    if (kernelType === undefined) return refuse(checkCondition(Sense.INVALID_FIELD_IN_CDB), `type ${fields.type} is not a persistent reservation type`);
  }
  if (fields.parameterListLength !== dataOut.length) {
    return refuse(checkCondition(Sense.PARAMETER_LIST_LENGTH_ERROR), `CDB announces ${fields.parameterListLength} parameter bytes, ${dataOut.length} were sent`);
  }
  const decoded = decodePrOutParameters(dataOut);
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
