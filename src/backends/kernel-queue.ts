// What every backend that sends commands to the kernel on the client's own fd (sg, blkpr,
// mpath) keeps: one command at a time per device (./sg/device-queue.ts), no command once
// the backend is closed, and no device I/O without an open fd.

import { deviceKey, type DeviceHandle } from '../device';
import { checkCondition, Sense, type ScsiResult } from '../scsi/sense';
import type { ExecuteOptions } from './backend';
import { DeviceQueue } from './sg/device-queue';
import { DEFAULT_SG_TIMEOUT_MS } from './sg/pass-through';

export class KernelCommandQueue {
  private closed = false;

  /**
   * @param backend the backend's class name, for the error a command after close() gets.
   * @param queue shared between backends that may drive the same device; a private one otherwise.
   */
  constructor(
    private readonly backend: string,
    readonly queue: DeviceQueue = new DeviceQueue(),
  ) {}

  /** Throws once the backend is closed: a command after close() is the caller's bug, not a SCSI answer. */
  assertOpen(): void {
    if (this.closed) throw new Error(`${this.backend} is closed`);
  }

  /**
   * Runs `task` with the device's fd once the device's earlier commands have settled
   * (`key` names the device's lane, by default its dev_t); LUN COMMUNICATION FAILURE at once
   * when the handle has no open fd.
   */
  async run(device: DeviceHandle, task: (fd: number) => Promise<ScsiResult>, options?: ExecuteOptions, key = deviceKey(device)): Promise<ScsiResult> {
    this.assertOpen();
    if (device.fd < 0) return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    return this.queue.run(key, () => task(device.fd), options?.signal);
  }

  /** Refuses new commands and waits for the queued and running ones. */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue.idle();
  }
}

/** The SCSI command timeout a backend was given, or the default; anything but a positive integer is a configuration error. */
export function scsiTimeoutMs(timeoutMs: number | undefined): number {
  const value = timeoutMs ?? DEFAULT_SG_TIMEOUT_MS;
  if (!Number.isInteger(value) || value <= 0) throw new RangeError(`timeoutMs must be a positive integer, got ${value}`);
  return value;
}
