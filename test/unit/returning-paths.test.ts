import { expect } from 'chai';
import { ReturningPathWatch, type WatchedRegistration } from '../../src/backends/mpath/returning-paths';
import { formatDevNumber } from '../../src/device';
import { eventually } from '../integration/serve-process';


describe('returning-path watch (rechecks a map until every path holds the key or none does)', function () {
  const key: WatchedRegistration = { key: 0xa0a0n, aptpl: false };

  it('rechecks while the check says waiting, with a growing interval, and stops at done', async function () {
    const calls: number[] = [];
    const answers: ('waiting' | 'done')[] = ['waiting', 'waiting', 'done'];
    const watch = new ReturningPathWatch(async () => {
      calls.push(Date.now());
      return answers.shift() ?? 'done';
    }, { intervalMs: 5, maxIntervalMs: 40 });
    watch.watch({ major: 253, minor: 0 }, key);
    await eventually(() => calls.length === 3 && watch.watching({ major: 253, minor: 0 }) === undefined, 'three checks and the end of the watch');
    expect(calls[2] - calls[1], 'the interval doubles').to.be.at.least(calls[1] - calls[0]);
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
    await eventually(() => seen.length === 1, 'one check');
    await new Promise((resolve) => setTimeout(resolve, 60));
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
    await eventually(() => checks >= 1, 'a check of the other map');
    watch.close();
    const after = checks;
    await new Promise((resolve) => setTimeout(resolve, 50));
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
    await eventually(() => checks === 2 && watch.watching({ major: 253, minor: 5 }) === undefined, 'the watch to end after the retry');
    expect(errors).to.deep.equal(['253:5: path vanished']);
    watch.close();
  });
});
