// The mpath backend's own decisions, with a stand-in worker in place of libmpathpersist (the
// real library needs a dm-multipath map: test/lab/mpath.lab.ts runs it against one) and a
// fake sysfs. What the stand-in received is recorded, so the tests see exactly what would
// have reached the library; each test says what the library does (test/support/mpath-stand-in.ts).

import { runBytes } from '../support/pr-bytes';
import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { DeviceHandle } from '../../src/backends/backend';
import { MpathBackend } from '../../src/backends/mpath/mpath-backend';
import { WORKER_STARTING_MESSAGE, type WorkerLogger } from '../../src/backends/mpath/mpath-worker-client';
import { buildPrIn, buildPrOut } from '../../src/backends/pr-commands';
import { MPATH_PR } from '../../ffi/libmpathpersist';
import { encodePrOutCdb } from '../../src/scsi/cdb';
import { PrInAction, PrType, Status } from '../../src/scsi/constants';
import { describeSense, Sense, senseMatches, type ScsiResult, type SenseCondition } from '../../src/scsi/sense';
import { FakeSysfs } from '../support/fake-sysfs';
import { MpathStandIn } from '../support/mpath-stand-in';

function expectSense(result: ScsiResult, cond: SenseCondition): void {
  expect(result.status, `status 0x${result.status.toString(16)}`).to.equal(Status.CHECK_CONDITION);
  expect(senseMatches(result.sense, cond), describeSense(result.sense)).to.equal(true);
}

describe('mpath backend (stand-in worker, fake sysfs)', function () {
  this.timeout(30_000);
  let dir: string;
  let fake: FakeSysfs;
  let standIn: MpathStandIn;
  let backend: MpathBackend;
  let handle: DeviceHandle;
  let readOnly: DeviceHandle;
  const lines: Array<{ level: string; msg: string }> = [];
  const sink = (level: string) => (_obj: unknown, msg?: string) => {
    lines.push({ level, msg: msg ?? '' });
  };
  const logger = { debug: sink('debug'), info: sink('info'), warn: sink('warn'), error: sink('error') } as unknown as WorkerLogger;
  const workerStarts = () => lines.filter((l) => l.msg === WORKER_STARTING_MESSAGE).length;
  const received = () => standIn.received();
  const out = (request: Parameters<typeof buildPrOut>[0], device: DeviceHandle = handle) => {
    const { cdb, dataOut } = buildPrOut(request);
    return runBytes(backend, device, cdb, dataOut);
  };

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpath-backend-test-'));
    fake = new FakeSysfs();
    fake.dmMap({ kname: 'dm-7', dev: '253:7', uuid: 'mpath-36001405000000000000000000000007', name: 'mpathz' });
    fs.writeFileSync(path.join(dir, 'lu'), '');
    const fd = fs.openSync(path.join(dir, 'lu'), 'r+');
    const roFd = fs.openSync(path.join(dir, 'lu'), 'r');
    handle = fake.handle('/dev/mapper/mpathz', 'block', '253:7', { fd, writable: true });
    readOnly = fake.handle('/dev/mapper/mpathz', 'block', '253:7', { fd: roFd, writable: false });
  });
  after(() => {
    fs.closeSync(handle.fd);
    fs.closeSync(readOnly.fd);
    fs.rmSync(dir, { recursive: true, force: true });
    fake.remove();
  });
  beforeEach(() => {
    standIn = new MpathStandIn(dir);
    lines.length = 0;
    backend = new MpathBackend({
      // A short call deadline, so the test of a hung call ends soon after proving its point.
      worker: { ...standIn.worker, logger, callTimeoutMs: 3_000 },
      logger,
      multipathd: null,
      reservationKeySetting: { source: 'file' },
      deviceTree: fake.tree,
    });
  });
  afterEach(() => backend.close());

  it('hands READ KEYS to the library when no path answers, with the map\'s dev_t and path, and returns its wire bytes', async function () {
    const result = await runBytes(backend, handle, buildPrIn(PrInAction.READ_KEYS, 16), new Uint8Array(0));
    expect(result.status).to.equal(Status.GOOD);
    expect(result.dataIn.toString('hex')).to.equal('00000007000000080000000000000abc');
    expect(received()).to.deep.equal([
      { kind: 'in', id: 1, target: { major: 253, minor: 7, path: '/dev/mapper/mpathz' }, serviceAction: 0, allocationLength: 16, verbose: 2 },
    ]);
  });

  it('hands RESERVE to the library with keys, scope, type and APTPL, and answers GOOD', async function () {
    const result = await out({ action: 'reserve', reservationKey: 0x1234n, serviceActionKey: 0n, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, aptpl: true });
    expect(result.status).to.equal(Status.GOOD);
    const [message] = received();
    expect(message).to.deep.include({ kind: 'out', serviceAction: 1, scope: 0, type: 5 });
    expect(message.params).to.deep.equal({ key: 'n1234', serviceActionKey: 'n0', flags: 1 });
  });

  it('maps library return codes the way qemu-pr-helper does', async function () {
    const clear = (rc: number) => {
      standIn.script({ prOut: { rc } });
      return out({ action: 'clear', reservationKey: 0x1234n });
    };
    standIn.script({ prOut: { rc: MPATH_PR.RESERV_CONFLICT } });
    const conflict = await out({ action: 'reserve', reservationKey: 0x1234n, type: 5 });
    expect(conflict.status).to.equal(Status.RESERVATION_CONFLICT);
    expectSense(await clear(MPATH_PR.SYNTAX_ERROR), Sense.LUN_COMMUNICATION_FAILURE);
    expectSense(await clear(MPATH_PR.ILLEGAL_REQ), Sense.INVALID_FIELD_IN_PARAMETER_LIST);
    expectSense(await clear(MPATH_PR.SENSE_UNIT_ATTENTION), Sense.SCSI_BUS_RESET);
  });

  it('answers LUN COMMUNICATION FAILURE when the worker dies mid-command, and the next command runs on a new worker', async function () {
    standIn.script({ prOut: 'exit' });
    expectSense(await out({ action: 'clear', reservationKey: 0x1234n }), Sense.LUN_COMMUNICATION_FAILURE);
    expect(lines.some((l) => l.level === 'error' && l.msg.includes('worker died'))).to.equal(true);
    standIn.script({ prOut: { rc: MPATH_PR.SUCCESS } });
    expect((await out({ action: 'clear', reservationKey: 0x1234n })).status).to.equal(Status.GOOD);
    expect(workerStarts()).to.equal(2);
  });

  it('a library call hanging on one map does not delay another map (one worker per map)', async function () {
    fake.dmMap({ kname: 'dm-8', dev: '253:8', uuid: 'mpath-36001405000000000000000000000008', name: 'mpathy' });
    const other: DeviceHandle = fake.handle('/dev/mapper/mpathy', 'block', '253:8', { fd: handle.fd });
    const order: string[] = [];
    standIn.script({ prOutOn: { [handle.path]: 'hang' } });
    const stuck = out({ action: 'clear', reservationKey: 0x1234n }).then((r) => {
      order.push('hung map');
      return r;
    });
    const healthy = await out({ action: 'clear', reservationKey: 0x1234n }, other);
    order.push('healthy map');
    expect(healthy.status).to.equal(Status.GOOD);
    expect(order).to.deep.equal(['healthy map']);
    // The hung call is answered when its worker's deadline kills it.
    expectSense(await stuck, Sense.LUN_COMMUNICATION_FAILURE);
    expect(order).to.deep.equal(['healthy map', 'hung map']);
  });

  it('answers LUN COMMUNICATION FAILURE when the worker cannot reach the map', async function () {
    standIn.script({ prOut: 'error' });
    expectSense(await out({ action: 'clear', reservationKey: 0x1234n }), Sense.LUN_COMMUNICATION_FAILURE);
  });

  it('never answers GOOD for a REGISTER it cannot verify on any path', async function () {
    // The fake map has no slaves, so no path can confirm the registration.
    const result = await out({ action: 'register', serviceActionKey: BigInt(MPATH_PR.SUCCESS) });
    expect(result.status).to.not.equal(Status.GOOD);
  });

  it('refuses without calling the library: PR OUT on a read-only fd, REGISTER AND MOVE, SPEC_I_PT, a short list', async function () {
    expectSense(await out({ action: 'reserve', reservationKey: 1n, type: 5 }, readOnly), Sense.INVALID_OPCODE);
    expectSense(await runBytes(backend, handle, encodePrOutCdb({ action: 7, parameterListLength: 24 }), new Uint8Array(24)), Sense.INVALID_FIELD_IN_CDB);
    expectSense(await out({ action: 'register', serviceActionKey: 1n, transportIds: [{ protocol: 'fc', portName: 1n }] }), Sense.INVALID_FIELD_IN_PARAMETER_LIST);
    expectSense(await runBytes(backend, handle, encodePrOutCdb({ action: 0, parameterListLength: 8 }), new Uint8Array(8)), Sense.PARAMETER_LIST_LENGTH_ERROR);
    expectSense(await runBytes(backend, handle, encodePrOutCdb({ action: 0, parameterListLength: 24 }), new Uint8Array(8)), Sense.PARAMETER_LIST_LENGTH_ERROR);
    expect(received()).to.deep.equal([]);
    expect(workerStarts(), 'no worker was even started').to.equal(0);
  });

  it('warns at start-up when multipath.conf has no reservation_key', async function () {
    const warned: string[] = [];
    const warnOnly = { debug() {}, info() {}, error() {}, warn: (_o: unknown, msg: string) => warned.push(msg) } as unknown as WorkerLogger;
    const quiet = new MpathBackend({ logger: warnOnly, multipathd: null, reservationKeySetting: { source: 'none' } });
    await quiet.close();
    expect(warned.join('\n')).to.include('no reservation_key').and.include('reservation_key file');
    const fine = new MpathBackend({ logger: warnOnly, multipathd: null, reservationKeySetting: { source: 'file' } });
    await fine.close();
    expect(warned).to.have.length(1);
  });
});
