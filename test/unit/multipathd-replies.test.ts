import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { Commands } from '../../src/multipathd/commands';
import * as replies from '../../src/multipathd/replies';
import { MultipathdError, type MultipathdErrorKind } from '../../src/multipathd/replies';

const FIXTURES = path.resolve(__dirname, '../../../fixtures/multipathd');
function fromSource(name: string): string {
  return fs.readFileSync(path.join(FIXTURES, 'from-source', name), 'utf8');
}

function expectKind(fn: () => unknown, kind: MultipathdErrorKind): MultipathdError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(MultipathdError);
    expect((err as MultipathdError).kind).to.equal(kind);
    return err as MultipathdError;
  }
  throw new Error(`expected a MultipathdError of kind ${kind}`);
}

describe('multipathd replies (fixtures from the 0.9.4 sources)', function () {
  describe('generic replies', function () {
    it('accepts "ok\\n" for action commands and nothing else', function () {
      expect(() => replies.parseOk('setprstatus map mpatha', fromSource('ok.reply'))).not.to.throw();
      expectKind(() => replies.parseOk('setprstatus map mpatha', 'ok'), 'malformed');
      expectKind(() => replies.parseOk('setprstatus map mpatha', '0x1\n'), 'malformed');
    });

    it('classifies fail, timeout and permission replies of 0.9.4', function () {
      const fail = expectKind(() => replies.checkReply('fail path sdz', fromSource('fail.reply')), 'fail');
      expect(fail.reason).to.equal(undefined);
      expect(fail.reply).to.equal('fail\n');
      expect(fail.command).to.equal('fail path sdz');
      expectKind(() => replies.checkReply('setprkey map mpatha key 0x1', fromSource('timeout.reply')), 'timeout');
      expectKind(() => replies.checkReply('setprstatus map mpatha', fromSource('permission-deny.reply')), 'permission');
    });

    it('classifies the 0.9.8+ forms, where every error starts with "fail\\n"', function () {
      const withReason = expectKind(() => replies.checkReply('getprkey map nope', 'fail\ndevice not found\n'), 'fail');
      expect(withReason.reason).to.equal('device not found');
      expectKind(() => replies.checkReply('setprstatus map a', 'fail\ntimeout\n'), 'timeout');
      expectKind(() => replies.checkReply('setprstatus map a', 'fail\npermission deny: need to be root\n'), 'permission');
      expectKind(() => replies.checkReply('version', 'fail\n' + fromSource('version--unknown-command.reply')), 'unknown-command');
    });

    it('treats the command list after "<cmd>: not found" or "Missing argument" as unknown-command', function () {
      const notFound = expectKind(() => replies.checkReply('version', fromSource('version--unknown-command.reply')), 'unknown-command');
      expect(notFound.reason).to.equal('version: not found');
      const missing = expectKind(() => replies.checkReply('show map', fromSource('show-map-missing-argument.reply')), 'unknown-command');
      expect(missing.reason).to.equal('show map: Missing argument');
    });

    it('passes data replies through unchanged', function () {
      expect(replies.checkReply('show daemon', 'pid 1 idle\n')).to.equal('pid 1 idle\n');
    });
  });

  describe('version detection', function () {
    it('reads the version line that comes with the command list', function () {
      const v = replies.parseVersion(fromSource('version--unknown-command.reply'));
      expect(v).to.deep.equal({ major: 0, minor: 9, patch: 4, text: 'multipath-tools v0.9.4 (12/19, 2022)' });
      expect(replies.versionAtLeast(v!, 0, 9, 4)).to.equal(true);
      expect(replies.versionAtLeast(v!, 0, 9, 5)).to.equal(false);
      expect(replies.versionAtLeast(v!, 0, 8, 9)).to.equal(true);
      expect(replies.versionAtLeast(v!, 1, 0, 0)).to.equal(false);
    });

    it('answers null when there is no version line', function () {
      expect(replies.parseVersion('ok\n')).to.equal(null);
    });
  });

  describe('getprstatus', function () {
    it('reads 0.9.4 answers, which are "0"/"1" without a newline', function () {
      expect(replies.parsePrStatus('getprstatus map mpatha', fromSource('getprstatus--unset.reply'))).to.equal('unset');
      expect(replies.parsePrStatus('getprstatus map mpatha', fromSource('getprstatus--set.reply'))).to.equal('set');
    });

    it('reads the 0.9.5+ words', function () {
      expect(replies.parsePrStatus('c', 'unset\n')).to.equal('unset');
      expect(replies.parsePrStatus('c', 'set\n')).to.equal('set');
      expect(replies.parsePrStatus('c', 'unknown\n')).to.equal('unknown');
    });

    it('rejects anything else', function () {
      for (const bad of ['2', '0\n', 'yes\n', '', 'ok\n']) expectKind(() => replies.parsePrStatus('c', bad), 'malformed');
      expectKind(() => replies.parsePrStatus('getprstatus map nope', 'fail\n'), 'fail');
    });
  });

  describe('getprkey', function () {
    it('reads none, a key, and a key with :aptpl', function () {
      expect(replies.parsePrKey('c', fromSource('getprkey--none.reply'))).to.equal(null);
      expect(replies.parsePrKey('c', fromSource('getprkey--key.reply'))).to.deep.equal({ key: 0x7a3f0001n, aptpl: false });
      expect(replies.parsePrKey('c', fromSource('getprkey--key-aptpl.reply'))).to.deep.equal({ key: 0xfedcba9876543210n, aptpl: true });
    });

    it('rejects keys that are too long or not hex', function () {
      for (const bad of ['0x\n', '0x12345678901234567\n', '0xzz\n', '12\n', '0x12:aptpl:x\n', 'none']) expectKind(() => replies.parsePrKey('c', bad), 'malformed');
    });
  });

  describe('show daemon', function () {
    it('reads pid and state', function () {
      expect(replies.parseDaemon('show daemon', fromSource('show-daemon--idle.reply'))).to.deep.equal({ pid: 812, state: 'idle' });
      expect(replies.parseDaemon('show daemon', fromSource('show-daemon--running.reply'))).to.deep.equal({ pid: 812, state: 'running' });
      expect(replies.parseDaemon('show daemon', 'pid 7 (null)\n')).to.deep.equal({ pid: 7, state: '(null)' });
      expectKind(() => replies.parseDaemon('show daemon', 'pid x idle\n'), 'malformed');
    });
  });

  describe('show maps json / show map X json', function () {
    it('reads every map with its path groups and paths', function () {
      const maps = replies.parseMapsJson(Commands.showMapsJson(), fromSource('show-maps-json.reply'));
      expect(maps.map((m) => [m.name, m.uuid, m.sysfs])).to.deep.equal([
        ['mpatha', '36001405a1b2c3d4e5f60718293a4b5c6', 'dm-0'],
        ['mpathb', '36001405f0e1d2c3b4a5968778695a4b3', 'dm-1'],
      ]);
      expect(replies.mapPaths(maps[0]).map((p) => [p.dev, p.dev_t, p.dm_st, p.chk_st, p.group])).to.deep.equal([
        ['sda', '8:0', 'active', 'ready', 1],
        ['sdb', '8:16', 'active', 'ready', 1],
      ]);
      expect(replies.mapPaths(maps[1]).map((p) => [p.dev, p.dm_st, p.chk_st, p.group])).to.deep.equal([
        ['sdc', 'active', 'ready', 1],
        ['sdd', 'failed', 'faulty', 2],
      ]);
      expect(maps[1].features).to.equal('1 queue_if_no_path');
    });

    it('reads an empty map list', function () {
      expect(replies.parseMapsJson(Commands.showMapsJson(), fromSource('show-maps-json--no-maps.reply'))).to.deep.equal([]);
    });

    it('reads a single map', function () {
      const map = replies.parseMapJson(Commands.showMapJson('mpathb'), fromSource('show-map-mpathb-json.reply'));
      expect(map.name).to.equal('mpathb');
      expect(map.path_groups).to.have.length(2);
    });

    it('reports unescaped quotes (multipathd does not escape strings) as malformed', function () {
      const broken = fromSource('show-maps-json.reply').replace('"prdisk0"', '"pr"disk0"');
      expectKind(() => replies.parseMapsJson('show maps json', broken), 'malformed');
    });

    it('rejects other JSON versions and shapes', function () {
      expectKind(() => replies.parseMapsJson('c', '{"major_version": 1, "maps": []}'), 'malformed');
      expectKind(() => replies.parseMapsJson('c', '{"major_version": 0}'), 'malformed');
      expectKind(() => replies.parseMapsJson('c', '{"major_version": 0, "maps": [{"name": "a"}]}'), 'malformed');
      expectKind(() => replies.parseMapJson('c', '[]'), 'malformed');
      expectKind(() => replies.parseMapJson('show map nope json', 'fail\n'), 'fail');
    });
  });

  describe('show paths', function () {
    it('reads the default table, cutting at the header columns (values contain spaces)', function () {
      const paths = replies.parsePathsTable('show paths', fromSource('show-paths.reply'));
      expect(paths.map((p) => [p.device, p.devT, p.hcil, p.dmState, p.checkerState, p.devState, p.priority])).to.deep.equal([
        ['sda', '8:0', '2:0:0:0', 'active', 'ready', 'running', 50],
        ['sdb', '8:16', '3:0:0:0', 'active', 'ready', 'running', 50],
        ['sdc', '8:32', '2:0:0:1', 'active', 'i/o pending', 'running', 50],
        ['sdd', '8:48', '3:0:0:1', 'failed', 'faulty', 'offline', 10],
        ['sde', '8:64', '4:0:0:0', 'undef', 'undef', 'unknown', -1],
      ]);
      expect(paths[2].columns.next_check).to.equal('XXXXXXXXXX 20/20');
      expect(paths[0].wwid).to.equal(undefined);
    });

    it('reads the project format with the map alias and WWID', function () {
      const paths = replies.parsePathsTable(Commands.showPaths(), fromSource('show-paths-format.reply'));
      expect(paths.map((p) => [p.device, p.multipath, p.wwid])).to.deep.equal([
        ['sda', 'mpatha', '36001405a1b2c3d4e5f60718293a4b5c6'],
        ['sdb', 'mpatha', '36001405a1b2c3d4e5f60718293a4b5c6'],
        ['sdc', 'mpathb', '36001405f0e1d2c3b4a5968778695a4b3'],
        ['sdd', 'mpathb', '36001405f0e1d2c3b4a5968778695a4b3'],
        ['sde', '[orphan]', '36001405ffffffffffffffffffffffff0'],
      ]);
    });

    it('reads "ok\\n" (no paths) as an empty list', function () {
      expect(replies.parsePathsTable('show paths', fromSource('show-paths--no-paths.reply'))).to.deep.equal([]);
    });

    it('matches multi-word headers whole', function () {
      const text = 'dev host WWNN   dev_t\nsda [undef]     8:0  \n';
      const [p] = replies.parsePathsTable('show paths format "%d %N %D"', text);
      expect(p.columns).to.deep.equal({ dev: 'sda', 'host WWNN': '[undef]', dev_t: '8:0' });
    });

    it('rejects a table without a dev column', function () {
      expectKind(() => replies.parsePathsTable('c', 'hcil\n1:0:0:0\n'), 'malformed');
    });
  });
});

// Lab captures: real replies of multipathd 0.9.4 (Debian 12, tcm_loop, two paths, key 0x1234)
// recorded by test/lab/lab-smoke.lab.ts into fixtures/multipathd/*.txt. Every capture must
// have a check here, so a new capture cannot go untested.
const LAB_KEY = 0x1234n;
const LAB_WWID = '36001405aab0001000000000000000000';

function expectFail(command: string, reply: string, kind: MultipathdErrorKind): MultipathdError {
  return expectKind(() => replies.checkReply(command, reply), kind);
}

const LAB_CHECKS: Record<string, (reply: string) => void> = {
  'getprstatus-unset': (r) => expect(replies.parsePrStatus('getprstatus map mpatha', r)).to.equal('unset'),
  'getprstatus-set': (r) => expect(replies.parsePrStatus('getprstatus map mpatha', r)).to.equal('set'),
  'getprkey-none': (r) => expect(replies.parsePrKey('getprkey map mpatha', r)).to.equal(null),
  'getprkey-set': (r) => expect(replies.parsePrKey('getprkey map mpatha', r)).to.deep.equal({ key: LAB_KEY, aptpl: false }),
  'getprkey-aptpl': (r) => expect(replies.parsePrKey('getprkey map mpatha', r)).to.deep.equal({ key: LAB_KEY, aptpl: true }),
  'getprkey-after-unset': (r) => expect(replies.parsePrKey('getprkey map mpatha', r)).to.equal(null),
  'getprkey-restored': (r) => expect(replies.parsePrKey('getprkey map mpatha', r)).to.deep.equal({ key: LAB_KEY, aptpl: false }),
  'getprkey-unknown-map': (r) => expect(expectFail('getprkey map nosuchmap', r, 'fail').reason).to.equal(undefined),
  'setprkey-ok': (r) => replies.parseOk('setprkey map mpatha key 0x1234', r),
  'setprkey-aptpl': (r) => replies.parseOk('setprkey map mpatha key 0x1234:aptpl', r),
  'setprkey-restore': (r) => replies.parseOk('setprkey map mpatha key 0x1234', r),
  'unsetprkey-ok': (r) => replies.parseOk('unsetprkey map mpatha', r),
  'fail-path-ok': (r) => replies.parseOk('fail path sdb', r),
  'reinstate-path-ok': (r) => replies.parseOk('reinstate path sdb', r),
  'fail-path-unknown-device': (r) => expectFail('fail path sdzz', r, 'fail'),
  'unknown-command': (r) => {
    const err = expectFail('list commands', r, 'unknown-command');
    expect(err.reason).to.equal('list commands: not found');
    expect(replies.parseVersion(r)).to.deep.include({ major: 0, minor: 9, patch: 4 });
    // The command list generated from the 0.9.4 sources is the daemon's, line for line.
    const listed = (text: string) => text.slice(text.indexOf('CLI commands reference:'));
    expect(listed(r)).to.equal(listed(fromSource('version--unknown-command.reply')));
  },
  'show-daemon': (r) => expect(replies.parseDaemon('show daemon', r).state).to.be.oneOf(['idle', 'running']),
  'show-maps-json': (r) => {
    const [map] = replies.parseMapsJson('show maps json', r);
    expect([map.name, map.uuid, map.sysfs]).to.deep.equal(['mpatha', LAB_WWID, 'dm-0']);
    expect(replies.mapPaths(map).map((p) => [p.dev, p.dev_t, p.dm_st, p.chk_st])).to.deep.equal([
      ['sda', '8:0', 'active', 'ready'],
      ['sdb', '8:16', 'active', 'ready'],
    ]);
  },
  'show-maps-json-one-failed': (r) => {
    const [map] = replies.parseMapsJson('show maps json', r);
    expect(replies.mapPaths(map).map((p) => [p.dev, p.dm_st])).to.deep.equal([
      ['sda', 'active'],
      ['sdb', 'failed'],
    ]);
  },
  'show-map-json': (r) => expect(replies.parseMapJson('show map mpatha json', r).name).to.equal('mpatha'),
  'show-paths': (r) => {
    const paths = replies.parsePathsTable('show paths', r);
    expect(paths.map((p) => [p.device, p.devT, p.dmState, p.checkerState, p.devState])).to.deep.equal([
      ['sda', '8:0', 'active', 'ready', 'running'],
      ['sdb', '8:16', 'active', 'ready', 'running'],
    ]);
    expect(paths[0].columns.next_check).to.match(/^X*\.* \d+\/\d+$/);
  },
  'show-paths-one-failed': (r) => {
    expect(replies.parsePathsTable('show paths', r).map((p) => [p.device, p.dmState, p.checkerState])).to.deep.equal([
      ['sda', 'active', 'ready'],
      ['sdb', 'failed', 'faulty'],
    ]);
  },
  'show-paths-format': (r) => {
    expect(replies.parsePathsTable(Commands.showPaths(), r).map((p) => [p.device, p.multipath, p.wwid, p.hcil])).to.deep.equal([
      ['sda', 'mpatha', LAB_WWID, '0:0:1:0'],
      ['sdb', 'mpatha', LAB_WWID, '1:0:1:0'],
    ]);
  },
  // Text the project only shows to people: it must at least not look like an error.
  'show-maps': (r) => expect(replies.checkReply('show maps', r)).to.contain(LAB_WWID),
  'show-status': (r) => expect(replies.checkReply('show status', r)).to.match(/^path checker states:\n/),
  'show-topology': (r) => expect(replies.checkReply('show topology', r)).to.contain(LAB_WWID),
  // Not a reply: /etc/multipath/prkeys after setprkey (format of libmultipath/prkey.c).
  'prkeys-file': (r) => expect(r.split('\n').filter((l) => l && !l.startsWith('#'))).to.deep.equal([`0x${LAB_KEY.toString(16).padStart(16, '0')} ${LAB_WWID}`]),
};

describe('multipathd replies (lab captures of multipathd 0.9.4)', function () {
  const captured = fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.txt')).map((f) => f.slice(0, -'.txt'.length));

  it('has the captures the lab records', function () {
    expect(captured).to.include.members(['getprstatus-unset', 'getprstatus-set', 'show-maps-json', 'show-paths', 'unknown-command']);
  });

  it('has a check for every capture', function () {
    const unchecked = captured.filter((name) => !(name in LAB_CHECKS));
    expect(unchecked, `add checks for: ${unchecked.join(', ')}`).to.deep.equal([]);
  });

  for (const name of Object.keys(LAB_CHECKS)) {
    it(`reads ${name}.txt`, function () {
      const file = path.join(FIXTURES, `${name}.txt`);
      if (!fs.existsSync(file)) throw new Error(`${file} is missing; re-run the lab with --update-fixtures`);
      LAB_CHECKS[name](fs.readFileSync(file, 'utf8'));
    });
  }
});
