import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EmulatedBackend } from '../../src/backends/emulated/emulated-backend';
import * as pr from '../../src/backends/pr-commands';

const ROUNDS = 150;

/** A second simulated host in its own process: re-keys itself ROUNDS times, each REGISTER using the key it last set. */
const RACER = `
const { EmulatedBackend } = require(${JSON.stringify(path.resolve(__dirname, '../../src/backends/emulated/emulated-backend'))});
const pr = require(${JSON.stringify(path.resolve(__dirname, '../../src/backends/pr-commands'))});
(async () => {
  const [statePath, initiator, rounds, base] = process.argv.slice(1);
  const backend = new EmulatedBackend({ statePath, initiator, paths: 2 });
  const run = pr.bindBackend(backend, { fd: -1, path: '/srv/race/lu0', writable: true });
  let key = 0n;
  for (let i = 1; i <= Number(rounds); i++) {
    const next = BigInt(base) + BigInt(i);
    await pr.register(run, next, { currentKey: key });
    key = next;
  }
  await backend.close();
})().catch((err) => { console.error(err); process.exit(1); });
`;

function runRacer(statePath: string, initiator: string, base: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', RACER, statePath, initiator, String(ROUNDS), String(base)], { stdio: ['ignore', 'inherit', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${initiator} exited ${code}: ${stderr}`))));
  });
}

describe('emulated backend: two processes share one state file like two hosts on one SAN', function () {
  this.timeout(120_000);

  it('races PR OUT commands without losing an update', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpath-pr-race-'));
    const statePath = path.join(dir, 'san.db');
    try {
      await Promise.all([runRacer(statePath, 'racer-a', 0x1000), runRacer(statePath, 'racer-b', 0x2000)]);
      const observer = new EmulatedBackend({ statePath, initiator: 'observer', paths: 1 });
      try {
        const keys = await pr.readKeys(pr.bindBackend(observer, { fd: -1, path: '/srv/race/lu0', writable: false }));
        // Every REGISTER reached both paths of its host and bumped PRgeneration once per
        // path; a lost update would show as a smaller generation or a stale key.
        expect(keys.generation).to.equal(2 * 2 * ROUNDS);
        expect([...keys.keys].sort()).to.deep.equal([0x1000n + BigInt(ROUNDS), 0x1000n + BigInt(ROUNDS), 0x2000n + BigInt(ROUNDS), 0x2000n + BigInt(ROUNDS)]);
      } finally {
        await observer.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
