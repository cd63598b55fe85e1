// The backend contract on the host, against the emulated backend: two simulated hosts
// sharing one SQLite state file are two initiators on one LU. Run once with host A as a
// single-path host and once as a two-path multipath host, whose REGISTER makes one
// registration per path.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EmulatedBackend } from '../../src/backends/emulated/emulated-backend';
import { bindBackend } from '../../src/backends/pr-commands';
import type { DeviceHandle } from '../../src/backends/backend';
import { describePrBackendContract, type ContractFixture } from './pr-backend-contract';

function emulatedFixture(pathsA: number): () => Promise<ContractFixture> {
  return async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpath-pr-contract-'));
    const statePath = path.join(dir, 'state.db');
    const lu: DeviceHandle = { fd: -1, path: path.join(dir, 'lu0'), writable: true };
    const hostA = new EmulatedBackend({ statePath, initiator: 'contract-host-a', paths: pathsA });
    const hostB = new EmulatedBackend({ statePath, initiator: 'contract-host-b', paths: 1 });
    return {
      hostA: bindBackend(hostA, lu),
      hostB: bindBackend(hostB, lu),
      hostAReadOnly: bindBackend(hostA, { ...lu, writable: false }),
      registrations: { A: pathsA, B: 1 },
      unsupported: {},
      cleanup: async () => {
        await hostA.close();
        await hostB.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  };
}

describePrBackendContract('emulated (host A: 1 path)', emulatedFixture(1));
describePrBackendContract('emulated (host A: 2-path multipath host)', emulatedFixture(2));
