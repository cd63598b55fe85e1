import { runBytes } from '../support/pr-bytes';
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { EmulatedBackend } from '../../src/backends/emulated/emulated-backend';
import * as pr from '../../src/backends/pr-commands';
import { PrCommandError } from '../../src/backends/pr-commands';
import { PrType, Status } from '../../src/scsi/constants';
import { Sense, senseMatches } from '../../src/scsi/sense';
import { initialState, nexusKey, serializeState } from '../../src/engine/state';
import { pathNexus } from '../../src/backends/emulated/multipath-host';
import type { DeviceHandle } from '../../src/backends/backend';

function tempState(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpath-pr-emu-'));
  return path.join(dir, 'state.db');
}

const lu: DeviceHandle = { fd: -1, path: '/srv/emulated/lu0', writable: true };

/** The keys registered through each of a host's paths, path index → key or undefined. */
function keysPerPath(backend: EmulatedBackend): (bigint | undefined)[] {
  const state = backend.readState(lu.path);
  const host = { initiator: backend.initiator, paths: backend.paths() };
  return host.paths.map((p) => state.registrations.find((r) => nexusKey(r) === nexusKey(pathNexus(host, p.index)))?.key);
}

for (const writerThread of [false, true]) describe(`emulated backend: a simulated multipath host over the SPC-4 engine (${writerThread ? 'writer thread, group commit' : 'same thread'})`, () => {
  let statePath: string;
  let hostA: EmulatedBackend;
  let hostB: EmulatedBackend;
  let runA: pr.PrExecutor;
  let runB: pr.PrExecutor;

  beforeEach(() => {
    statePath = tempState();
    hostA = new EmulatedBackend({ statePath, initiator: 'host-a', paths: 3, writerThread });
    hostB = new EmulatedBackend({ statePath, initiator: 'host-b', paths: 2, writerThread });
    runA = pr.bindBackend(hostA, lu);
    runB = pr.bindBackend(hostB, lu);
  });
  afterEach(async () => {
    await hostA.close();
    await hostB.close();
  });

  it('REGISTER reaches every active path of the host', async () => {
    await pr.register(runA, 0xa1n);
    expect(keysPerPath(hostA)).to.deep.equal([0xa1n, 0xa1n, 0xa1n]);
    const keys = await pr.readKeys(runB);
    expect(keys.keys.filter((k) => k === 0xa1n)).to.have.length(3);
  });

  it('REGISTER skips a failed path, and reinstating the path re-registers the key as multipathd does', async () => {
    hostA.setPathState(1, 'failed');
    await pr.register(runA, 0xa1n);
    expect(keysPerPath(hostA)).to.deep.equal([0xa1n, undefined, 0xa1n]);
    const { changedLus } = hostA.setPathState(1, 'active');
    expect(changedLus).to.deep.equal([lu.path]);
    expect(keysPerPath(hostA)).to.deep.equal([0xa1n, 0xa1n, 0xa1n]);
  });

  it('a fenced host does not get its key back when a path is reinstated', async () => {
    await pr.register(runA, 0xa1n);
    await pr.register(runB, 0xb1n);
    hostA.setPathState(2, 'failed');
    await pr.reserve(runB, 0xb1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
    await pr.preempt(runB, 0xb1n, 0xa1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, true);
    hostA.setPathState(2, 'active');
    expect(keysPerPath(hostA)).to.deep.equal([undefined, undefined, undefined]);
  });

  it('a path that missed the key is brought in line by the next REGISTER (REGISTER AND IGNORE on that path)', async () => {
    await pr.register(runA, 0xa1n);
    // Fake of a path that lost its registration behind the host's back (e.g. a target
    // reset on one port): edit the stored state directly.
    const state = hostA.readState(lu.path);
    const lost = nexusKey(pathNexus({ initiator: hostA.initiator, paths: hostA.paths() }, 2));
    const { serializeState } = await import('../../src/engine/state');
    hostA.store.writeLuState(lu.path, serializeState({ ...state, registrations: state.registrations.filter((r) => nexusKey(r) !== lost) }));
    await pr.register(runA, 0xa2n, { currentKey: 0xa1n });
    expect(keysPerPath(hostA)).to.deep.equal([0xa2n, 0xa2n, 0xa2n]);
  });

  it('a REGISTER that conflicts on every path changes nothing and reports RESERVATION CONFLICT', async () => {
    await pr.register(runA, 0xa1n);
    const before = hostA.readState(lu.path);
    const result = await pr.prOut(runA, { action: 'register', reservationKey: 0xdeadn, serviceActionKey: 0xa2n });
    expect(result.status).to.equal(Status.RESERVATION_CONFLICT);
    expect(hostA.readState(lu.path)).to.deep.equal(before);
  });

  it('a self-PREEMPT leaves every path of the host registered', async () => {
    await pr.register(runA, 0xa1n);
    await pr.reserve(runA, 0xa1n, PrType.WRITE_EXCLUSIVE);
    await pr.preempt(runA, 0xa1n, 0xa1n, PrType.EXCLUSIVE_ACCESS);
    expect(keysPerPath(hostA)).to.deep.equal([0xa1n, 0xa1n, 0xa1n]);
    const reservation = await pr.readReservation(runA);
    expect(reservation.reservation).to.deep.include({ key: 0xa1n, type: PrType.EXCLUSIVE_ACCESS });
  });

  it('PREEMPT of an all-registrants reservation keeps the preempting host registered on every path', async () => {
    await pr.register(runA, 0xa1n);
    await pr.register(runB, 0xb1n);
    await pr.reserve(runB, 0xb1n, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS);
    await pr.preempt(runA, 0xa1n, 0n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
    expect(keysPerPath(hostA)).to.deep.equal([0xa1n, 0xa1n, 0xa1n]);
    expect((await pr.readKeys(runA)).keys).to.not.include(0xb1n);
  });

  it('RELEASE of a reservation held through a failed path really releases it', async () => {
    await pr.register(runA, 0xa1n);
    await pr.reserve(runA, 0xa1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY); // goes down path 0
    hostA.setPathState(0, 'failed');
    await pr.release(runA, 0xa1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
    expect((await pr.readReservation(runB)).reservation).to.equal(undefined);
    // The self-PREEMPT that moved the reservation unregistered the dead path; it gets
    // the key back when it returns, like any reinstated path.
    expect(keysPerPath(hostA)).to.deep.equal([undefined, 0xa1n, 0xa1n]);
    hostA.setPathState(0, 'active');
    expect(keysPerPath(hostA)).to.deep.equal([0xa1n, 0xa1n, 0xa1n]);
  });

  it("RELEASE never clears another host's reservation", async () => {
    await pr.register(runA, 0xa1n);
    await pr.register(runB, 0xb1n);
    await pr.reserve(runB, 0xb1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
    await pr.release(runA, 0xa1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY); // GOOD, a no-op per SPC-4
    expect((await pr.readReservation(runA)).reservation).to.deep.include({ key: 0xb1n });
  });

  it('with every path failed, commands get LUN COMMUNICATION FAILURE and change nothing', async () => {
    for (const p of [0, 1, 2]) hostA.setPathState(p, 'failed');
    const result = await pr.prOut(runA, { action: 'register', serviceActionKey: 0xa1n });
    expect(result.status).to.equal(Status.CHECK_CONDITION);
    expect(senseMatches(result.sense, Sense.LUN_COMMUNICATION_FAILURE)).to.equal(true);
    expect(hostA.readState(lu.path).registrations).to.have.length(0);
  });

  it('PR OUT on a read-only handle is refused with INVALID OPCODE, as qemu-pr-helper does', async () => {
    const result = await pr.prOut(pr.bindBackend(hostA, { ...lu, writable: false }), { action: 'register', serviceActionKey: 1n });
    expect(senseMatches(result.sense, Sense.INVALID_OPCODE)).to.equal(true);
    expect(hostA.readState(lu.path).registrations).to.have.length(0);
  });

  it('bad CDBs and parameter lists never throw out of execute', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 16 }), fc.uint8Array({ maxLength: 64 }), fc.boolean(), async (cdb, data, prOut) => {
        if (cdb.length > 0) cdb[0] = prOut ? 0x5f : 0x5e;
        const result = await runBytes(hostA, lu, cdb, data);
        expect([Status.GOOD, Status.CHECK_CONDITION, Status.RESERVATION_CONFLICT]).to.include(result.status);
        if (result.status === Status.CHECK_CONDITION) expect(result.sense.length).to.be.greaterThan(0);
      }),
      { numRuns: 300 },
    );
  });

  it('fencing flow of fence_mpath: register both, A reserves type 5, B preempts and aborts A', async () => {
    await pr.register(runA, 0xa1n);
    await pr.register(runB, 0xb1n);
    await pr.reserve(runA, 0xa1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
    await pr.preempt(runB, 0xb1n, 0xa1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, true);
    // A's first command through the preempted path sees the unit attention LIO reports.
    const error = await pr.readKeys(runA).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(PrCommandError);
    expect(senseMatches((error as PrCommandError).result.sense, Sense.REGISTRATIONS_PREEMPTED)).to.equal(true);
    const keys = await pr.readKeys(runA);
    expect(keys.keys).to.deep.equal([0xb1n, 0xb1n]);
    expect((await pr.readReservation(runA)).reservation).to.deep.include({ key: 0xb1n, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY });
  });

  it('concurrent commands are all applied, each exactly once', async () => {
    await Promise.all(Array.from({ length: 40 }, (_, i) => pr.registerIgnore(pr.bindBackend(hostA, { ...lu, path: `/srv/emulated/lu${i % 4}` }), BigInt(i + 1))));
    let generations = 0;
    for (let n = 0; n < 4; n++) generations += hostA.readState(`/srv/emulated/lu${n}`).generation;
    expect(generations).to.equal(40 * 3); // three paths, one generation each
  });

  it('close() lets the commands already running finish, and refuses the ones that come after', async () => {
    // A delayed LU keeps the commands running (waiting out the delay) when close() is called.
    hostA.store.immediate(() => hostA.store.setLuDelayMs(lu.path, serializeState(initialState()), 20));
    const running = [0xa1n, 0xa2n, 0xa3n].map((key) => pr.registerIgnore(runA, key));
    const closed = hostA.close();
    const late = await pr.prOut(runA, { action: 'register-ignore', serviceActionKey: 0xa4n });
    expect(senseMatches(late.sense, Sense.LUN_COMMUNICATION_FAILURE)).to.equal(true);
    await Promise.all(running); // each answered GOOD: the store was still open for it
    await closed;
    const keys = await pr.readKeys(runB);
    expect(keys.generation).to.equal(3 * 3); // three REGISTER AND IGNOREs, each through host A's three paths
    expect(keys.keys).to.have.length(3);
    expect(new Set(keys.keys).size).to.equal(1);
  });

  it('state survives closing and reopening the file (durable before the reply)', async () => {
    await pr.register(runA, 0xa1n);
    await hostA.close();
    const reopened = new EmulatedBackend({ statePath, initiator: 'host-a', paths: 3, writerThread });
    try {
      expect(keysPerPath(reopened)).to.deep.equal([0xa1n, 0xa1n, 0xa1n]);
    } finally {
      await reopened.close();
    }
  });
});

describe('emulated backend: property — after any REGISTER through a host, every live path holds the same key', () => {
  type Step =
    | { kind: 'register'; host: 0 | 1; key: bigint; ignore: boolean; rk: bigint }
    | { kind: 'path'; host: 0 | 1; path: number; state: 'active' | 'failed' }
    | { kind: 'reserve' | 'release'; host: 0 | 1; key: bigint; type: number }
    | { kind: 'preempt'; host: 0 | 1; key: bigint; victim: bigint; type: number };
  const key = fc.constantFrom(0n, 0xa1n, 0xa2n, 0xb1n);
  const type = fc.constantFrom(1, 3, 5, 6, 7, 8);
  const host = fc.constantFrom<0 | 1>(0, 1);
  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.record({ kind: fc.constant('register' as const), host, key, ignore: fc.boolean(), rk: key }),
    fc.record({ kind: fc.constant('path' as const), host, path: fc.integer({ min: 0, max: 2 }), state: fc.constantFrom<'active' | 'failed'>('active', 'failed') }),
    fc.record({ kind: fc.constantFrom<'reserve' | 'release'>('reserve', 'release'), host, key, type }),
    fc.record({ kind: fc.constant('preempt' as const), host, key, victim: key, type }),
  );

  it('holds for random command sequences over two hosts', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 25 }), async (steps) => {
        // Two hosts on one SAN share one state file, as two daemons would.
        const file = tempState();
        const hosts = [new EmulatedBackend({ statePath: file, initiator: 'p-a', paths: 3 }), new EmulatedBackend({ statePath: file, initiator: 'p-b', paths: 3 })];
        try {
          for (const s of steps) {
            const backend = hosts[s.host];
            const run = pr.bindBackend(backend, lu);
            if (s.kind === 'path') {
              if (s.state === 'failed' && backend.paths().filter((p) => p.state === 'active').length === 1) continue;
              backend.setPathState(s.path, s.state);
              continue;
            }
            let result;
            if (s.kind === 'register') {
              result = await pr.prOut(run, { action: s.ignore ? 'register-ignore' : 'register', reservationKey: s.rk, serviceActionKey: s.key });
              if (result.status === Status.GOOD) {
                const live = backend.paths().filter((p) => p.state === 'active').map((p) => keysPerPath(backend)[p.index]);
                const expected = s.key === 0n ? undefined : s.key;
                expect(live.every((k) => k === expected), `live paths ${live.map(String)} after REGISTER ${s.key}`).to.equal(true);
              }
            } else if (s.kind === 'preempt') {
              result = await pr.prOut(run, { action: 'preempt', reservationKey: s.key, serviceActionKey: s.victim, type: s.type });
            } else {
              result = await pr.prOut(run, { action: s.kind, reservationKey: s.key, type: s.type });
            }
            const state = backend.readState(lu.path);
            const reservation = state.reservation;
            if (reservation && reservation.holder !== 'all-registrants') {
              expect(state.registrations.some((r) => nexusKey(r) === reservation.holder)).to.equal(true);
            }
          }
        } finally {
          for (const h of hosts) await h.close();
          fs.rmSync(path.dirname(file), { recursive: true, force: true });
        }
      }),
      { numRuns: 60 },
    );
  });
});
