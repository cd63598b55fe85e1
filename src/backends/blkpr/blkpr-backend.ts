// The block-layer backend: PR OUT through the kernel's IOC_PR_* ioctls (pr_ops of sd,
// nvme and dm), PR IN through SG_IO because kernel 6.1 has no PR IN ioctls.
//
// On a dm map (kernel 6.1, drivers/md/dm.c):
//   - REGISTER goes down every path of the table; if one path fails, dm unregisters the
//     new key from every path again ("unregister all paths if we failed to register any
//     path") and returns the first failure. A failed plain REGISTER can therefore remove a
//     registration this nexus already had under that key.
//   - RESERVE, RELEASE, PREEMPT and CLEAR go down the one path dm_prepare_ioctl picks.
//   - A plain CHECK CONDITION (most often a pending UNIT ATTENTION) is retried, see
//     PR_OUT_ATTEMPTS; on a dm map REGISTER, dm's rollback has run before the retry.
//     A RELEASE of a Write/Exclusive (not registrants-only, not all-registrants)
//     reservation taken through another path is a no-op on the target (SPC: released only
//     by the holding I_T nexus), and succeeds anyway. This is what the mpath backend fixes.
// PR IN on a dm map is sent with SG_IO on the map itself (dm passes SG_IO to its current
// path, the same path PR OUT uses); if that fails before reaching a device, each slave
// path in /sys/dev/block/M:m/slaves whose SCSI state is "running" is tried in turn.
// A device with no SG_IO at all (NVMe on 6.1) answers PR IN with INVALID OPERATION CODE.

import * as fs from 'fs';
import { fstat } from '../../../ffi/libc';
import { prClear, prPreempt, prRegister, prRelease, prReserve, PR_FL_IGNORE_KEY, type BlockPrOutcome } from '../../../ffi/block-pr';
import { Status } from '../../scsi/constants';
import { resultFromBlockPrReturn } from '../../scsi/errno-sense';
import { statusOnly, type ScsiResult } from '../../scsi/sense';
import type { DeviceHandle, ExecuteOptions, PrBackend } from '../backend';
import { KernelCommandQueue, scsiTimeoutMs } from '../kernel-queue';
import { describeHandle, hostDeviceTree, sameDevNumber, type MapPath, type DeviceTree } from '../../device';
import type { PrCommand, PrInCommand } from '../../scsi/pr-command';
import type { DeviceQueue } from '../sg/device-queue';
import { passThroughPr, type PassThroughOutcome } from '../sg/pass-through';
import { translatePrOut, type BlockPrOperation } from './translate';

export interface BlkprBackendOptions {
  /** Timeout for the SG_IO used by PR IN, in ms. PR OUT ioctls use the kernel's own (sd: 30 s). */
  readonly timeoutMs?: number;
  readonly queue?: DeviceQueue;
  /** Where sysfs and the path nodes are; tests pass a fake tree. Default the host's. */
  readonly deviceTree?: DeviceTree;
  /** Tries per PR OUT when the target answers CHECK CONDITION (default PR_OUT_ATTEMPTS; 1 = no retry). */
  readonly prOutAttempts?: number;
}

/**
 * How often a PR OUT ioctl is tried when the target answers CHECK CONDITION. On 6.1,
 * sd_pr_command does not retry a UNIT ATTENTION (6.9 added that, up to 5 times), and the
 * ioctl discards the sense, so a pending unit attention (after another nexus's PREEMPT,
 * CLEAR or RELEASE, or a path reset) fails the next PR OUT with nothing the client can act
 * on. A target that answers CHECK CONDITION has not performed the command (SPC-4 and
 * SAM-5: a unit attention is reported instead of running it), so sending it again is safe;
 * a deterministic error such as ILLEGAL REQUEST just comes back again.
 */
export const PR_OUT_ATTEMPTS = 3;

function isBareCheckCondition(ret: number): boolean {
  return ret > 0 && (ret & 0xff) === Status.CHECK_CONDITION && ((ret >>> 16) & 0xff) === 0;
}

/** Runs one translated operation through the matching ioctl. */
export function runBlockPrOperation(fd: number, operation: BlockPrOperation): Promise<BlockPrOutcome> {
  switch (operation.op) {
    case 'register':
      return prRegister(fd, { oldKey: operation.oldKey, newKey: operation.newKey, flags: operation.ignoreExistingKey ? PR_FL_IGNORE_KEY : 0 });
    case 'reserve':
      return prReserve(fd, { key: operation.key, type: operation.type });
    case 'release':
      return prRelease(fd, { key: operation.key, type: operation.type });
    case 'preempt':
      return prPreempt(fd, { oldKey: operation.key, newKey: operation.victimKey, type: operation.type, abort: operation.abort });
    case 'clear':
      return prClear(fd, { key: operation.key });
  }
}

export class BlkprBackend implements PrBackend {
  readonly name = 'blkpr' as const;
  readonly timeoutMs: number;
  private readonly commands: KernelCommandQueue;
  private readonly deviceTree: DeviceTree;
  private readonly prOutAttempts: number;

  constructor(options: BlkprBackendOptions = {}) {
    this.timeoutMs = scsiTimeoutMs(options.timeoutMs);
    this.commands = new KernelCommandQueue('BlkprBackend', options.queue);
    this.deviceTree = options.deviceTree ?? hostDeviceTree;
    this.prOutAttempts = options.prOutAttempts ?? PR_OUT_ATTEMPTS;
    if (!Number.isInteger(this.prOutAttempts) || this.prOutAttempts < 1) throw new RangeError(`prOutAttempts must be a positive integer, got ${this.prOutAttempts}`);
  }

  async execute(device: DeviceHandle, command: PrCommand, options?: ExecuteOptions): Promise<ScsiResult> {
    this.commands.assertOpen();
    if (command.direction === 'in') return this.commands.run(device, () => this.prIn(device, command), options);
    const translation = translatePrOut(command);
    if (!translation.ok) return translation.result;
    const operation = translation.operation;
    return this.commands.run(
      device,
      async (fd) => {
        let outcome: BlockPrOutcome;
        for (let attempt = 1; ; attempt++) {
          try {
            outcome = await runBlockPrOperation(fd, operation);
          } catch {
            return statusOnly(Status.TASK_SET_FULL); // koffi's async queue is full
          }
          if (!isBareCheckCondition(outcome.ret) || attempt >= this.prOutAttempts) break;
        }
        return resultFromBlockPrReturn(outcome.ret, outcome.errno);
      },
      options,
    );
  }

  private async prIn(device: DeviceHandle, command: PrInCommand): Promise<ScsiResult> {
    const direct = await passThroughPr(device.fd, command, this.timeoutMs);
    if (direct.errno === undefined) return direct.result;
    const description = describeHandle(device, this.deviceTree);
    if (description.class !== 'dm-multipath' && description.class !== 'dm') return direct.result;
    for (const mapPath of description.paths) {
      if (mapPath.scsiState !== undefined && mapPath.scsiState !== 'running') continue;
      const outcome = await this.prInOnPath(mapPath, command);
      if (outcome && outcome.errno === undefined) return outcome.result;
    }
    return direct.result;
  }

  /** Opens the path's node read-only (checking it is the device sysfs names), sends, closes. */
  private async prInOnPath(mapPath: MapPath, command: PrInCommand): Promise<PassThroughOutcome | undefined> {
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(this.deviceTree.node(mapPath.name), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch {
      return undefined;
    }
    try {
      const status = fstat(handle.fd);
      if (!status.isBlock || !sameDevNumber(status.rdev, mapPath.rdev)) return undefined;
      return await passThroughPr(handle.fd, command, this.timeoutMs);
    } finally {
      await handle.close();
    }
  }

  /** Waits for queued and running commands; refuses new ones. */
  close(): Promise<void> {
    return this.commands.close();
  }
}
