// @lab {"fabric": "tcm_loop", "paths": 2}
// @lab {"fabric": "iscsi", "paths": 2, "secondHost": true}
//
// Proves the lab itself: a real dm-multipath map over LIO with working SPC-3
// persistent reservations, multipathd keeping path registrations in step, and
// (iSCSI only, since it deadlocks LIO over tcm_loop) PREEMPT AND ABORT from a
// second host. On tcm_loop it also records real multipathd replies for the
// reply parsers (fixtures/multipathd, copied back with --update-fixtures).

import { expect } from 'chai';
import {
  labTopology,
  mapPaths,
  multipathd,
  readFullStatus,
  readKeys,
  readReservation,
  run,
  waitFor,
  writeArtifact,
} from './harness/lab-guest';

const KEY_A = 0x1234n;
const KEY_B = 0xbbbbn;
const WE_RO = 5;

describe(`lab smoke (${process.env.LAB_FABRIC ?? 'outside the lab'})`, function () {
  this.timeout(120_000);
  const topology = labTopology();
  const captureFixtures = topology.fabric === 'tcm_loop';
  const fixture = (name: string, reply: string) => {
    if (captureFixtures) writeArtifact(topology, `fixtures/multipathd/${name}.txt`, reply);
  };
  const shortName = (device: string) => device.replace(/^\/dev\//, '');

  // Suites in one boot share the LU: leave no registration and no multipathd prkey behind.
  after(function () {
    if (readKeys(topology.pathDevices[0]).keys.includes(KEY_A)) {
      run('mpathpersist', ['--out', '--clear', `--param-rk=0x${KEY_A.toString(16)}`, topology.mpathDevice]);
    }
    multipathd(`unsetprkey map ${topology.mpathName}`);
    expect(readKeys(topology.pathDevices[0]).keys).to.not.include(KEY_A);
  });

  it(`has ${topology.mpathDevice} with every lab path active and ready`, function () {
    const paths = mapPaths(topology.mpathName);
    expect(paths.map((p) => p.device).sort()).to.deep.equal([...topology.pathDevices].sort());
    for (const p of paths) expect(p, p.device).to.include({ dmState: 'active', checkerState: 'ready' });
    expect(run('multipathd', ['show', 'maps', 'raw', 'format', '%n %w']).stdout.trim()).to.equal(
      `${topology.mpathName} ${topology.wwid}`,
    );
    if (topology.hostB) {
      expect(topology.pathDevices).not.to.include(topology.hostB.device);
      expect(readKeys(topology.hostB.device).keys, 'host B reaches the same LU').to.be.an('array');
    }
  });

  it('records multipathd replies with no key registered', function () {
    const status = multipathd(`getprstatus map ${topology.mpathName}`);
    const key = multipathd(`getprkey map ${topology.mpathName}`);
    // 0.9.4 answers getprstatus with a bare digit; newer releases with unset/set.
    expect(status).to.match(/^(0|unset\n)$/);
    expect(key).to.equal('none\n');
    fixture('getprstatus-unset', status);
    fixture('getprkey-none', key);
  });

  it('mpathpersist REGISTER through the map registers the key on every path', function () {
    run('mpathpersist', ['--out', '--register', `--param-sark=0x${KEY_A.toString(16)}`, topology.mpathDevice]);
    for (const device of topology.pathDevices) {
      const { keys } = readKeys(device);
      expect(keys, device).to.deep.equal(topology.pathDevices.map(() => KEY_A));
    }
    const registered = readFullStatus(topology.pathDevices[0]).entries;
    expect(registered).to.have.length(topology.pathDevices.length);
    if (topology.fabric === 'tcm_loop') {
      const sasAddresses = topology.pathInitiators.map((nexus) => `SAS address: 0x${nexus.replace(/^naa\./, '')}`);
      expect(registered.map((e) => e.transportId).sort()).to.deep.equal(sasAddresses.sort());
    }
    expect(multipathd(`getprstatus map ${topology.mpathName}`)).to.match(/^(1|set\n)$/);
    expect(multipathd(`getprkey map ${topology.mpathName}`)).to.equal(`0x${KEY_A.toString(16)}\n`);
  });

  it('records multipathd replies with a key registered', function () {
    const replies: Record<string, string | string[]> = {
      'getprstatus-set': `getprstatus map ${topology.mpathName}`,
      'getprkey-set': `getprkey map ${topology.mpathName}`,
      'show-maps': 'show maps',
      'show-maps-json': 'show maps json',
      'show-map-json': `show map ${topology.mpathName} json`,
      'show-paths': 'show paths',
      'show-paths-format': ['show', 'paths', 'format', '%i %d %D %p %t %T %o %m %w'],
      'show-topology': 'show topology',
      'show-status': 'show status',
      'show-daemon': 'show daemon',
      'setprkey-ok': `setprkey map ${topology.mpathName} key 0x${KEY_A.toString(16)}`,
      'fail-path-unknown-device': 'fail path sdzz',
      'unknown-command': 'list commands',
      'getprkey-unknown-map': 'getprkey map nosuchmap',
    };
    for (const [name, command] of Object.entries(replies)) {
      const reply = multipathd(command);
      expect(reply, [command].flat().join(" ")).to.not.equal("");
      fixture(name, reply);
    }
    expect(JSON.parse(multipathd('show maps json')).maps).to.have.length(1);
    expect(JSON.parse(multipathd(`show map ${topology.mpathName} json`)).map.name).to.equal(topology.mpathName);
    expect(multipathd('show daemon')).to.match(/^pid \d+ (idle|running)\n$/);
    expect(multipathd(`setprkey map ${topology.mpathName} key 0x${KEY_A.toString(16)}`)).to.equal('ok\n');
    expect(multipathd('fail path sdzz')).to.equal('fail\n');
    fixture('prkeys-file', run('cat', ['/etc/multipath/prkeys']).stdout);
  });

  it('multipathd registers a reinstated path that lost its registration, on its next check', async function () {
    const victim = topology.pathDevices[topology.pathDevices.length - 1];
    const failReply = multipathd(`fail path ${shortName(victim)}`);
    expect(failReply).to.equal('ok\n');
    fixture('fail-path-ok', failReply);
    await waitFor(`${victim} failed in the map`, () => mapPaths(topology.mpathName).find((p) => p.device === victim)?.dmState === 'failed', {
      timeoutMs: 10_000,
    });
    fixture('show-paths-one-failed', multipathd('show paths'));
    fixture('show-maps-json-one-failed', multipathd('show maps json'));
    // Drop this path's own registration behind multipathd's back, as a target-side reset or a
    // PREEMPT of just this nexus would; only the re-registration on reinstate can bring it back.
    run('sg_persist', ['--out', '--register', `--param-rk=0x${KEY_A.toString(16)}`, '--param-sark=0', victim]);
    expect(readKeys(victim).keys).to.have.length(topology.pathDevices.length - 1);

    const reinstateReply = multipathd(`reinstate path ${shortName(victim)}`);
    expect(reinstateReply).to.equal('ok\n');
    fixture('reinstate-path-ok', reinstateReply);
    await waitFor(
      `multipathd to re-register ${victim}`,
      () => readKeys(victim).keys.length === topology.pathDevices.length,
      { timeoutMs: 20_000, intervalMs: 250, describe: () => JSON.stringify(readKeys(victim).keys.map(String)) },
    );
    const paths = mapPaths(topology.mpathName);
    for (const p of paths) expect(p, p.device).to.include({ dmState: 'active' });
    for (const device of topology.pathDevices) {
      expect(readKeys(device).keys, device).to.deep.equal(topology.pathDevices.map(() => KEY_A));
    }
  });

  it('records multipathd replies while the prkey changes', function () {
    const map = topology.mpathName;
    const key = `0x${KEY_A.toString(16)}`;
    const steps: Array<[string, string, RegExp]> = [
      ['setprkey-aptpl', `setprkey map ${map} key ${key}:aptpl`, /^ok\n$/],
      ['getprkey-aptpl', `getprkey map ${map}`, new RegExp(`^${key}:aptpl\\n$`)],
      ['unsetprkey-ok', `unsetprkey map ${map}`, /^ok\n$/],
      ['getprkey-after-unset', `getprkey map ${map}`, /^none\n$/],
      ['setprkey-restore', `setprkey map ${map} key ${key}`, /^ok\n$/],
      ['getprkey-restored', `getprkey map ${map}`, new RegExp(`^${key}\\n$`)],
    ];
    for (const [name, command, expected] of steps) {
      const reply = multipathd(command);
      expect(reply, command).to.match(expected);
      fixture(name, reply);
    }
  });

  if (topology.fabric === 'iscsi' && topology.hostB) {
    const hostB = topology.hostB;
    it("host B's PREEMPT AND ABORT removes host A's keys and takes the reservation", function () {
      run('mpathpersist', ['--out', '--reserve', `--param-rk=0x${KEY_A.toString(16)}`, `--prout-type=${WE_RO}`, topology.mpathDevice]);
      expect(readReservation(hostB.device).holder).to.deep.equal({ key: KEY_A, type: WE_RO });
      run('sg_persist', ['--out', '--register', `--param-sark=0x${KEY_B.toString(16)}`, hostB.device]);
      const before = readKeys(hostB.device);
      expect(before.keys).to.have.length(topology.pathDevices.length + 1);

      run(
        'sg_persist',
        ['--out', '--preempt-abort', `--param-rk=0x${KEY_B.toString(16)}`, `--param-sark=0x${KEY_A.toString(16)}`, `--prout-type=${WE_RO}`, hostB.device],
        { timeoutMs: 20_000 },
      );
      const after = readKeys(hostB.device);
      expect(after.keys).to.deep.equal([KEY_B]);
      expect(after.generation).to.equal(before.generation + 1);
      expect(readReservation(hostB.device).holder).to.deep.equal({ key: KEY_B, type: WE_RO });

      run('sg_persist', ['--out', '--clear', `--param-rk=0x${KEY_B.toString(16)}`, hostB.device]);
      expect(readKeys(hostB.device).keys).to.deep.equal([]);
    });
  }
});
