// The block layer's persistent-reservation ioctls (<linux/pr.h>), run on the libuv
// threadpool. The kernel turns them into PR OUT commands through the driver's pr_ops
// (sd, nvme, dm). Kernel 6.1 has PR OUT ioctls only; PR IN must go through SG_IO.
//
// Return convention (block/ioctl.c, drivers/scsi/sd.c sd_pr_command on 6.1): a negative
// kernel return becomes ret = -1 with errno; a positive return is the SCSI result word
// (host byte << 16 | status byte, e.g. 0x18 for RESERVATION CONFLICT) and reaches
// userspace unchanged as ret. Later kernels return PR_STS_* values, which were chosen to
// keep that encoding (PR_STS_IOERR = 0x2, PR_STS_RESERVATION_CONFLICT = 0x18,
// PR_STS_PATH_FAILED = DID_NO_CONNECT << 16, ...). Interpreting `ret` is left to
// src/scsi/errno-sense.ts.
//
// Kernel 6.1 requires CAP_SYS_ADMIN for every IOC_PR_* ioctl (EPERM otherwise).

import koffi, { type TypeObject } from 'koffi';
import { BlockPrType, type BlockPrTypeCode } from './block-pr-type';
import { ioctlAsync, iow, NativeMemory, type IoctlOutcome } from './ioctl';

export { BlockPrType, type BlockPrTypeCode };

/** The only flag 6.1 accepts (on REGISTER and RESERVE); any other bit gives EOPNOTSUPP. */
export const PR_FL_IGNORE_KEY = 1 << 0;

export const PrRegistration = koffi.struct('mpr_pr_registration', {
  old_key: 'uint64_t',
  new_key: 'uint64_t',
  flags: 'uint32_t',
  __pad: 'uint32_t',
});
export const PrReservation = koffi.struct('mpr_pr_reservation', {
  key: 'uint64_t',
  type: 'uint32_t',
  flags: 'uint32_t',
});
export const PrPreempt = koffi.struct('mpr_pr_preempt', {
  old_key: 'uint64_t',
  new_key: 'uint64_t',
  type: 'uint32_t',
  flags: 'uint32_t',
});
export const PrClear = koffi.struct('mpr_pr_clear', {
  key: 'uint64_t',
  flags: 'uint32_t',
  __pad: 'uint32_t',
});

export const IOC_PR_REGISTER = iow('p', 200, koffi.sizeof(PrRegistration));
export const IOC_PR_RESERVE = iow('p', 201, koffi.sizeof(PrReservation));
export const IOC_PR_RELEASE = iow('p', 202, koffi.sizeof(PrReservation));
export const IOC_PR_PREEMPT = iow('p', 203, koffi.sizeof(PrPreempt));
export const IOC_PR_PREEMPT_ABORT = iow('p', 204, koffi.sizeof(PrPreempt));
export const IOC_PR_CLEAR = iow('p', 205, koffi.sizeof(PrClear));

export type BlockPrOutcome = IoctlOutcome;

const U64_MAX = (1n << 64n) - 1n;
function checkKey(name: string, key: bigint): bigint {
  if (typeof key !== 'bigint' || key < 0n || key > U64_MAX) throw new RangeError(`${name} must be a 64-bit unsigned bigint`);
  return key;
}

function checkType(type: number): number {
  if (!Object.values(BlockPrType).includes(type as BlockPrTypeCode)) throw new RangeError(`${type} is not a <linux/pr.h> pr_type`);
  return type;
}

async function call(fd: number, request: number, type: TypeObject, value: Record<string, unknown>): Promise<BlockPrOutcome> {
  const memory = new NativeMemory(koffi.sizeof(type));
  try {
    koffi.encode(memory.address, type, value);
    return await ioctlAsync(fd, request, memory.address);
  } finally {
    memory.free();
  }
}

/** IOC_PR_REGISTER: REGISTER, or REGISTER AND IGNORE EXISTING KEY with PR_FL_IGNORE_KEY. New key 0 unregisters. */
export function prRegister(fd: number, args: { oldKey: bigint; newKey: bigint; flags?: number }): Promise<BlockPrOutcome> {
  return call(fd, IOC_PR_REGISTER, PrRegistration, {
    old_key: checkKey('oldKey', args.oldKey),
    new_key: checkKey('newKey', args.newKey),
    flags: args.flags ?? 0,
    __pad: 0,
  });
}

export function prReserve(fd: number, args: { key: bigint; type: BlockPrTypeCode; flags?: number }): Promise<BlockPrOutcome> {
  return call(fd, IOC_PR_RESERVE, PrReservation, { key: checkKey('key', args.key), type: checkType(args.type), flags: args.flags ?? 0 });
}

export function prRelease(fd: number, args: { key: bigint; type: BlockPrTypeCode }): Promise<BlockPrOutcome> {
  return call(fd, IOC_PR_RELEASE, PrReservation, { key: checkKey('key', args.key), type: checkType(args.type), flags: 0 });
}

/** IOC_PR_PREEMPT or, with abort, IOC_PR_PREEMPT_ABORT. oldKey is the caller's key, newKey the key preempted. */
export function prPreempt(fd: number, args: { oldKey: bigint; newKey: bigint; type: BlockPrTypeCode; abort: boolean }): Promise<BlockPrOutcome> {
  return call(fd, args.abort ? IOC_PR_PREEMPT_ABORT : IOC_PR_PREEMPT, PrPreempt, {
    old_key: checkKey('oldKey', args.oldKey),
    new_key: checkKey('newKey', args.newKey),
    type: checkType(args.type),
    flags: 0,
  });
}

export function prClear(fd: number, args: { key: bigint }): Promise<BlockPrOutcome> {
  return call(fd, IOC_PR_CLEAR, PrClear, { key: checkKey('key', args.key), flags: 0, __pad: 0 });
}
