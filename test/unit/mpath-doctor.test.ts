import { expect } from 'chai';
import { formatMpathDoctor, judgeMap } from '../../src/cli/doctor';
import { listMultipathMaps } from '../../src/device';
import { FakeSysfs } from '../support/fake-sysfs';

describe('mpath doctor: judging a map from per-path READ KEYS', function () {
  const file = { source: 'file' as const };

  it('is consistent when the key appears once per answering path and multipathd holds it', function () {
    const paths = [{ name: 'sda', keys: ['0xa', '0xa'] }, { name: 'sdb', keys: ['0xa', '0xa'] }];
    expect(judgeMap(paths, '0xa', file)).to.deep.equal({ verdict: 'consistent', problems: [], hostKey: '0xa' });
  });

  it('flags a key registered on fewer nexuses than answering paths', function () {
    const paths = [{ name: 'sda', keys: ['0xa', '0xb'] }, { name: 'sdb', keys: ['0xa', '0xb'] }];
    const judged = judgeMap(paths, '0xa', file);
    expect(judged.verdict).to.equal('inconsistent');
    expect(judged.problems).to.deep.equal(['key 0xa is registered on 1 of 2 answering paths']);
  });

  it('without multipathd\'s key takes the most frequent key, and says multipathd does not know it', function () {
    const paths = [{ name: 'sda', keys: ['0xb', '0xa', '0xa'] }, { name: 'sdb', keys: ['0xb', '0xa', '0xa'] }];
    const judged = judgeMap(paths, null, file);
    expect(judged.hostKey).to.equal('0xa');
    expect(judged.verdict).to.equal('inconsistent');
    expect(judged.problems[0]).to.include('multipathd has no key for this map');
  });

  it('reports unregistered, unknown (no path answers) and a stale multipathd key', function () {
    expect(judgeMap([{ name: 'sda', keys: [] }], undefined, file)).to.deep.equal({ verdict: 'unregistered', problems: [] });
    expect(judgeMap([{ name: 'sda', error: 'EIO' }], undefined, file).verdict).to.equal('unknown');
    const stale = judgeMap([{ name: 'sda', keys: [] }], '0xa', file);
    expect(stale.verdict).to.equal('inconsistent');
    expect(stale.problems).to.deep.equal(['multipathd holds key 0xa but no path is registered with it']);
  });

  it('finds dm-multipath maps in sysfs and ignores other dm devices', function () {
    const fake = new FakeSysfs();
    try {
      fake.dmMap({ kname: 'dm-0', dev: '253:0', uuid: 'mpath-36001405aab', name: 'mpatha' });
      fake.dmMap({ kname: 'dm-1', dev: '253:1', uuid: 'LVM-abc', name: 'vg-lv' });
      expect(listMultipathMaps(fake.tree)).to.deep.equal([{ name: 'mpatha', rdev: { major: 253, minor: 0 } }]);
    } finally {
      fake.remove();
    }
  });

  it('formats a report with each path and the problems', function () {
    const text = formatMpathDoctor({
      library: { ok: true, abi: 'LIBMPATHPERSIST_2.1.0', path: '/lib/libmpathpersist.so.0' },
      reservationKey: { source: 'file' },
      multipathd: { reachable: true },
      maps: [{ name: 'mpatha', devT: '253:0', paths: [{ name: 'sda', dmState: 'active', checkerState: 'ready', keys: ['0xa'] }, { name: 'sdb', error: 'EIO' }], multipathdKey: '0xa', multipathdPrStatus: 'set', hostKey: '0xa', verdict: 'inconsistent', problems: ['x'] }],
      problems: ['mpatha: sdb: READ KEYS failed (EIO)'],
    });
    expect(text).to.include('map mpatha (253:0): inconsistent, key 0xa, multipathd key 0xa prstatus set');
    expect(text).to.include('  sda [active/ready]: keys 0xa');
    expect(text).to.include('  sdb: error: EIO');
    expect(text).to.include('  - mpatha: sdb: READ KEYS failed (EIO)');
  });
});
