import { stateFilePerTest } from '../support/state-file';
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import Database from 'better-sqlite3';
import { EmulatedBackend } from '../../src/backends/emulated/emulated-backend';
import * as pr from '../../src/backends/pr-commands';

const ROUNDS = 150;
const REQUIRE_BACKEND = `
const { EmulatedBackend } = require(${JSON.stringify(path.resolve(__dirname, '../../src/backends/emulated/emulated-backend'))});
const pr = require(${JSON.stringify(path.resolve(__dirname, '../../src/backends/pr-commands'))});
`;

/** A second simulated host in its own process: re-keys itself ROUNDS times, each REGISTER using the key it last set. */
const RACER = `${REQUIRE_BACKEND}
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

/**
 * A simulated host that opens the shared state files the parent names. Each line on its
 * stdin names a fresh file; the parent writes that line to every opener at once and waits
 * for all their replies, so all of them construct their store on one file at one moment.
 * For each file it registers its key and replies "opened" or why it could not. It skips
 * fsync (durable: false): the race is in opening the file, and fsync would only slow it.
 */
const OPENER = `${REQUIRE_BACKEND}
const [initiator, key] = process.argv.slice(1);
async function openAndRegister(statePath) {
  const backend = new EmulatedBackend({ statePath, initiator, paths: 2, durable: false });
  try {
    await pr.register(pr.bindBackend(backend, { fd: -1, path: '/srv/open/lu0', writable: true }), BigInt(key));
  } finally {
    await backend.close();
  }
}
require('node:readline').createInterface({ input: process.stdin }).on('line', (statePath) => {
  openAndRegister(statePath)
    .then(() => 'opened', (err) => 'failed: ' + String(err.stack ?? err).replace(/\\n\\s*/g, ' | '))
    .then((reply) => process.stdout.write(reply + '\\n'));
});
process.stdout.write('at the barrier\\n');
`;

interface NodeChild {
  readonly child: ChildProcess;
  /** Resolves when the child exits 0; rejects with its stderr otherwise. */
  readonly exited: Promise<void>;
}

function runNode(script: string, args: string[], name: string): NodeChild {
  const child = spawn(process.execPath, ['-e', script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<void>((resolve, reject) =>
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${name} exited ${code}: ${stderr}`)))),
  );
  exited.catch(() => undefined); // reported by whoever awaits it
  return { child, exited };
}

function runRacer(statePath: string, initiator: string, base: number): Promise<void> {
  const racer = runNode(RACER, [statePath, initiator, String(ROUNDS), String(base)], initiator);
  racer.child.stdin!.end();
  return racer.exited;
}

/** The child's stdout, a line at a time; a read rejects if the child exits first. */
function lineReader(node: NodeChild): () => Promise<string> {
  const lines: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  readline.createInterface({ input: node.child.stdout! }).on('line', (line) => {
    const waiter = waiting.shift();
    if (waiter) waiter(line);
    else lines.push(line);
  });
  const exitedEarly = node.exited.then(() => Promise.reject(new Error('the child exited while the test waited for its reply')));
  exitedEarly.catch(() => undefined); // reported by the read it ends
  return () => Promise.race([lines.length > 0 ? Promise.resolve(lines.shift()!) : new Promise<string>((resolve) => waiting.push(resolve)), exitedEarly]);
}

/** The file is in WAL mode and holds every opener's key on both of its paths, and nothing else. */
async function expectEveryOpenerRegistered(statePath: string, openers: number, base: bigint): Promise<void> {
  const file = new Database(statePath, { readonly: true });
  try {
    expect(file.pragma('journal_mode', { simple: true }), statePath).to.equal('wal');
  } finally {
    file.close();
  }
  const observer = new EmulatedBackend({ statePath, initiator: 'observer', paths: 1 });
  try {
    expect(observer.store.hosts()).to.have.length(openers + 1);
    const keys = await pr.readKeys(pr.bindBackend(observer, { fd: -1, path: '/srv/open/lu0', writable: false }));
    // Each opener registered its own key through both of its paths, bumping PRgeneration once per path.
    expect(keys.generation).to.equal(2 * openers);
    const expected = Array.from({ length: openers }, (_, i) => [base + BigInt(i), base + BigInt(i)]).flat();
    expect([...keys.keys].sort()).to.deep.equal(expected.sort());
  } finally {
    await observer.close();
  }
}

describe('emulated backend: processes share one state file like hosts on one SAN', function () {
  this.timeout(120_000);
  const fixture = stateFilePerTest('mpath-pr-race-');

  it('races PR OUT commands without losing an update', async () => {
    await Promise.all([runRacer(fixture.statePath, 'racer-a', 0x1000), runRacer(fixture.statePath, 'racer-b', 0x2000)]);
    const observer = new EmulatedBackend({ statePath: fixture.statePath, initiator: 'observer', paths: 1 });
    try {
      const keys = await pr.readKeys(pr.bindBackend(observer, { fd: -1, path: '/srv/race/lu0', writable: false }));
      // Every REGISTER reached both paths of its host and bumped PRgeneration once per
      // path; a lost update would show as a smaller generation or a stale key.
      expect(keys.generation).to.equal(2 * 2 * ROUNDS);
      expect([...keys.keys].sort()).to.deep.equal([0x1000n + BigInt(ROUNDS), 0x1000n + BigInt(ROUNDS), 0x2000n + BigInt(ROUNDS), 0x2000n + BigInt(ROUNDS)]);
    } finally {
      await observer.close();
    }
  });

  it('many processes open one fresh state file at the same moment, and every one of them starts', async () => {
    // Openers collide only when their opens overlap within a short window, so the race
    // runs again on a new file each round.
    const OPENERS = 12;
    const FILES = 30;
    const base = 0x3000n;
    const openers = Array.from({ length: OPENERS }, (_, i) => runNode(OPENER, [`opener-${i}`, String(base + BigInt(i))], `opener-${i}`));
    const replies = openers.map(lineReader);
    const files = Array.from({ length: FILES }, (_, i) => path.join(fixture.dir, `san-${i}.db`));
    try {
      expect(await Promise.all(replies.map((next) => next()))).to.deep.equal(Array(OPENERS).fill('at the barrier'));
      for (const file of files) {
        for (const opener of openers) opener.child.stdin!.write(`${file}\n`);
        expect(await Promise.all(replies.map((next) => next())), file).to.deep.equal(Array(OPENERS).fill('opened'));
      }
      for (const opener of openers) opener.child.stdin!.end();
      await Promise.all(openers.map((opener) => opener.exited));
    } finally {
      for (const opener of openers) if (opener.child.exitCode === null) opener.child.kill('SIGKILL');
      await Promise.allSettled(openers.map((opener) => opener.exited));
    }
    for (const file of files) await expectEveryOpenerRegistered(file, OPENERS, base);
  });
});
