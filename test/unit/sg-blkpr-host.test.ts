// The sg and blkpr backends and their ffi calls against what this host has: no SCSI
// devices and no device-mapper, so every native call here really runs (on the threadpool)
// and the kernel really refuses it. The SCSI behaviour itself is tested in the lab
// (test/lab/sg-blkpr.lab.ts).

import { runBytes } from '../support/pr-bytes';
import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { prClear, prPreempt, prRegister, prRelease, prReserve, BlockPrType } from '../../ffi/block-pr';
import { LinuxErrno } from '../../ffi/errno';
import { NativeMemory, iow } from '../../ffi/ioctl';
import { sgIo } from '../../ffi/sg-io';
import type { DeviceHandle } from '../../src/backends/backend';
import { BlkprBackend } from '../../src/backends/blkpr/blkpr-backend';
import { SgBackend } from '../../src/backends/sg/sg-backend';
import { encodePrInCdb, encodePrOutCdb } from '../../src/scsi/cdb';
import { Status } from '../../src/scsi/constants';
import { encodePrOutParameters } from '../../src/scsi/parameter-list';
import { describeSense, Sense, senseMatches, type ScsiResult, type SenseCondition } from '../../src/scsi/sense';

const PR_IN_READ_KEYS = encodePrInCdb({ action: 0, allocationLength: 64 });
const REGISTER_PARAMS = encodePrOutParameters({ reservationKey: 0n, serviceActionKey: 0xabcn, specIPT: false, allTgPt: false, aptpl: false, transportIds: [] });
const REGISTER_CDB = encodePrOutCdb({ action: 0, parameterListLength: 24 });

function expectSense(result: ScsiResult, cond: SenseCondition): void {
  expect(result.status, `status ${result.status}`).to.equal(Status.CHECK_CONDITION);
  expect(senseMatches(result.sense, cond), describeSense(result.sense)).to.equal(true);
}

function withFd<T>(file: string, flags: number | string, body: (fd: number) => Promise<T>): Promise<T> {
  const fd = fs.openSync(file, flags);
  return body(fd).finally(() => fs.closeSync(fd));
}

describe('sg and blkpr on this host (no SCSI, no dm)', function () {
  let tmp: string;
  before(function () {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpr-sg-host-'));
  });
  after(function () {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  describe('ffi', function () {
    it('sgIo on /dev/null reports ENOTTY from the worker thread', async function () {
      await withFd('/dev/null', 'r', async (fd) => {
        const r = await sgIo(fd, { cdb: PR_IN_READ_KEYS, direction: 'from-dev', dxferLength: 64 });
        expect(r.errno).to.equal(LinuxErrno.ENOTTY);
        expect(r.dataIn.length).to.equal(0);
      });
    });
    it('sgIo on a closed fd reports EBADF', async function () {
      const fd = fs.openSync('/dev/null', 'r');
      fs.closeSync(fd);
      const r = await sgIo(fd, { cdb: PR_IN_READ_KEYS, direction: 'none' });
      expect(r.errno).to.equal(LinuxErrno.EBADF);
    });
    it('sgIo rejects malformed requests before any native call', async function () {
      const bad: Array<Parameters<typeof sgIo>[1]> = [
        { cdb: Buffer.alloc(4), direction: 'none' },
        { cdb: Buffer.alloc(17), direction: 'none' },
        { cdb: PR_IN_READ_KEYS, direction: 'none', dxferLength: 8 },
        { cdb: PR_IN_READ_KEYS, direction: 'from-dev', data: Buffer.alloc(1) },
        { cdb: PR_IN_READ_KEYS, direction: 'to-dev', dxferLength: 8 },
        { cdb: PR_IN_READ_KEYS, direction: 'from-dev', dxferLength: -1 },
        { cdb: PR_IN_READ_KEYS, direction: 'from-dev', dxferLength: 8, timeoutMs: 0 },
        { cdb: PR_IN_READ_KEYS, direction: 'from-dev', dxferLength: 8, maxSenseLength: 300 },
        { cdb: PR_IN_READ_KEYS, direction: 'sideways' as 'none' },
      ];
      for (const request of bad) {
        let error: unknown;
        try {
          await sgIo(0, request);
        } catch (err) {
          error = err;
        }
        expect(error, JSON.stringify({ ...request, cdb: request.cdb.length })).to.be.instanceOf(RangeError);
      }
    });
    it('IOC_PR_* on /dev/null: ENOTTY', async function () {
      await withFd('/dev/null', 'r+', async (fd) => {
        expect(await prRegister(fd, { oldKey: 0n, newKey: 1n })).to.deep.equal({ ret: -1, errno: LinuxErrno.ENOTTY });
        expect(await prReserve(fd, { key: 1n, type: BlockPrType.WRITE_EXCLUSIVE })).to.deep.equal({ ret: -1, errno: LinuxErrno.ENOTTY });
        expect(await prRelease(fd, { key: 1n, type: BlockPrType.WRITE_EXCLUSIVE })).to.deep.equal({ ret: -1, errno: LinuxErrno.ENOTTY });
        expect(await prPreempt(fd, { oldKey: 1n, newKey: 2n, type: BlockPrType.EXCLUSIVE_ACCESS, abort: true })).to.deep.equal({ ret: -1, errno: LinuxErrno.ENOTTY });
        expect(await prClear(fd, { key: 1n })).to.deep.equal({ ret: -1, errno: LinuxErrno.ENOTTY });
      });
    });
    it('IOC_PR_REGISTER on a loop device (no pr_ops): EOPNOTSUPP', async function () {
      if (!fs.existsSync('/dev/loop0')) this.skip();
      await withFd('/dev/loop0', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK, async (fd) => {
        expect(await prRegister(fd, { oldKey: 0n, newKey: 1n })).to.deep.equal({ ret: -1, errno: LinuxErrno.EOPNOTSUPP });
      });
    });
    it('the IOC_PR_* wrappers refuse keys and types the kernel cannot carry', function () {
      expect(() => prRegister(0, { oldKey: -1n, newKey: 0n })).to.throw(RangeError);
      expect(() => prRegister(0, { oldKey: 1n << 64n, newKey: 0n })).to.throw(RangeError);
      expect(() => prReserve(0, { key: 1n, type: 7 as 1 })).to.throw(RangeError);
    });
    it('NativeMemory is zeroed, addressable and refuses silly sizes', function () {
      const m = new NativeMemory(32);
      try {
        expect(m.bytes.every((b) => b === 0)).to.equal(true);
        expect(m.at(8) - m.address).to.equal(8n);
        expect(() => m.at(33)).to.throw(RangeError);
      } finally {
        m.free();
        m.free(); // idempotent
      }
      expect(() => new NativeMemory(0)).to.throw(RangeError);
    });
    it('iow encodes like <asm-generic/ioctl.h>', function () {
      expect(iow('p', 200, 24)).to.equal(0x401870c8);
    });
  });

  for (const [label, make] of [
    ['SgBackend', () => new SgBackend()],
    ['BlkprBackend', () => new BlkprBackend()],
  ] as const) {
    describe(label, function () {
      const backend = make();
      after(() => backend.close());

      it('PR IN on /dev/null: no SG_IO there → INVALID OPERATION CODE', async function () {
        await withFd('/dev/null', 'r', async (fd) => {
          expectSense(await runBytes(backend, { fd, path: '/dev/null', writable: false }, PR_IN_READ_KEYS, new Uint8Array(0)), Sense.INVALID_OPCODE);
        });
      });
      it('PR OUT on a read-only handle is refused before the fd is touched', async function () {
        // fd -1 would otherwise answer LUN COMMUNICATION FAILURE
        expectSense(await runBytes(backend, { fd: -1, path: '/dev/null', writable: false }, REGISTER_CDB, REGISTER_PARAMS), Sense.INVALID_OPCODE);
        expectSense(await runBytes(backend, { fd: -1, path: '/dev/null', writable: true }, REGISTER_CDB, REGISTER_PARAMS), Sense.LUN_COMMUNICATION_FAILURE);
      });
      it('an opcode other than PR IN/OUT → INVALID OPERATION CODE', async function () {
        expectSense(await runBytes(backend, { fd: -1, path: '/x', writable: true }, Buffer.from([0x12, 0, 0, 0, 0x24, 0]), new Uint8Array(0)), Sense.INVALID_OPCODE);
      });
      it('a parameter list that does not match the CDB → PARAMETER LIST LENGTH ERROR', async function () {
        expectSense(await runBytes(backend, { fd: -1, path: '/x', writable: true }, REGISTER_CDB, Buffer.alloc(20)), Sense.PARAMETER_LIST_LENGTH_ERROR);
      });
      it('PR IN with data-out, or a short CDB → INVALID FIELD IN CDB', async function () {
        expectSense(await runBytes(backend, { fd: -1, path: '/x', writable: true }, PR_IN_READ_KEYS, Buffer.alloc(4)), Sense.INVALID_FIELD_IN_CDB);
        expectSense(await runBytes(backend, { fd: -1, path: '/x', writable: true }, Buffer.from([0x5e, 0, 0, 0, 0, 0]), new Uint8Array(0)), Sense.INVALID_FIELD_IN_CDB);
      });
      it('an aborted signal rejects a command that has not started', async function () {
        const controller = new AbortController();
        controller.abort();
        let name = '';
        await withFd('/dev/null', 'r', async (fd) => {
          try {
            await runBytes(backend, { fd, path: '/dev/null', writable: false }, PR_IN_READ_KEYS, new Uint8Array(0), { signal: controller.signal });
          } catch (err) {
            name = (err as Error).name;
          }
        });
        expect(name).to.equal('AbortError');
      });
      it('a regular file (forced onto this backend) → INVALID OPERATION CODE', async function () {
        const file = path.join(tmp, `${label}.img`);
        fs.writeFileSync(file, Buffer.alloc(512));
        await withFd(file, 'r+', async (fd) => {
          const device: DeviceHandle = { fd, path: file, writable: true };
          expectSense(await runBytes(backend, device, REGISTER_CDB, REGISTER_PARAMS), Sense.INVALID_OPCODE);
        });
      });
    });
  }

  describe('BlkprBackend specifics', function () {
    it('PR OUT the ioctls cannot express is refused without a device', async function () {
      const backend = new BlkprBackend();
      const moveCdb = encodePrOutCdb({ action: 7, parameterListLength: 24 });
      expectSense(await runBytes(backend, { fd: -1, path: '/x', writable: true }, moveCdb, REGISTER_PARAMS), Sense.INVALID_FIELD_IN_CDB);
      await backend.close();
    });
    it('REGISTER on a loop device reaches the kernel and is refused (no pr_ops) → INVALID OPERATION CODE', async function () {
      if (!fs.existsSync('/dev/loop0')) this.skip();
      const backend = new BlkprBackend();
      await withFd('/dev/loop0', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK, async (fd) => {
        expectSense(await runBytes(backend, { fd, path: '/dev/loop0', writable: true }, REGISTER_CDB, REGISTER_PARAMS), Sense.INVALID_OPCODE);
      });
      await backend.close();
    });
    it('a closed backend refuses new commands', async function () {
      const backend = new BlkprBackend();
      await backend.close();
      let message = '';
      try {
        await runBytes(backend, { fd: -1, path: '/x', writable: true }, PR_IN_READ_KEYS, new Uint8Array(0));
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).to.match(/closed/);
    });
  });
});
