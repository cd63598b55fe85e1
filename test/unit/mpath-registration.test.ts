// The mpath backend's REGISTER fan-out and returning-path watch, path by path, against a
// FAKE SAN: the logical unit is our own SPC-4 engine (src/engine) and each path of the map
// is one I_T nexus of it. The fake exists for the faults a real LU cannot produce on demand
// (one path refusing what another accepts, a path that cannot be opened exactly during one
// command); test/lab/mpath.lab.ts runs the same code against LIO and dm-multipath.

import type { PrCommand } from '../../src/scsi/pr-command';
import { runBytes } from '../support/pr-bytes';
import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { DeviceHandle } from '../../src/backends/backend';
import { MpathBackend } from '../../src/backends/mpath/mpath-backend';
import { MPATH_REPORT_MESSAGE, type MpathCommandReport } from '../../src/backends/mpath/mpath-log';
import type { WorkerLogger } from '../../src/backends/mpath/mpath-worker-client';
import type { PathTransport } from '../../src/backends/mpath/path-io';
import { buildPrIn, buildPrOut, prOutCommand, type PrOutRequest } from '../../src/backends/pr-commands';
import { defaultEngineOptions, execute } from '../../src/engine';
import { initialState, type Nexus, type PrState } from '../../src/engine/state';
import { PrInAction, Status } from '../../src/scsi/constants';
import { decodeReadKeys } from '../../src/scsi/pr-in-data';
import { checkCondition, describeSense, good, Sense, senseMatches, type ScsiResult } from '../../src/scsi/sense';
import { ManualClock } from '../support/clock';
import { FakeSysfs } from '../support/fake-sysfs';

const PATHS = { sdx: { dev: '8:16', host: 2, targetPort: 1 }, sdy: { dev: '8:32', host: 3, targetPort: 2 } } as const;
type PathName = keyof typeof PATHS;
const OUR_INITIATOR = { protocol: 'sas', sasAddress: 0x5001405aa0000001n } as const;
const OTHER_HOST: Nexus = { initiator: { protocol: 'sas', sasAddress: 0x5001405bb0000001n }, targetPort: 1 };
const K1 = 0xa1n;
const K2 = 0xa2n;

/** FAKE SAN: the engine is the LU; each fake path is our initiator on its own target port. */
class FakeSan {
  state: PrState = initialState();
  readonly options = defaultEngineOptions([1, 2]);
  /** Paths whose node cannot be opened (offline, removed). */
  readonly offline = new Set<string>();
  /** Paths that answer every PR OUT with this instead of executing it. */
  readonly refusing = new Map<string, ScsiResult>();
  /** Paths that answer their next PR OUT with GOOD without executing it (a device that lies). */
  readonly swallowNext = new Set<string>();
  /** Answer READ FULL STATUS with INVALID FIELD IN CDB, as a device without it does. */
  noFullStatus = false;
  /** Every PR OUT that reached a path, as "path:service action". */
  readonly sent: string[] = [];
  private readonly open = new Map<number, PathName>();
  private nextFd = 1000;

  readonly transport: PathTransport = {
    open: (device) => {
      if (this.offline.has(device.name)) throw new Error(`open /dev/${device.name}: No such device or address`);
      const fd = this.nextFd++;
      this.open.set(fd, device.name as PathName);
      return fd;
    },
    close: (fd) => {
      this.open.delete(fd);
    },
    send: async (fd, command) => {
      const name = this.open.get(fd);
      if (!name) throw new Error(`fd ${fd} is not an open path`);
      const isOut = command.direction === 'out';
      if (isOut) this.sent.push(`${name}:${command.code}`);
      const refusal = isOut ? this.refusing.get(name) : undefined;
      if (refusal) return refusal;
      if (isOut && this.swallowNext.delete(name)) return good();
      if (command.action === 'read-full-status' && this.noFullStatus) return checkCondition(Sense.INVALID_FIELD_IN_CDB);
      return this.runCommand(this.nexus(name), command);
    },
  };

  nexus(name: PathName): Nexus {
    return { initiator: OUR_INITIATOR, targetPort: PATHS[name].targetPort };
  }

  runCommand(nexus: Nexus, command: PrCommand): ScsiResult {
    const outcome = execute(this.state, nexus, command, this.options);
    this.state = outcome.state;
    return outcome.result;
  }

  out(nexus: Nexus, request: PrOutRequest): ScsiResult {
    return this.runCommand(nexus, prOutCommand(request));
  }

  /** The key our initiator holds through `name`, if registered there. */
  keyOn(name: PathName): bigint | undefined {
    return this.state.registrations.find((r) => r.targetPort === PATHS[name].targetPort && r.initiator.protocol === 'sas' && r.initiator.sasAddress === OUR_INITIATOR.sasAddress)?.key;
  }
}


// The returning-path watch runs on a manual clock: every recheck it would make within the
// advanced time has run when advance() returns.
describe('mpath per-path I/O: REGISTER fan-out, returning paths, PR IN (FAKE SAN: the SPC-4 engine as the LU, one nexus per path)', function () {
  let dir: string;
  let clock: ManualClock;
  let fake: FakeSysfs;
  let san: FakeSan;
  let backend: MpathBackend;
  let handle: DeviceHandle;
  const messages: string[] = [];
  const reports: MpathCommandReport[] = [];
  const sink = (obj: unknown, msg?: string) => {
    messages.push(msg ?? '');
    if (msg === MPATH_REPORT_MESSAGE) reports.push(obj as MpathCommandReport);
  };
  const logger = { debug: sink, info: sink, warn: sink, error: sink } as unknown as WorkerLogger;
  const register = (request: PrOutRequest) => backend.execute(handle, prOutCommand(request));
  /** What the backend last reported doing on the paths of the map. */
  const report = () => reports.filter((r) => r.map === 'mpathf').at(-1);

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpath-registration-test-'));
    fake = new FakeSysfs();
    for (const [name, { dev, host, targetPort }] of Object.entries(PATHS)) {
      // VPD page 83h with one designator: relative target port identifier (type 4h, association 01b).
      fake.scsiDisk({ host, name, dev, vpdPg83: Buffer.from([0, 0x83, 0, 8, 0x61, 0x14, 0, 4, 0, 0, 0, targetPort]) });
    }
    fake.dmMap({ kname: 'dm-9', dev: '253:9', uuid: 'mpath-36001405000000000000000000000009', name: 'mpathf', slaves: Object.keys(PATHS) });
    fs.writeFileSync(path.join(dir, 'map'), '');
    handle = fake.handle('/dev/mapper/mpathf', 'block', '253:9', { fd: fs.openSync(path.join(dir, 'map'), 'r+') });
  });
  after(() => {
    fs.closeSync(handle.fd);
    fs.rmSync(dir, { recursive: true, force: true });
    fake.remove();
  });
  beforeEach(() => {
    clock = new ManualClock().install();
    san = new FakeSan();
    messages.length = 0;
    reports.length = 0;
    backend = new MpathBackend({
      logger,
      multipathd: null,
      reservationKeySetting: { source: 'file' },
      deviceTree: fake.tree,
      pathTransport: san.transport,
      returningPaths: { intervalMs: 10, maxIntervalMs: 20 },
    });
  });
  afterEach(async () => {
    await backend.close();
    clock.uninstall();
  });

  it('REGISTER AND IGNORE reaches every path, and GOOD comes with the key on each nexus', async function () {
    const result = await register({ action: 'register-ignore', serviceActionKey: K1 });
    expect(result.status, describeSense(result.sense)).to.equal(Status.GOOD);
    expect([san.keyOn('sdx'), san.keyOn('sdy')]).to.deep.equal([K1, K1]);
    expect(report()?.registeredPaths).to.have.members(['sdx', 'sdy']);
    expect(report()?.unreachablePaths).to.deep.equal([]);
  });

  it('a REGISTER one nexus refuses (it missed the earlier registration) and another accepts ends with the new key on both', async function () {
    san.out(san.nexus('sdx'), { action: 'register', serviceActionKey: K1 });
    const result = await register({ action: 'register', reservationKey: K1, serviceActionKey: K2 });
    expect(result.status, describeSense(result.sense)).to.equal(Status.GOOD);
    expect([san.keyOn('sdx'), san.keyOn('sdy')]).to.deep.equal([K2, K2]);
    expect(san.sent, 'the conflicting path got REGISTER AND IGNORE').to.include('sdy:6');
  });

  it('a path that refuses what another accepted: the others are rolled back and the refusal is the reply', async function () {
    san.out(san.nexus('sdx'), { action: 'register', serviceActionKey: K1 });
    san.out(san.nexus('sdy'), { action: 'register', serviceActionKey: K1 });
    san.refusing.set('sdy', checkCondition(Sense.INVALID_FIELD_IN_PARAMETER_LIST));
    const result = await register({ action: 'register', reservationKey: K1, serviceActionKey: K2 });
    expect(senseMatches(result.sense, Sense.INVALID_FIELD_IN_PARAMETER_LIST), describeSense(result.sense)).to.equal(true);
    expect([san.keyOn('sdx'), san.keyOn('sdy')], 'back to the key the guest registered under').to.deep.equal([K1, K1]);
    expect(report()?.rolledBackPaths).to.deep.equal(['sdx']);
  });

  it('a REGISTER every path refuses changes nothing and answers what the device said', async function () {
    san.out(san.nexus('sdx'), { action: 'register', serviceActionKey: K1 });
    san.out(san.nexus('sdy'), { action: 'register', serviceActionKey: K1 });
    const result = await register({ action: 'register', reservationKey: K2, serviceActionKey: 0xa3n });
    expect(result.status).to.equal(Status.RESERVATION_CONFLICT);
    expect([san.keyOn('sdx'), san.keyOn('sdy')]).to.deep.equal([K1, K1]);
  });

  it('never answers GOOD when no path can be reached', async function () {
    san.offline.add('sdx');
    san.offline.add('sdy');
    const result = await register({ action: 'register-ignore', serviceActionKey: K1 });
    expect(result.status).to.not.equal(Status.GOOD);
    expect(san.state.registrations).to.deep.equal([]);
  });

  it('a path that cannot be opened during REGISTER gets the key once it opens again', async function () {
    san.offline.add('sdy');
    const result = await register({ action: 'register-ignore', serviceActionKey: K1 });
    expect(result.status, describeSense(result.sense)).to.equal(Status.GOOD);
    expect([san.keyOn('sdx'), san.keyOn('sdy')]).to.deep.equal([K1, undefined]);
    expect(report()?.unreachablePaths).to.deep.equal(['sdy']);
    await clock.advance(1_000);
    expect(san.keyOn('sdy'), 'not while it is still down').to.equal(undefined);
    expect(clock.pending, 'the watch keeps checking').to.equal(1);
    san.offline.delete('sdy');
    await clock.advance(1_000);
    expect(san.keyOn('sdy'), 'sdy registered by the watch').to.equal(K1);
    expect(messages).to.include('mpath: registered the key on paths that answer again');
  });

  it('a returning path is not registered once another node has preempted the key (no un-fencing)', async function () {
    san.offline.add('sdy');
    expect((await register({ action: 'register-ignore', serviceActionKey: K1 })).status).to.equal(Status.GOOD);
    expect(san.out(OTHER_HOST, { action: 'register', serviceActionKey: 0xb1n }).status).to.equal(Status.GOOD);
    expect(san.out(OTHER_HOST, { action: 'preempt', reservationKey: 0xb1n, serviceActionKey: K1, type: 5 }).status).to.equal(Status.GOOD);
    san.offline.delete('sdy');
    await clock.advance(1_000);
    expect(messages.some((m) => m.includes('registered nowhere now')), 'the watch to give up').to.equal(true);
    expect(clock.pending, 'no recheck left').to.equal(0);
    expect([san.keyOn('sdx'), san.keyOn('sdy')]).to.deep.equal([undefined, undefined]);
  });

  it('a path that said GOOD but holds no key is found by its target port, even when another host uses the same key', async function () {
    // Another node registered under our key through port 1 (a misconfiguration a count of
    // keys cannot see through: two registrations for two paths).
    expect(san.out(OTHER_HOST, { action: 'register', serviceActionKey: K1 }).status).to.equal(Status.GOOD);
    san.swallowNext.add('sdy');
    const result = await register({ action: 'register-ignore', serviceActionKey: K1 });
    expect(result.status, describeSense(result.sense)).to.equal(Status.GOOD);
    expect([san.keyOn('sdx'), san.keyOn('sdy')]).to.deep.equal([K1, K1]);
    expect(report()?.repairedPaths).to.deep.equal(['sdy']);
  });

  it('on a device without READ FULL STATUS the check counts keys (READ KEYS) and still finds the path that holds none', async function () {
    san.noFullStatus = true;
    san.swallowNext.add('sdy');
    const result = await register({ action: 'register-ignore', serviceActionKey: K1 });
    expect(result.status, describeSense(result.sense)).to.equal(Status.GOOD);
    expect([san.keyOn('sdx'), san.keyOn('sdy')]).to.deep.equal([K1, K1]);
    expect(report()?.repairedPaths, 'by count every answering path is registered again').to.have.members(['sdx', 'sdy']);
    expect(messages).to.include('mpath: not every answering path is registered after GOOD; registering those paths');
  });

  it('with reservation_key fixed in multipath.conf, only that key is registered (multipathd would give returning paths no other)', async function () {
    const fixed = new MpathBackend({ logger, multipathd: null, reservationKeySetting: { source: 'key', key: K1 }, deviceTree: fake.tree, pathTransport: san.transport });
    try {
      const other = buildPrOut({ action: 'register-ignore', serviceActionKey: K2 });
      const refused = await runBytes(fixed, handle, other.cdb, other.dataOut);
      expect(senseMatches(refused.sense, Sense.LUN_COMMUNICATION_FAILURE), describeSense(refused.sense)).to.equal(true);
      expect(san.state.registrations).to.deep.equal([]);
      const configured = buildPrOut({ action: 'register-ignore', serviceActionKey: K1 });
      expect((await runBytes(fixed, handle, configured.cdb, configured.dataOut)).status).to.equal(Status.GOOD);
      expect([san.keyOn('sdx'), san.keyOn('sdy')]).to.deep.equal([K1, K1]);
    } finally {
      await fixed.close();
    }
  });

  it('PR IN is answered by the first path that answers, never by the map (whose SG_IO can hang under queue_if_no_path)', async function () {
    san.out(san.nexus('sdx'), { action: 'register', serviceActionKey: K1 });
    san.offline.add('sdx');
    const result = await runBytes(backend, handle, buildPrIn(PrInAction.READ_KEYS), new Uint8Array(0));
    expect(result.status, describeSense(result.sense)).to.equal(Status.GOOD);
    const decoded = decodeReadKeys(result.dataIn);
    expect(decoded.ok && decoded.value.keys).to.deep.equal([K1]);
    san.offline.add('sdy');
    const none = await runBytes(backend, handle, buildPrIn(PrInAction.READ_FULL_STATUS), new Uint8Array(0));
    expect(senseMatches(none.sense, Sense.LUN_COMMUNICATION_FAILURE), describeSense(none.sense)).to.equal(true);
  });

  it('RELEASE by a registered non-holder is GOOD without touching the reservation, read through a path', async function () {
    san.out(san.nexus('sdx'), { action: 'register', serviceActionKey: K1 });
    san.out(san.nexus('sdy'), { action: 'register', serviceActionKey: K1 });
    san.out(OTHER_HOST, { action: 'register', serviceActionKey: 0xb1n });
    san.out(OTHER_HOST, { action: 'reserve', reservationKey: 0xb1n, type: 5 });
    const { cdb, dataOut } = buildPrOut({ action: 'release', reservationKey: K1, type: 5 });
    const result = await runBytes(backend, handle, cdb, dataOut);
    expect(result.status, describeSense(result.sense)).to.equal(Status.GOOD);
    expect(san.state.reservation?.type).to.equal(5);
    expect(report()?.releaseShortCircuited).to.equal(true);
  });

  it('a later registration replaces the watched key, and unregistering ends the watch', async function () {
    san.offline.add('sdy');
    expect((await register({ action: 'register-ignore', serviceActionKey: K1 })).status).to.equal(Status.GOOD);
    expect(clock.pending, 'the watch of K1').to.equal(1);
    expect((await register({ action: 'register-ignore', serviceActionKey: 0n })).status).to.equal(Status.GOOD);
    expect(clock.pending, 'no watch after unregistering').to.equal(0);
    san.offline.delete('sdy');
    await clock.advance(1_000);
    expect(san.state.registrations, 'nothing registered behind the guest\'s back').to.deep.equal([]);
  });
});
