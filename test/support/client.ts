// A QEMU-like client of a running PR helper: the handshake, then each CDB with the device's
// fd attached by SCM_RIGHTS, as PrExecutor so the pr-commands helpers drive it.

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
