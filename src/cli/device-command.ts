// `mpath-pr in` and `mpath-pr out`: one PR command on one device, either in-process or
// through a running daemon's socket (exactly what QEMU would send).

import fs from 'node:fs';
import { bindBackend, type PrExecutor } from '../backends/pr-commands';
import { PrHelperClient } from '../protocol/client';
import { describeDeviceFd } from '../device';
import type { ScsiResult } from '../scsi/sense';
import { createBackends } from '../daemon/daemon';
import type { DaemonConfig } from '../daemon/config';

export class DeviceOpenError extends Error {
  constructor(
    readonly device: string,
    cause: Error,
  ) {
    super(`cannot open ${device}: ${cause.message}`);
    this.name = 'DeviceOpenError';
  }
}

export class SocketError extends Error {
  constructor(socketPath: string, cause: Error) {
    super(`cannot talk to the daemon at ${socketPath}: ${cause.message}`);
    this.name = 'SocketError';
  }
}

export interface DeviceCommandTarget {
  readonly device: string;
  /** PR OUT needs a writable fd (qemu-pr-helper refuses PR OUT on O_RDONLY). */
  readonly writable: boolean;
  /** Through a running daemon. */
  readonly socket?: string;
  /** In-process backend settings, when there is no socket. */
  readonly backend: Pick<DaemonConfig, 'backend' | 'statePath' | 'initiator' | 'paths'>;
}

/** Opens the device, runs `body` with an executor for it, and cleans everything up. */
export async function withDevice<T>(target: DeviceCommandTarget, body: (run: PrExecutor) => Promise<T>): Promise<T> {
  let fd: number;
  try {
    // O_NONBLOCK as sg_persist does, so opening a tape or a busy device never hangs.
    fd = fs.openSync(target.device, (target.writable ? fs.constants.O_RDWR : fs.constants.O_RDONLY) | fs.constants.O_NONBLOCK);
  } catch (error) {
    throw new DeviceOpenError(target.device, error as Error);
  }
  try {
    if (target.socket) {
      const client = new PrHelperClient();
      try {
        await client.connect(target.socket);
      } catch (error) {
        throw new SocketError(target.socket, error as Error);
      }
      try {
        return await body(async (cdb, dataOut): Promise<ScsiResult> => {
          try {
            const reply = await client.execute(fd, cdb, dataOut);
            return { status: reply.status, sense: reply.sense, dataIn: reply.data };
          } catch (error) {
            throw new SocketError(target.socket!, error as Error);
          }
        });
      } finally {
        client.close();
      }
    }
    const { resolver } = createBackends(target.backend);
    try {
      const handle = describeDeviceFd(fd);
      return await body(bindBackend(resolver, handle));
    } finally {
      await resolver.close();
    }
  } finally {
    fs.closeSync(fd);
  }
}
