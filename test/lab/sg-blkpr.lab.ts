// @lab {"fabric": "tcm_loop", "paths": 2}
// @lab {"fabric": "iscsi", "paths": 2, "secondHost": true}
//
// The sg and blkpr backends and the device resolver against a real LIO target with SPC-3
// persistent reservations. Each path of the lab is its own I_T nexus, so two paths act as
// two initiators: "A" is pathDevices[0], "B" is pathDevices[1]. sg_persist (sg3-utils,
// independent of this project) is the oracle for what the target really holds.
// PREEMPT AND ABORT runs only on iSCSI: it deadlocks LIO over tcm_loop.

import { runBytes } from '../support/pr-bytes';
import { expect } from 'chai';
import * as fs from 'fs';
import { LinuxErrno } from '../../ffi/errno';
import { sgIo } from '../../ffi/sg-io';
import type { DeviceHandle, PrBackend } from '../../src/backends/backend';
import { BlkprBackend } from '../../src/backends/blkpr/blkpr-backend';
import {
  bindBackend,
  buildPrIn,
  buildPrOut,
  prInCommand,
  prOut,
  readKeys as prReadKeys,
  readReservation as prReadReservation,
  type PrExecutor,
  type PrOutRequest,
} from '../../src/backends/pr-commands';
import { BackendResolver } from '../../src/backends/resolve';
import { describeHandle } from '../../src/device';
import { passThroughPr } from '../../src/backends/sg/pass-through';
import { SgBackend } from '../../src/backends/sg/sg-backend';
import { PrInAction, PrType, Status } from '../../src/scsi/constants';
import { decodeReadKeys } from '../../src/scsi/pr-in-data';
import { decodeSense, describeSense, Sense, senseMatches, type ScsiResult, type SenseCondition } from '../../src/scsi/sense';
import { labTopology, multipathd, readFullStatus, readKeys, readReservation, run } from './harness/lab-guest';

const KEY_A = 0xa1a1n;
const KEY_B = 0xb2b2n;
const KEY_M = 0x3333n;
const KEY_M2 = 0x4444n;
const CLEANUP_KEY = 0xc1ea11n;

function hex(key: bigint): string {
  return `0x${key.toString(16)}`;
}

function expectStatus(result: ScsiResult, status: number, what: string): void {
  expect(result.status, `${what}: status 0x${result.status.toString(16)} ${result.sense.length ? describeSense(result.sense) : ''}`).to.equal(status);
}

function expectSense(result: ScsiResult, cond: SenseCondition, what: string): void {
  expectStatus(result, Status.CHECK_CONDITION, what);
  expect(senseMatches(result.sense, cond), `${what}: ${describeSense(result.sense)}`).to.equal(true);
}

function open(device: string, writable: boolean): DeviceHandle {
  const fd = fs.openSync(device, (writable ? fs.constants.O_RDWR : fs.constants.O_RDONLY) | fs.constants.O_NONBLOCK);
  return { fd, path: device, writable };
}

/** Consumes pending unit attentions on a path (TEST UNIT READY until GOOD), so the next PR command runs. */
async function drainUnitAttentions(fd: number): Promise<void> {
  for (let i = 0; i < 8; i++) {
    const r = await sgIo(fd, { cdb: Buffer.alloc(6), direction: 'none' });
    if (r.errno === undefined && r.hostStatus === 0 && r.status === Status.GOOD) return;
  }
  throw new Error(`fd ${fd} still reports unit attentions after 8 TEST UNIT READYs`);
}

/** Removes every registration and reservation through an independent tool. */
function clearLu(device: string): void {
  for (let i = 0; i < 3; i++) run('sg_persist', ['--out', '--no-inquiry', '--register-ignore', `--param-sark=${hex(CLEANUP_KEY)}`, device], { allowFailure: true });
  run('sg_persist', ['--out', '--no-inquiry', '--clear', `--param-rk=${hex(CLEANUP_KEY)}`, device]);
  expect(readKeys(device).keys, 'LU clean').to.deep.equal([]);
}

describe(`sg and blkpr backends on LIO (${process.env.LAB_FABRIC ?? 'outside the lab'})`, function () {
  this.timeout(120_000);
  const topology = labTopology();
  const [pathA, pathB] = topology.pathDevices;
  const handles: DeviceHandle[] = [];
  let a: DeviceHandle;
  let b: DeviceHandle;
  let aReadOnly: DeviceHandle;
  let map: DeviceHandle;
  const sg = new SgBackend({ timeoutMs: 20_000 });
  const blkpr = new BlkprBackend({ timeoutMs: 20_000 });

  const drainAll = async () => {
    for (const h of [a, b]) await drainUnitAttentions(h.fd);
  };
  const out = (backend: PrBackend, handle: DeviceHandle, request: PrOutRequest) => prOut(bindBackend(backend, handle), request);
  const keysOf = (backend: PrBackend, handle: DeviceHandle) => prReadKeys(bindBackend(backend, handle));

  before(async function () {
    // multipathd must not re-register keys behind the tests' backs.
    multipathd(`unsetprkey map ${topology.mpathName}`);
    clearLu(pathA);
    a = open(pathA, true);
    b = open(pathB, true);
    aReadOnly = open(pathA, false);
    map = open(topology.mpathDevice, true);
    handles.push(a, b, aReadOnly, map);
    await drainAll();
  });

  after(async function () {
    await Promise.all([sg.close(), blkpr.close()]);
    for (const h of handles) fs.closeSync(h.fd);
    clearLu(pathA);
  });

  describe('the resolver on real devices', function () {
    it('classifies the paths as SCSI disks and the map as dm-multipath', function () {
      expect(describeHandle(a).class).to.equal('scsi-block');
      expect(describeHandle(map).class).to.equal('dm-multipath');
      const dm = open(topology.dmDevice, false);
      try {
        expect(describeHandle(dm).class).to.equal('dm-multipath');
      } finally {
        fs.closeSync(dm.fd);
      }
    });

    it('classifies the sg node of a path as scsi-generic and reads keys through it', async function () {
      const name = pathA.replace(/^\/dev\//, '');
      const sgNames = fs.readdirSync(`/sys/block/${name}/device/scsi_generic`);
      expect(sgNames).to.have.length(1);
      const node = open(`/dev/${sgNames[0]}`, false);
      try {
        expect(describeHandle(node).class).to.equal('scsi-generic');
        expect((await keysOf(sg, node)).keys).to.deep.equal([]);
      } finally {
        fs.closeSync(node.fd);
      }
    });

    it('without an mpath backend, routes paths to sg and the map to blkpr', async function () {
      const decisions: string[] = [];
      const resolver = new BackendResolver({ backends: { sg, blkpr }, onDecision: (d, c) => decisions.push(`${d.path}:${c.ok ? c.backend : 'refused'}`) });
      await keysOf(resolver, a);
      await keysOf(resolver, map);
      expect(decisions).to.deep.equal([`${pathA}:sg`, `${topology.mpathDevice}:blkpr`]);
    });
  });

  describe('SgBackend: SG_IO pass-through on single paths', function () {
    beforeEach(drainAll);

    it('REGISTER on both nexuses; READ KEYS sees both, as sg_persist does', async function () {
      const before = readKeys(pathA).generation;
      expectStatus(await out(sg, a, { action: 'register', serviceActionKey: KEY_A }), Status.GOOD, 'register A');
      expectStatus(await out(sg, b, { action: 'register', serviceActionKey: KEY_B }), Status.GOOD, 'register B');
      const keys = await keysOf(sg, b);
      expect(keys.keys).to.deep.equal([KEY_A, KEY_B]);
      expect(keys.generation).to.equal(before + 2);
      expect(readKeys(pathB)).to.deep.equal(keys);
    });

    it('PR IN asks for exactly the allocation length and returns what was transferred', async function () {
      const short = await runBytes(sg, a, buildPrIn(PrInAction.READ_KEYS, 12), Buffer.alloc(0));
      expectStatus(short, Status.GOOD, 'READ KEYS, 12 bytes');
      expect(short.dataIn.length).to.equal(12);
      expect(short.dataIn.readUInt32BE(4), 'additional length still says two keys').to.equal(16);
      const header = await runBytes(sg, a, buildPrIn(PrInAction.READ_KEYS, 8), Buffer.alloc(0));
      expect(header.dataIn.length).to.equal(8);
      const roomy = await runBytes(sg, a, buildPrIn(PrInAction.READ_KEYS, 4096), Buffer.alloc(0));
      expect(roomy.dataIn.length).to.be.within(24, 4096);
      const decoded = decodeReadKeys(roomy.dataIn);
      expect(decoded.ok && decoded.value.keys).to.deep.equal([KEY_A, KEY_B]);
    });

    it('RESERVE by A; READ RESERVATION through B shows it', async function () {
      expectStatus(await out(sg, a, { action: 'reserve', reservationKey: KEY_A, type: PrType.WRITE_EXCLUSIVE }), Status.GOOD, 'reserve');
      const reservation = await prReadReservation(bindBackend(sg, b));
      expect(reservation.reservation).to.deep.equal({ key: KEY_A, scope: 0, type: PrType.WRITE_EXCLUSIVE });
      expect(readReservation(pathB).holder).to.deep.equal({ key: KEY_A, type: PrType.WRITE_EXCLUSIVE });
    });

    it("the device's RESERVATION CONFLICT comes back unchanged", async function () {
      const result = await out(sg, b, { action: 'reserve', reservationKey: KEY_B, type: PrType.WRITE_EXCLUSIVE });
      expectStatus(result, Status.RESERVATION_CONFLICT, 'reserve by B');
      expect(result.sense.length).to.equal(0);
    });

    it("the device's sense for a bad type comes back unchanged (INVALID FIELD IN CDB)", async function () {
      const result = await out(sg, a, { action: 'reserve', reservationKey: KEY_A, type: 0x2 });
      expectSense(result, Sense.INVALID_FIELD_IN_CDB, 'reserve type 2');
      const decoded = decodeSense(result.sense)!;
      expect(decoded.format, 'LIO builds fixed-format sense').to.equal('fixed');
      expect(result.sense.length, 'the bytes the kernel handed over').to.be.at.least(8 + result.sense[7]);
    });

    it('a read-only fd: PR OUT refused with INVALID OPERATION CODE and never sent; PR IN allowed', async function () {
      const generation = readKeys(pathA).generation;
      expectSense(await out(sg, aReadOnly, { action: 'register', reservationKey: KEY_A, serviceActionKey: 0n }), Sense.INVALID_OPCODE, 'PR OUT on O_RDONLY');
      const after = readKeys(pathA);
      expect(after.generation, 'nothing reached the target').to.equal(generation);
      expect(after.keys).to.include(KEY_A);
      expect((await keysOf(sg, aReadOnly)).keys).to.deep.equal([KEY_A, KEY_B]);
    });

    it('PREEMPT by B removes A and takes the reservation; A then sees its unit attention unchanged', async function () {
      expectStatus(await out(sg, b, { action: 'preempt', reservationKey: KEY_B, serviceActionKey: KEY_A, type: PrType.EXCLUSIVE_ACCESS }), Status.GOOD, 'preempt');
      expect(readKeys(pathB).keys).to.deep.equal([KEY_B]);
      expect(readReservation(pathB).holder).to.deep.equal({ key: KEY_B, type: PrType.EXCLUSIVE_ACCESS });
      // multipathd's path checker may consume the unit attention first; if it is still there it must be 06/2A/05.
      const first = await runBytes(sg, a, buildPrIn(PrInAction.READ_KEYS), Buffer.alloc(0));
      if (first.status === Status.CHECK_CONDITION) expectSense(first, Sense.REGISTRATIONS_PREEMPTED, 'A after being preempted');
      else expectStatus(first, Status.GOOD, 'A after being preempted');
    });

    it('RELEASE by the holder removes the reservation', async function () {
      expectStatus(await out(sg, b, { action: 'release', reservationKey: KEY_B, type: PrType.EXCLUSIVE_ACCESS }), Status.GOOD, 'release');
      expect((await prReadReservation(bindBackend(sg, a))).reservation).to.equal(undefined);
      expect(readReservation(pathA).holder).to.equal(undefined);
    });

    it('CLEAR removes every registration', async function () {
      expectStatus(await out(sg, a, { action: 'register', serviceActionKey: KEY_A }), Status.GOOD, 'register A again');
      expectStatus(await out(sg, b, { action: 'reserve', reservationKey: KEY_B, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY }), Status.GOOD, 'reserve');
      expectStatus(await out(sg, a, { action: 'clear', reservationKey: KEY_A }), Status.GOOD, 'clear');
      await drainAll(); // B holds a RESERVATIONS PREEMPTED unit attention now
      expect(readKeys(pathB).keys).to.deep.equal([]);
      expect(readReservation(pathB).holder).to.equal(undefined);
    });
  });

  describe('BlkprBackend on a single path (/dev/sdX)', function () {
    beforeEach(drainAll);

    it('REGISTER through IOC_PR_REGISTER registers this nexus only, with APTPL forced on by sd', async function () {
      expectStatus(await out(blkpr, a, { action: 'register', serviceActionKey: KEY_A }), Status.GOOD, 'register');
      expect(readKeys(pathB).keys).to.deep.equal([KEY_A]);
      const entries = readFullStatus(pathB).entries;
      expect(entries).to.have.length(1);
      const caps = run('sg_persist', ['--in', '--no-inquiry', '--report-capabilities', pathB]).stdout;
      expect(caps, caps).to.match(/\(PTPL_A\):\s*1/);
    });

    it('PR IN goes through SG_IO on the same fd', async function () {
      expect((await keysOf(blkpr, a)).keys).to.deep.equal([KEY_A]);
    });

    it('RESERVE maps the SCSI type to the kernel enum (WE_RO 5 → PR_WRITE_EXCLUSIVE_REG_ONLY 3 → 5 on the wire)', async function () {
      expectStatus(await out(blkpr, a, { action: 'reserve', reservationKey: KEY_A, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY }), Status.GOOD, 'reserve');
      expect(readReservation(pathB).holder).to.deep.equal({ key: KEY_A, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY });
      for (const type of [PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS, PrType.WRITE_EXCLUSIVE]) {
        // The holder may not change the type: the target itself says RESERVATION CONFLICT, proving the type reached it.
        expectStatus(await out(blkpr, a, { action: 'reserve', reservationKey: KEY_A, type }), Status.RESERVATION_CONFLICT, `re-reserve as ${type}`);
      }
    });

    it('a RESERVATION CONFLICT from the target arrives as the ioctl return 0x18', async function () {
      expectStatus(await out(blkpr, b, { action: 'register', serviceActionKey: KEY_B }), Status.GOOD, 'register B');
      expectStatus(await out(blkpr, b, { action: 'reserve', reservationKey: KEY_B, type: PrType.WRITE_EXCLUSIVE }), Status.RESERVATION_CONFLICT, 'reserve by B');
    });

    it('a type the kernel cannot carry is refused before any ioctl', async function () {
      const generation = readKeys(pathA).generation;
      expectSense(await out(blkpr, a, { action: 'reserve', reservationKey: KEY_A, type: 0x4 }), Sense.INVALID_FIELD_IN_CDB, 'type 4');
      expect(readKeys(pathA).generation).to.equal(generation);
    });

    it('a CHECK CONDITION loses its sense in the kernel: PREEMPT of key 0 → I/O PROCESS TERMINATED', async function () {
      // Through SG_IO the target's own answer is visible: ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST
      // (a zero service action key preempts nothing unless the reservation is all-registrants)...
      const request: PrOutRequest = { action: 'preempt', reservationKey: KEY_A, serviceActionKey: 0n, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY };
      expectSense(await out(sg, a, request), Sense.INVALID_FIELD_IN_PARAMETER_LIST, 'PREEMPT key 0 through SG_IO');
      // ...but 6.1's sd_pr_command keeps the sense to dmesg and returns only the status byte.
      expectSense(await out(blkpr, a, request), Sense.IO_ERROR, 'PREEMPT key 0 through IOC_PR_PREEMPT');
      expect(readReservation(pathA).holder).to.deep.equal({ key: KEY_A, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY });
    });

    it('a pending unit attention does not fail the next PR OUT (retried, as sd does since 6.9)', async function () {
      // A's RELEASE of a registrants-only reservation gives B a unit attention (RESERVATIONS RELEASED).
      expectStatus(await out(blkpr, a, { action: 'release', reservationKey: KEY_A, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY }), Status.GOOD, 'release');
      expectStatus(await out(blkpr, b, { action: 'reserve', reservationKey: KEY_B, type: PrType.EXCLUSIVE_ACCESS }), Status.GOOD, 'reserve by B');
      expect(readReservation(pathA).holder).to.deep.equal({ key: KEY_B, type: PrType.EXCLUSIVE_ACCESS });
    });

    it('PREEMPT through IOC_PR_PREEMPT', async function () {
      expectStatus(await out(blkpr, a, { action: 'preempt', reservationKey: KEY_A, serviceActionKey: KEY_B, type: PrType.WRITE_EXCLUSIVE }), Status.GOOD, 'preempt');
      expect(readKeys(pathA).keys).to.deep.equal([KEY_A]);
      expect(readReservation(pathA).holder).to.deep.equal({ key: KEY_A, type: PrType.WRITE_EXCLUSIVE });
    });

    it('REGISTER AND IGNORE EXISTING KEY through PR_FL_IGNORE_KEY', async function () {
      expectStatus(await out(blkpr, a, { action: 'register-ignore', serviceActionKey: KEY_M2 }), Status.GOOD, 'register-ignore');
      expect(readKeys(pathA).keys).to.deep.equal([KEY_M2]);
    });

    it('a read-only fd: PR OUT refused', async function () {
      expectSense(await out(blkpr, aReadOnly, { action: 'clear', reservationKey: KEY_M2 }), Sense.INVALID_OPCODE, 'clear on O_RDONLY');
      expect(readKeys(pathA).keys).to.deep.equal([KEY_M2]);
    });

    it('CLEAR through IOC_PR_CLEAR', async function () {
      expectStatus(await out(blkpr, a, { action: 'clear', reservationKey: KEY_M2 }), Status.GOOD, 'clear');
      expect(readKeys(pathA).keys).to.deep.equal([]);
      expect(readReservation(pathA).holder).to.equal(undefined);
    });

    it('what IOC_PR_* cannot express is refused: REGISTER AND MOVE, ALL_TG_PT', async function () {
      expectSense(await out(blkpr, a, { action: 'register', serviceActionKey: KEY_A, allTgPt: true }), Sense.INVALID_FIELD_IN_PARAMETER_LIST, 'ALL_TG_PT');
      const move = buildPrOut({ action: 'register', serviceActionKey: KEY_A });
      move.cdb[1] = 0x07;
      expectSense(await runBytes(blkpr, a, move.cdb, move.dataOut), Sense.INVALID_FIELD_IN_CDB, 'REGISTER AND MOVE');
      expect(readKeys(pathA).keys).to.deep.equal([]);
    });
  });

  describe(`BlkprBackend on the multipath map (${topology.mpathDevice})`, function () {
    const onMap = (): PrExecutor => bindBackend(blkpr, map);
    beforeEach(drainAll);

    it('SG_IO on the map reaches a path (dm passes it through): PR IN works on the map fd itself', async function () {
      const direct = await passThroughPr(map.fd, prInCommand(PrInAction.READ_KEYS));
      expect(direct.errno, 'SG_IO on the dm fd').to.equal(undefined);
      expectStatus(direct.result, Status.GOOD, 'READ KEYS on the map');
    });

    it('REGISTER goes down every path: each path shows the key (READ KEYS on each path)', async function () {
      expectStatus(await prOut(onMap(), { action: 'register', serviceActionKey: KEY_M }), Status.GOOD, 'register on the map');
      for (const device of topology.pathDevices) {
        expect(readKeys(device).keys, device).to.deep.equal(topology.pathDevices.map(() => KEY_M));
      }
      for (const h of [a, b]) expect((await keysOf(sg, h)).keys, h.path).to.deep.equal(topology.pathDevices.map(() => KEY_M));
      expect((await prReadKeys(onMap())).keys).to.deep.equal(topology.pathDevices.map(() => KEY_M));
    });

    it('PR IN falls back to a running slave path when the map refuses SG_IO (suspended map: EAGAIN)', async function () {
      run('dmsetup', ['suspend', '--noflush', topology.mpathName]);
      try {
        const direct = await passThroughPr(map.fd, prInCommand(PrInAction.READ_KEYS));
        expect(direct.errno, 'SG_IO on a suspended map').to.equal(LinuxErrno.EAGAIN);
        expect((await prReadKeys(onMap())).keys).to.deep.equal(topology.pathDevices.map(() => KEY_M));
      } finally {
        run('dmsetup', ['resume', topology.mpathName]);
      }
    });

    it('RESERVE (all registrants) and RELEASE through the map', async function () {
      expectStatus(await prOut(onMap(), { action: 'reserve', reservationKey: KEY_M, type: PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS }), Status.GOOD, 'reserve');
      expect(readReservation(pathB).holder).to.deep.equal({ key: 0n, type: PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS });
      expect((await prReadReservation(onMap())).reservation?.type).to.equal(PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS);
      expectStatus(await prOut(onMap(), { action: 'release', reservationKey: KEY_M, type: PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS }), Status.GOOD, 'release');
      await drainAll(); // releasing an all-registrants reservation gives the other path RESERVATIONS RELEASED
      expect(readReservation(pathB).holder).to.equal(undefined);
    });

    it('RESERVE Write Exclusive through the map: one path holds it (the limit the mpath backend exists for)', async function () {
      expectStatus(await prOut(onMap(), { action: 'reserve', reservationKey: KEY_M, type: PrType.WRITE_EXCLUSIVE }), Status.GOOD, 'reserve');
      const holders = readFullStatus(pathA).entries.filter((e) => e.holder);
      expect(holders).to.have.length(1);
      expectStatus(await prOut(onMap(), { action: 'release', reservationKey: KEY_M, type: PrType.WRITE_EXCLUSIVE }), Status.GOOD, 'release');
    });

    it('REGISTER AND IGNORE on the map replaces the key on every path', async function () {
      expectStatus(await prOut(onMap(), { action: 'register-ignore', serviceActionKey: KEY_M2 }), Status.GOOD, 'register-ignore');
      for (const device of topology.pathDevices) expect(readKeys(device).keys, device).to.deep.equal(topology.pathDevices.map(() => KEY_M2));
    });

    it('unregister (REGISTER to key 0) on the map removes every path', async function () {
      expectStatus(await prOut(onMap(), { action: 'register', reservationKey: KEY_M2, serviceActionKey: 0n }), Status.GOOD, 'unregister');
      expect(readKeys(pathA).keys).to.deep.equal([]);
    });

    it('CLEAR through the map', async function () {
      expectStatus(await prOut(onMap(), { action: 'register', serviceActionKey: KEY_M }), Status.GOOD, 'register');
      expectStatus(await prOut(onMap(), { action: 'clear', reservationKey: KEY_M }), Status.GOOD, 'clear');
      await drainAll(); // the path that did not carry the CLEAR holds a unit attention now
      expect(readKeys(pathB).keys).to.deep.equal([]);
    });
  });

  if (topology.fabric === 'iscsi' && topology.hostB) {
    const hostBDevice = topology.hostB.device;
    describe('PREEMPT AND ABORT (iSCSI only; it deadlocks LIO over tcm_loop)', function () {
      let hostB: DeviceHandle;
      before(async function () {
        hostB = open(hostBDevice, true);
        handles.push(hostB);
        await drainUnitAttentions(hostB.fd);
      });
      beforeEach(drainAll);

      it('sg: host B preempts-and-aborts host A (registered through the map with blkpr)', async function () {
        expectStatus(await prOut(bindBackend(blkpr, map), { action: 'register', serviceActionKey: KEY_M }), Status.GOOD, 'register A on the map');
        expectStatus(await prOut(bindBackend(blkpr, map), { action: 'reserve', reservationKey: KEY_M, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY }), Status.GOOD, 'reserve A');
        expectStatus(await out(sg, hostB, { action: 'register', serviceActionKey: KEY_B }), Status.GOOD, 'register B');
        const result = await out(sg, hostB, { action: 'preempt-abort', reservationKey: KEY_B, serviceActionKey: KEY_M, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY });
        expectStatus(result, Status.GOOD, 'preempt-abort');
        expect(readKeys(hostBDevice).keys).to.deep.equal([KEY_B]);
        expect(readReservation(hostBDevice).holder).to.deep.equal({ key: KEY_B, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY });
      });

      it('blkpr: IOC_PR_PREEMPT_ABORT through the map takes it back', async function () {
        expectStatus(await prOut(bindBackend(blkpr, map), { action: 'register', serviceActionKey: KEY_M }), Status.GOOD, 'register A again');
        expectStatus(
          await prOut(bindBackend(blkpr, map), { action: 'preempt-abort', reservationKey: KEY_M, serviceActionKey: KEY_B, type: PrType.EXCLUSIVE_ACCESS }),
          Status.GOOD,
          'preempt-abort by A',
        );
        await drainUnitAttentions(hostB.fd); // host B was preempted: REGISTRATIONS PREEMPTED
        expect(readKeys(hostBDevice).keys).to.deep.equal(topology.pathDevices.map(() => KEY_M));
        expect(readReservation(hostBDevice).holder?.type).to.equal(PrType.EXCLUSIVE_ACCESS);
        clearLu(pathA);
      });

      it('blkpr on 6.1 fails a PR OUT on a pending unit attention unless retried (host B: no path checker eats it)', async function () {
        clearLu(pathA);
        await drainUnitAttentions(hostB.fd);
        const registrantsOnly = PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY;
        const giveHostBAUnitAttention = async () => {
          // Releasing a registrants-only reservation sets RESERVATIONS RELEASED for every other registrant.
          expectStatus(await out(sg, a, { action: 'reserve', reservationKey: KEY_A, type: registrantsOnly }), Status.GOOD, 'reserve A');
          expectStatus(await out(sg, a, { action: 'release', reservationKey: KEY_A, type: registrantsOnly }), Status.GOOD, 'release A');
        };
        expectStatus(await out(sg, a, { action: 'register', serviceActionKey: KEY_A }), Status.GOOD, 'register A');
        expectStatus(await out(sg, hostB, { action: 'register', serviceActionKey: KEY_B }), Status.GOOD, 'register B');

        await giveHostBAUnitAttention();
        const noRetry = new BlkprBackend({ prOutAttempts: 1 });
        const failed = await out(noRetry, hostB, { action: 'reserve', reservationKey: KEY_B, type: PrType.EXCLUSIVE_ACCESS });
        await noRetry.close();
        expectSense(failed, Sense.IO_ERROR, 'RESERVE by B through IOC_PR_RESERVE without retry');
        expect(readReservation(hostBDevice).holder, 'the target did not run it').to.equal(undefined);

        await giveHostBAUnitAttention();
        expectStatus(await out(blkpr, hostB, { action: 'reserve', reservationKey: KEY_B, type: PrType.EXCLUSIVE_ACCESS }), Status.GOOD, 'RESERVE by B, retried');
        expect(readReservation(hostBDevice).holder).to.deep.equal({ key: KEY_B, type: PrType.EXCLUSIVE_ACCESS });
        clearLu(hostBDevice);
      });
    });
  }
});
