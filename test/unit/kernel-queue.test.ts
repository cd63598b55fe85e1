// The queue every fd-driven backend (sg, blkpr, mpath) keeps: no I/O without an open fd,
// nothing after close, one command at a time per device.

import { expect } from 'chai';
import type { DeviceHandle } from '../../src/device';
import { KernelCommandQueue, scsiTimeoutMs } from '../../src/backends/kernel-queue';
import { DEFAULT_SG_TIMEOUT_MS } from '../../src/backends/sg/pass-through';
import { Status } from '../../src/scsi/constants';
import { good, Sense, senseMatches, type ScsiResult } from '../../src/scsi/sense';

describe('kernel command queue (sg, blkpr and mpath backends)', function () {
  const device = (fd: number): DeviceHandle => ({ fd, path: '/dev/fake-lu', writable: true });
  // The lane is named here: the default (the fd's dev_t) would fstat whatever fd 7 is in this process.
  const LANE = '8:16';

  it('answers LUN COMMUNICATION FAILURE for a handle without an fd, without running the task', async function () {
    const commands = new KernelCommandQueue('TestBackend');
    let ran = false;
    const result = await commands.run(device(-1), async () => {
      ran = true;
      return good();
    }, undefined, LANE);
    expect(result.status).to.equal(Status.CHECK_CONDITION);
    expect(senseMatches(result.sense, Sense.LUN_COMMUNICATION_FAILURE)).to.equal(true);
    expect(ran).to.equal(false);
  });

  it('hands the task the fd and runs one task per device at a time, in order', async function () {
    const commands = new KernelCommandQueue('TestBackend');
    const events: string[] = [];
    let releaseFirst!: () => void;
    const firstHeld = new Promise<void>((resolve) => (releaseFirst = resolve));
    const first = commands.run(device(7), async (fd) => {
      events.push(`first on ${fd}`);
      await firstHeld;
      events.push('first done');
      return good();
    }, undefined, LANE);
    const second = commands.run(device(7), async (fd): Promise<ScsiResult> => {
      events.push(`second on ${fd}`);
      return good();
    }, undefined, LANE);
    await Promise.resolve();
    releaseFirst();
    await Promise.all([first, second]);
    expect(events).to.deep.equal(['first on 7', 'first done', 'second on 7']);
  });

  it('waits for running commands on close and refuses commands after it', async function () {
    const commands = new KernelCommandQueue('TestBackend');
    let finished = false;
    const running = commands.run(device(7), async () => {
      await new Promise((resolve) => setImmediate(resolve));
      finished = true;
      return good();
    }, undefined, LANE);
    await commands.close();
    expect(finished, 'close waited for the running command').to.equal(true);
    expect((await running).status).to.equal(Status.GOOD);
    expect(() => commands.assertOpen()).to.throw('TestBackend is closed');
    let error: unknown;
    await commands.run(device(7), async () => good(), undefined, LANE).catch((err: unknown) => (error = err));
    expect((error as Error).message).to.equal('TestBackend is closed');
  });

  it('takes a positive integer SCSI timeout, the default when none is given', function () {
    expect(scsiTimeoutMs(undefined)).to.equal(DEFAULT_SG_TIMEOUT_MS);
    expect(scsiTimeoutMs(1500)).to.equal(1500);
    expect(() => scsiTimeoutMs(0)).to.throw(RangeError);
    expect(() => scsiTimeoutMs(2.5)).to.throw(RangeError);
  });
});
