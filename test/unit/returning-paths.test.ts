import { expect } from 'chai';
import { ReturningPathWatch, type WatchedRegistration } from '../../src/backends/mpath/returning-paths';
import { formatDevNumber } from '../../src/device';
import { ManualClock } from '../support/clock';

// The watch runs on a manual clock: every recheck it would make within the advanced time has
// run when advance() returns, so "no more checks" is checked, not waited for.
describe('returning-path watch (rechecks a map until every path holds the key or none does)', function () {
  const key: WatchedRegistration = { key: 0xa0a0n, aptpl: false };
  let clock: ManualClock;

  beforeEach(() => {
    clock = new ManualClock().install();
  });
  afterEach(() => clock.uninstall());

  it('rechecks while the check says waiting, with a growing interval, and stops at done', async function () {
    const calls: number[] = [];
    const answers: ('waiting' | 'done')[] = ['waiting', 'waiting', 'done'];
    const watch = new ReturningPathWatch(async () => {
      calls.push(clock.now());
      return answers.shift() ?? 'done';
    }, { intervalMs: 5, maxIntervalMs: 40 });
    watch.watch({ major: 253, minor: 0 }, key);
    await clock.advance(60_000);
    expect(calls, 'three checks').to.have.length(3);
    expect(watch.watching({ major: 253, minor: 0 }), 'the end of the watch').to.equal(undefined);
    expect(calls[2] - calls[1], 'the interval doubles').to.be.at.least(calls[1] - calls[0]);
    expect(clock.pending, 'nothing left scheduled').to.equal(0);
    watch.close();
  });

  it('hands the check the map and the key, and a new watch replaces the old key', async function () {
    const seen: string[] = [];
    const watch = new ReturningPathWatch(async (map, registration) => {
      seen.push(`${formatDevNumber(map)} ${registration.key.toString(16)}`);
      return 'done';
    }, { intervalMs: 20 });
    watch.watch({ major: 253, minor: 1 }, key);
    watch.watch({ major: 253, minor: 1 }, { key: 0xb0b0n, aptpl: true });
    expect(watch.watching({ major: 253, minor: 1 })).to.deep.equal({ key: 0xb0b0n, aptpl: true });
    await clock.advance(60_000);
    expect(seen).to.deep.equal(['253:1 b0b0']);
    watch.close();
  });

  it('cancel and close stop every recheck', async function () {
    let checks = 0;
    const watch = new ReturningPathWatch(async () => {
      checks++;
      return 'waiting';
    }, { intervalMs: 5 });
    watch.watch({ major: 253, minor: 2 }, key);
    watch.watch({ major: 253, minor: 3 }, key);
    watch.cancel({ major: 253, minor: 2 });
    await clock.advance(5);
    expect(checks, 'a check of the other map').to.equal(1);
    watch.close();
    const after = checks;
    expect(clock.pending, 'close leaves no recheck scheduled').to.equal(0);
    await clock.advance(60_000);
    expect(checks).to.be.at.most(after + 1);
    expect(watch.watching({ major: 253, minor: 2 })).to.equal(undefined);
    expect(watch.watching({ major: 253, minor: 3 })).to.equal(undefined);
    watch.watch({ major: 253, minor: 4 }, key);
    expect(watch.watching({ major: 253, minor: 4 }), 'a closed watch takes no new maps').to.equal(undefined);
  });

  it('a check that throws reports the error and is tried again', async function () {
    const errors: string[] = [];
    let checks = 0;
    const watch = new ReturningPathWatch(async () => {
      checks++;
      if (checks === 1) throw new Error('path vanished');
      return 'done';
    }, { intervalMs: 5, onError: (map, err) => errors.push(`${formatDevNumber(map)}: ${(err as Error).message}`) });
    watch.watch({ major: 253, minor: 5 }, key);
    await clock.advance(60_000);
    expect(checks, 'the retry').to.equal(2);
    expect(watch.watching({ major: 253, minor: 5 }), 'the watch ended after the retry').to.equal(undefined);
    expect(errors).to.deep.equal(['253:5: path vanished']);
    watch.close();
  });
});
