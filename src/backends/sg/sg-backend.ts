// The SG_IO backend: PERSISTENT RESERVE commands go unchanged to the device behind the
// client's fd, and the device's own status and sense come back unchanged. Right for a
// single-path SCSI disk or an sg node; on a dm-multipath map the kernel would send each
// command down one path only, which is why the resolver never picks this for mpath maps.

import { checkCondition, Sense, type ScsiResult } from '../../scsi/sense';
import type { DeviceHandle, ExecuteOptions, PrBackend } from '../backend';
import { deviceKey } from '../../device';
import type { PrCommand } from '../../scsi/pr-command';
import { DeviceQueue } from './device-queue';
import { DEFAULT_SG_TIMEOUT_MS, passThroughPr } from './pass-through';

export interface SgBackendOptions {
  /** SCSI command timeout handed to the kernel, in ms (default 30 s). */
  readonly timeoutMs?: number;
  /** Share one queue between backends that may drive the same device. */
  readonly queue?: DeviceQueue;
}

export class SgBackend implements PrBackend {
  readonly name = 'sg' as const;
  readonly timeoutMs: number;
  private readonly queue: DeviceQueue;
  private closed = false;

  constructor(options: SgBackendOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_SG_TIMEOUT_MS;
    if (!Number.isInteger(this.timeoutMs) || this.timeoutMs <= 0) throw new RangeError(`timeoutMs must be a positive integer, got ${this.timeoutMs}`);
    this.queue = options.queue ?? new DeviceQueue();
  }

  async execute(device: DeviceHandle, command: PrCommand, options?: ExecuteOptions): Promise<ScsiResult> {
    if (this.closed) throw new Error('SgBackend is closed');
    if (device.fd < 0) return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    return this.queue.run(deviceKey(device), async () => (await passThroughPr(device.fd, command, this.timeoutMs)).result, options?.signal);
  }

  /** Waits for queued and running commands; refuses new ones. */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue.idle();
  }
}
