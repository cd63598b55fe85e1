// The privilege drop, proven on real daemon processes through /proc/<pid>/task/*/status
// (capabilities and no_new_privs are per thread, so every thread is checked), plus the
// pure planning step. These tests run as root (the CI and this machine do); they fail
// loudly otherwise instead of skipping.

import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Cap } from '../../ffi/capabilities';
import * as pr from '../../src/backends/pr-commands';
import { resolveIdentity } from '../../src/daemon/accounts';
import {
  allCapabilities,
  capabilityMask,
  parseProcStatus,
  planPrivilegeDrop,
  requiredCapabilities,
  type ProcessCredentials,
} from '../../src/daemon/privilege-plan';
import { withClient } from '../support/client';
import { daemonSuite, launchDaemon, MPATH_PR, MPATH_PR_HELPER, requireRoot, runToExit, type DaemonProcess } from '../support/daemon';
import { threadCredentials } from '../support/proc';

const RAWIO = 1n << BigInt(Cap.SYS_RAWIO);
const ADMIN = 1n << BigInt(Cap.SYS_ADMIN);
const NOBODY = 65534;
const NOGROUP = 65534;

function expectEveryThread(pid: number, check: (c: ProcessCredentials, tid: number) => void): number {
  const threads = threadCredentials(pid);
  for (const { tid, credentials } of threads) check(credentials, tid);
  return threads.length;
}

describe('privilege drop (real daemons, /proc)', function () {
  this.timeout(60_000);
  const suite = daemonSuite('mpath-pr-priv-', { mode: 0o711 });
  let dir: string;
  let stateDir: string;
  let lu: string;

  requireRoot('these tests prove a root daemon drops privileges');

  beforeEach(() => {
    dir = suite.dir;
    stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir);
    fs.chownSync(stateDir, NOBODY, NOGROUP);
    lu = path.join(dir, 'lu0.img');
    fs.writeFileSync(lu, Buffer.alloc(4096));
  });

  /**
   * The state store must belong to the daemon's final user: without CAP_DAC_OVERRIDE even
   * uid 0 cannot write into nobody's directory. So root daemons keep theirs in `dir`.
   */
  async function serve(extra: string[]): Promise<DaemonProcess> {
    const store = extra.includes('--user') ? stateDir : dir;
    return suite.add(await launchDaemon(MPATH_PR, ['serve', '--socket', path.join(dir, 'd.sock'), '--state', path.join(store, 'san.db'), '--log-level', 'debug', ...extra]));
  }

  function readKeysThrough(socket: string): Promise<bigint[]> {
    return withClient(socket, lu, async (run) => {
      await pr.register(run, 0x1234n);
      return (await pr.readKeys(run)).keys;
    });
  }

  it('serve --user nobody: uid and gid 65534, no supplementary groups, only CAP_SYS_RAWIO and CAP_SYS_ADMIN, bounding set cleared, no_new_privs — in every thread, and it still serves', async () => {
    const d = await serve(['--user', 'nobody']);
    // A command first, so the libuv pool threads exist when we look.
    expect(await readKeysThrough(path.join(dir, 'd.sock'))).to.deep.equal([0x1234n, 0x1234n]);
    const threads = expectEveryThread(d.pid, (c, tid) => {
      expect(c.uids, `uids of thread ${tid}`).to.deep.equal([NOBODY, NOBODY, NOBODY, NOBODY]);
      expect(c.gids, `gids of thread ${tid}`).to.deep.equal([NOGROUP, NOGROUP, NOGROUP, NOGROUP]);
      expect(c.groups, `groups of thread ${tid}`).to.deep.equal([]);
      expect(c.effective, `CapEff of thread ${tid}`).to.equal(RAWIO | ADMIN);
      expect(c.permitted, `CapPrm of thread ${tid}`).to.equal(RAWIO | ADMIN);
      expect(c.bounding, `CapBnd of thread ${tid}`).to.equal(RAWIO | ADMIN);
      expect(c.noNewPrivs, `NoNewPrivs of thread ${tid}`).to.equal(true);
    });
    expect(threads).to.be.greaterThan(4);
    // The state store was created by the final user, not by root before the drop.
    expect(fs.statSync(path.join(stateDir, 'san.db')).uid).to.equal(NOBODY);
    expect(d.logs()).to.match(/re-executing so every thread has them/);
    expect(d.logs()).to.match(/"msg":"privileges dropped"/);
  });

  it('serve without --user stays uid 0 but keeps only CAP_SYS_RAWIO and CAP_SYS_ADMIN (as qemu-pr-helper does), in every thread', async () => {
    const d = await serve([]);
    expect(await readKeysThrough(path.join(dir, 'd.sock'))).to.have.length(2);
    expectEveryThread(d.pid, (c, tid) => {
      expect(c.uids, `uids of thread ${tid}`).to.deep.equal([0, 0, 0, 0]);
      expect(c.effective, `CapEff of thread ${tid}`).to.equal(RAWIO | ADMIN);
      expect(c.permitted, `CapPrm of thread ${tid}`).to.equal(RAWIO | ADMIN);
      expect(c.inheritable, `CapInh of thread ${tid}`).to.equal(RAWIO | ADMIN);
      expect(c.bounding, `CapBnd of thread ${tid}`).to.equal(RAWIO | ADMIN);
      expect(c.noNewPrivs, `NoNewPrivs of thread ${tid}`).to.equal(true);
    });
  });

  it('keeps what the backend needs and nothing more: emulated none, sg CAP_SYS_RAWIO only', async () => {
    const emulated = await serve(['--backend', 'emulated']);
    expectEveryThread(emulated.pid, (c) => {
      expect(c.effective).to.equal(0n);
      expect(c.permitted).to.equal(0n);
      expect(c.bounding).to.equal(0n);
      expect(c.noNewPrivs).to.equal(true);
    });
    await emulated.stop();
    const sg = await serve(['--backend', 'sg']);
    expectEveryThread(sg.pid, (c) => {
      expect(c.effective).to.equal(RAWIO);
      expect(c.permitted).to.equal(RAWIO);
      expect(c.bounding).to.equal(RAWIO);
    });
  });

  it('started the way the systemd unit starts it (bounding set already narrowed, no_new_privs set) it needs no re-exec', async () => {
    const setpriv = spawnSync('setpriv', ['--version']);
    if (setpriv.error) throw new Error('setpriv (util-linux) is needed to start a daemon under a systemd-like capability ceiling');
    const socket = path.join(dir, 's.sock');
    const d = suite.add(await launchDaemon('/usr/bin/setpriv', [
      '--bounding-set', '-all,+sys_rawio,+sys_admin', '--no-new-privs',
      process.execPath, MPATH_PR, 'serve', '--socket', socket, '--state', path.join(dir, 'san.db'), '--log-level', 'debug',
    ], { program: true }));
    expect(d.logs()).to.match(/no privilege drop: already holds only the capabilities it needs/);
    expect(d.logs()).to.not.match(/re-executing/);
    expectEveryThread(d.pid, (c) => {
      expect(c.effective).to.equal(RAWIO | ADMIN);
      expect(c.bounding).to.equal(RAWIO | ADMIN);
      expect(c.noNewPrivs).to.equal(true);
    });
    expect(await readKeysThrough(socket)).to.have.length(2);
  });

  it('mpath-pr-helper -u nobody -g <number>: the qemu-pr-helper flags drop the same way', async () => {
    const d = suite.add(await launchDaemon(MPATH_PR_HELPER, ['-k', path.join(dir, 'h.sock'), '-u', 'nobody', '-g', String(NOGROUP)], {
      env: { MPATH_PR_STATE: path.join(stateDir, 'helper.db') },
    }));
    expectEveryThread(d.pid, (c) => {
      expect(c.uids).to.deep.equal([NOBODY, NOBODY, NOBODY, NOBODY]);
      expect(c.gids).to.deep.equal([NOGROUP, NOGROUP, NOGROUP, NOGROUP]);
      expect(c.effective).to.equal(RAWIO | ADMIN);
      expect(c.bounding).to.equal(RAWIO | ADMIN);
    });
    expect(await readKeysThrough(path.join(dir, 'h.sock'))).to.have.length(2);
  });

  it('the pidfile keeps the pid across the re-exec, and SIGTERM still shuts down cleanly as nobody', async () => {
    const pidfile = path.join(dir, 'd.pid');
    const d = await serve(['--user', 'nobody', '--pidfile', pidfile]);
    expect(fs.readFileSync(pidfile, 'utf8').trim()).to.equal(String(d.pid));
    expect(await d.stop('SIGTERM')).to.equal(0);
    expect(d.logs()).to.match(/mpath-pr stopped/);
  });

  it('errors are fatal at startup with a clear message', async () => {
    const base = ['serve', '--socket', path.join(dir, 'e.sock'), '--state', path.join(stateDir, 'e.db')];
    const unknown = await runToExit(MPATH_PR, [...base, '--user', 'no-such-user-here']);
    expect(unknown.code).to.not.equal(0);
    expect(unknown.output).to.match(/invalid user "no-such-user-here"/);

    const noPasswd = await runToExit(MPATH_PR, [...base, '--user', '54321']);
    expect(noPasswd.code).to.not.equal(0);
    expect(noPasswd.output).to.match(/has no passwd entry.*give -g\/--group too/);

    const helperBadGroup = await runToExit(MPATH_PR_HELPER, ['-k', path.join(dir, 'f.sock'), '-u', 'nobody', '-g', 'no-such-group-here']);
    expect(helperBadGroup.code).to.equal(1);
    expect(helperBadGroup.output).to.match(/mpath-pr-helper: invalid group "no-such-group-here"/);
  });

  it('an unprivileged start cannot switch user: the drop fails with the reason, and nothing is served', async () => {
    // As nobody, asking for root: setgroups/setresuid answer EPERM.
    const sockDir = path.join(dir, 'nobody-run');
    fs.mkdirSync(sockDir);
    fs.chownSync(sockDir, NOBODY, NOGROUP);
    const { code, output } = await runToExit(MPATH_PR, ['serve', '--socket', path.join(sockDir, 'x.sock'), '--state', path.join(stateDir, 'x.db'), '--user', 'root'], {
      uid: NOBODY,
      gid: NOGROUP,
    });
    expect(code).to.not.equal(0);
    expect(output).to.match(/privilege drop failed at setgroups: .*EPERM.*must start as root/);
    expect(fs.existsSync(path.join(sockDir, 'x.sock')), 'socket removed after the failed start').to.equal(false);
  });
});

describe('privilege planning (pure)', () => {
  const LAST = 40;
  const ALL = allCapabilities(LAST);
  const root: ProcessCredentials = {
    uids: [0, 0, 0, 0],
    gids: [0, 0, 0, 0],
    groups: [0],
    inheritable: 0n,
    permitted: ALL,
    effective: ALL,
    bounding: ALL,
    ambient: 0n,
    noNewPrivs: false,
  };

  it('reads /proc status lines, including Groups and CapAmb', () => {
    const text = [
      'Name:\tnode',
      'Uid:\t65534\t65534\t65534\t65534',
      'Gid:\t65534\t65534\t65534\t65534',
      'Groups:\t',
      'CapInh:\t0000000000220000',
      'CapPrm:\t0000000000220000',
      'CapEff:\t0000000000220000',
      'CapBnd:\t0000000000220000',
      'CapAmb:\t0000000000220000',
      'NoNewPrivs:\t1',
    ].join('\n');
    const c = parseProcStatus(text);
    expect(c.uids).to.deep.equal([65534, 65534, 65534, 65534]);
    expect(c.groups).to.deep.equal([]);
    expect(c.effective).to.equal(0x220000n);
    expect(c.noNewPrivs).to.equal(true);
    expect(() => parseProcStatus('Name:\tnode\n')).to.throw(/no Uid line/);
  });

  it('root with every capability and no -u: drop to the wanted set, clear the bounding set', () => {
    const plan = planPrivilegeDrop(root, { want: RAWIO | ADMIN }, LAST);
    expect(plan).to.deep.equal({ kind: 'drop', uid: undefined, gid: undefined, keep: RAWIO | ADMIN, missing: 0n, clearBounding: true });
  });

  it('the state right after the re-exec needs nothing more (so the daemon never loops)', () => {
    const after: ProcessCredentials = { ...root, uids: [NOBODY, NOBODY, NOBODY, NOBODY], gids: [NOGROUP, NOGROUP, NOGROUP, NOGROUP], groups: [], inheritable: RAWIO, permitted: RAWIO, effective: RAWIO, bounding: RAWIO, ambient: RAWIO, noNewPrivs: true };
    expect(planPrivilegeDrop(after, { uid: NOBODY, gid: NOGROUP, want: RAWIO }, LAST).kind).to.equal('none');
    // Same credentials but a supplementary group left: not done yet.
    expect(planPrivilegeDrop({ ...after, groups: [27] }, { uid: NOBODY, gid: NOGROUP, want: RAWIO }, LAST).kind).to.equal('drop');
  });

  it('an unprivileged user with no capabilities: nothing to do, and the missing ones are reported', () => {
    const user: ProcessCredentials = { ...root, uids: [1000, 1000, 1000, 1000], gids: [1000, 1000, 1000, 1000], groups: [], permitted: 0n, effective: 0n };
    const plan = planPrivilegeDrop(user, { want: RAWIO | ADMIN }, LAST);
    expect(plan).to.deep.equal({ kind: 'none', reason: 'the process has no capabilities to drop', missing: RAWIO | ADMIN });
  });

  it('ambient CAP_SYS_RAWIO from systemd without CAP_SETPCAP: already minimal, bounding set left alone', () => {
    const ambientOnly: ProcessCredentials = { ...root, uids: [990, 990, 990, 990], gids: [990, 990, 990, 990], groups: [], permitted: RAWIO, effective: RAWIO, inheritable: RAWIO, ambient: RAWIO };
    const plan = planPrivilegeDrop(ambientOnly, { want: RAWIO | ADMIN }, LAST);
    expect(plan.kind).to.equal('none');
    expect(plan.missing).to.equal(ADMIN);
  });

  it('a capability beyond the wanted set in any set (even inheritable) triggers a drop', () => {
    const leaky: ProcessCredentials = { ...root, permitted: RAWIO, effective: RAWIO, inheritable: RAWIO | (1n << BigInt(Cap.DAC_OVERRIDE)), bounding: RAWIO };
    expect(planPrivilegeDrop(leaky, { want: RAWIO }, LAST).kind).to.equal('drop');
  });

  it('names which backend needs which capability', () => {
    expect(requiredCapabilities('emulated')).to.deep.equal([]);
    expect(capabilityMask(requiredCapabilities('sg').map((n) => n.cap))).to.equal(RAWIO);
    for (const backend of ['auto', 'blkpr', 'mpath'] as const) expect(capabilityMask(requiredCapabilities(backend).map((n) => n.cap))).to.equal(RAWIO | ADMIN);
  });

  it('resolves -u/-g like qemu-pr-helper: names first, numbers accepted, -u alone takes the primary group', () => {
    expect(resolveIdentity({ user: 'nobody' })).to.deep.equal({ uid: NOBODY, gid: NOGROUP });
    expect(resolveIdentity({ user: '65534' })).to.deep.equal({ uid: NOBODY, gid: NOGROUP });
    expect(resolveIdentity({ user: 'nobody', group: 'root' })).to.deep.equal({ uid: NOBODY, gid: 0 });
    expect(resolveIdentity({ group: '4242' })).to.deep.equal({ uid: undefined, gid: 4242 });
    expect(() => resolveIdentity({ user: '-1' })).to.throw(/invalid user/);
    expect(() => resolveIdentity({ user: '4294967295' })).to.throw(/invalid user/);
  });
});
