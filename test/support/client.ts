// A QEMU-like client of a running PR helper: the handshake, then each CDB with the device's
// fd attached by SCM_RIGHTS, as PrExecutor so the pr-commands helpers drive it.

import * as fs from 'fs';
import type { PrExecutor } from '../../src/backends/pr-commands';
import { PrHelperClient } from '../../src/protocol/client';

export async function connectClient(socket: string): Promise<PrHelperClient> {
  const client = new PrHelperClient();
  await client.connect(socket);
  return client;
}

/** Runs each command on `fd` through `client`. */
export function executorFor(client: PrHelperClient, fd: number): PrExecutor {
  return async (cdb, dataOut) => {
    const reply = await client.execute(fd, cdb, dataOut);
    return { status: reply.status, sense: reply.sense, dataIn: reply.data };
  };
}

/** Connects to `socket` and opens `device` (flags 'r+' unless told); `body` runs commands on it; both are closed after. */
export async function withClient<T>(socket: string, device: string, body: (run: PrExecutor) => Promise<T>, flags = 'r+'): Promise<T> {
  const fd = fs.openSync(device, flags);
  try {
    const client = await connectClient(socket);
    try {
      return await body(executorFor(client, fd));
    } finally {
      client.close();
    }
  } finally {
    fs.closeSync(fd);
  }
}
