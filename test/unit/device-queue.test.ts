import { expect } from 'chai';
import { DeviceQueue } from '../../src/backends/sg/device-queue';
import { deferred, rejectionOf, settle } from '../support/wait';

describe('DeviceQueue: one command in flight per device', function () {
  it('runs tasks for one device strictly one after another, in order', async function () {
    const queue = new DeviceQueue();
    const started: string[] = [];
    const gates = [deferred<void>(), deferred<void>(), deferred<void>()];
    const results = gates.map((gate, i) =>
      queue.run('8:16', async () => {
        started.push(`t${i}`);
        await gate.promise;
        return i;
      }),
    );
    await settle();
    expect(started).to.deep.equal(['t0']);
    gates[1].resolve(); // finishing out of order changes nothing: t1 has not started
    await settle();
    expect(started).to.deep.equal(['t0']);
    gates[0].resolve();
    await settle();
    expect(started).to.deep.equal(['t0', 't1', 't2']);
    gates[2].resolve();
    expect(await Promise.all(results)).to.deep.equal([0, 1, 2]);
  });

  it('a hung device does not hold up another device', async function () {
    const queue = new DeviceQueue();
    const hung = deferred<void>();
    const first = queue.run('8:16', () => hung.promise);
    const other = await queue.run('8:32', async () => 'other done');
    expect(other).to.equal('other done');
    expect(queue.size).to.equal(1);
    hung.resolve();
    await first;
    expect(queue.size).to.equal(0);
  });

  it('a failing task rejects its caller and lets the next one run', async function () {
    const queue = new DeviceQueue();
    const failing = queue.run('k', async () => {
      throw new Error('device exploded');
    });
    const throwingSync = queue.run('k', () => {
      throw new Error('sync throw');
    });
    const next = queue.run('k', async () => 'next');
    expect(((await rejectionOf(failing)) as Error).message).to.equal('device exploded');
    expect(((await rejectionOf(throwingSync)) as Error).message).to.equal('sync throw');
    expect(await next).to.equal('next');
  });

  it('an already aborted signal rejects without running the task', async function () {
    const queue = new DeviceQueue();
    const controller = new AbortController();
    controller.abort(new Error('client went away'));
    let ran = false;
    const refused = await rejectionOf(
      queue.run('k', async () => {
        ran = true;
      }, controller.signal),
    );
    expect(ran).to.equal(false);
    expect((refused as Error).message).to.equal('client went away');
  });

  it('aborting a waiting task removes it from the queue at once', async function () {
    const queue = new DeviceQueue();
    const hung = deferred<void>();
    const running = queue.run('k', () => hung.promise);
    const controller = new AbortController();
    let ran = false;
    const waiting = queue.run('k', async () => {
      ran = true;
    }, controller.signal);
    expect(queue.size).to.equal(2);
    controller.abort();
    expect(((await rejectionOf(waiting)) as Error).name).to.equal('AbortError');
    expect(queue.size).to.equal(1);
    hung.resolve();
    await running;
    await settle();
    expect(ran).to.equal(false);
  });

  it('aborting a running task does not interrupt it', async function () {
    const queue = new DeviceQueue();
    const gate = deferred<void>();
    const controller = new AbortController();
    const running = queue.run('k', async () => {
      await gate.promise;
      return 'completed';
    }, controller.signal);
    await settle();
    controller.abort();
    gate.resolve();
    expect(await running).to.equal('completed');
  });

  it('idle() resolves once everything has settled', async function () {
    const queue = new DeviceQueue();
    await queue.idle(); // empty: resolves at once
    const gate = deferred<void>();
    void queue.run('a', () => gate.promise);
    let idle = false;
    const waiting = queue.idle().then(() => {
      idle = true;
    });
    await settle();
    expect(idle).to.equal(false);
    gate.resolve();
    await waiting;
    expect(idle).to.equal(true);
  });
});
