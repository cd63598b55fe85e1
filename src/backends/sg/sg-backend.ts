// The SG_IO backend: PERSISTENT RESERVE commands go unchanged to the device behind the
// client's fd, and the device's own status and sense come back unchanged. Right for a
// single-path SCSI disk or an sg node; on a dm-multipath map the kernel would send each
// command down one path only, which is why the resolver never picks this for mpath maps.

import type { ScsiResult } from '../../scsi/sense';
import type { DeviceHandle, ExecuteOptions, PrBackend } from '../backend';
import { KernelCommandQueue, scsiTimeoutMs } from '../kernel-queue';
import type { PrCommand } from '../../scsi/pr-command';
import type { DeviceQueue } from './device-queue';
import { passThroughPr } from './pass-through';

export interface SgBackendOptions {
  /** SCSI command timeout handed to the kernel, in ms (default 30 s). */
  readonly timeoutMs?: number;
  /** Share one queue between backends that may drive the same device. */
  readonly queue?: DeviceQueue;
}

export class SgBackend implements PrBackend {
  readonly name = 'sg' as const;
  readonly timeoutMs: number;
  private readonly commands: KernelCommandQueue;

  constructor(options: SgBackendOptions = {}) {
    this.timeoutMs = scsiTimeoutMs(options.timeoutMs);
    this.commands = new KernelCommandQueue('SgBackend', options.queue);
  }

  async execute(device: DeviceHandle, command: PrCommand, options?: ExecuteOptions): Promise<ScsiResult> {
    return this.commands.run(device, async (fd) => (await passThroughPr(fd, command, this.timeoutMs)).result, options);
  }

  /** Waits for queued and running commands; refuses new ones. */
  close(): Promise<void> {
    return this.commands.close();
  }
}
