// MultipathdClient, two ways:
// 1. with a scripted transport: command order, error mapping, version caching;
// 2. end to end through the real libmpathcmd against a fake multipathd. The fake is a small
//    Python server bound to multipathd's exact abstract address (Node 20 cannot bind or
//    connect with the exact length, see ffi/libmpathcmd.ts). It runs with the client inside
//    a private network namespace (`unshare -n`), so it never meets a real multipathd and the
//    abstract name is free.

import { expect } from 'chai';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describeSocketAddress, loadLibmpathcmd } from '../../ffi/libmpathcmd';
import { MultipathdClient, type MultipathdTransport } from '../../src/multipathd/client';
import { Commands } from '../../src/multipathd/commands';
import { MultipathdError } from '../../src/multipathd/replies';
import { scriptedMultipathd as scripted } from '../support/scripted-multipathd';

const FIXTURES = path.resolve(__dirname, '../../../fixtures/multipathd/from-source');
const fixture = (name: string): string => fs.readFileSync(path.join(FIXTURES, name), 'utf8');

async function rejection(p: Promise<unknown>): Promise<MultipathdError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(MultipathdError);
    return err as MultipathdError;
  }
  throw new Error('expected a rejection');
}

describe('MultipathdClient with a scripted transport', function () {
  it('sends typed commands and parses their replies', async function () {
    const t = scripted({
      [Commands.getPrStatus('mpatha')]: '1',
      [Commands.getPrKey('mpatha')]: '0xabc:aptpl\n',
      [Commands.setPrKey('mpatha', 0xabcn, true)]: 'ok\n',
      [Commands.unsetPrKey('mpatha')]: 'ok\n',
      [Commands.setPrStatus('mpatha')]: 'ok\n',
      [Commands.unsetPrStatus('mpatha')]: 'ok\n',
      [Commands.failPath('sda')]: 'ok\n',
      [Commands.reinstatePath('sda')]: 'ok\n',
      [Commands.showDaemon()]: 'pid 5 idle\n',
      [Commands.showMapsJson()]: fixture('show-maps-json.reply'),
      [Commands.showMapJson('mpathb')]: fixture('show-map-mpathb-json.reply'),
      [Commands.showPaths()]: fixture('show-paths-format.reply'),
    });
    const c = new MultipathdClient({ transport: t });
    expect(await c.getPrStatus('mpatha')).to.equal('set');
    expect(await c.getPrKey('mpatha')).to.deep.equal({ key: 0xabcn, aptpl: true });
    await c.setPrKey('mpatha', 0xabcn, true);
    await c.unsetPrKey('mpatha');
    await c.setPrStatus('mpatha');
    await c.unsetPrStatus('mpatha');
    await c.failPath('sda');
    await c.reinstatePath('sda');
    expect(await c.showDaemon()).to.deep.equal({ pid: 5, state: 'idle' });
    expect((await c.showMapsJson()).map((m) => m.name)).to.deep.equal(['mpatha', 'mpathb']);
    expect((await c.showMapJson('mpathb')).sysfs).to.equal('dm-1');
    expect((await c.showPaths()).map((p) => p.device)).to.deep.equal(['sda', 'sdb', 'sdc', 'sdd', 'sde']);
  });

  it('keeps commands in the order they were issued, even when one fails', async function () {
    const order: string[] = [];
    const transport: MultipathdTransport = {
      async send(command) {
        order.push(`start ${command}`);
        await new Promise((r) => setImmediate(r));
        order.push(`end ${command}`);
        if (command === 'fail path sdb') return 'fail\n';
        return 'ok\n';
      },
    };
    const c = new MultipathdClient({ transport });
    const results = await Promise.allSettled([c.setPrStatus('a'), c.failPath('sdb'), c.unsetPrStatus('a')]);
    expect(results.map((r) => r.status)).to.deep.equal(['fulfilled', 'rejected', 'fulfilled']);
    expect(order).to.deep.equal([
      'start setprstatus map a',
      'end setprstatus map a',
      'start fail path sdb',
      'end fail path sdb',
      'start unsetprstatus map a',
      'end unsetprstatus map a',
    ]);
  });

  it('turns fail, permission and unknown-command replies into typed errors', async function () {
    const c = new MultipathdClient({
      transport: scripted({
        [Commands.setPrKey('mpatha', 1n, false)]: 'fail\n',
        [Commands.setPrStatus('mpatha')]: 'permission deny: need to be root\n',
        'show config local': fixture('version--unknown-command.reply').replace('version: not found', 'show config local: not found'),
      }),
    });
    expect((await rejection(c.setPrKey('mpatha', 1n, false))).kind).to.equal('fail');
    expect((await rejection(c.setPrStatus('mpatha'))).kind).to.equal('permission');
    expect((await rejection(c.command('show config local'))).kind).to.equal('unknown-command');
  });

  it('refuses bad names before sending anything', async function () {
    const t = scripted({});
    const c = new MultipathdClient({ transport: t });
    let thrown: unknown;
    try {
      await c.getPrKey('mpath a');
    } catch (err) {
      thrown = err;
    }
    expect(thrown).to.be.instanceOf(Error);
    expect((thrown as Error).name).to.equal('CommandArgumentError');
    expect(t.sent).to.deep.equal([]);
  });

  it('detects the version once and caches it', async function () {
    const t = scripted({ version: fixture('version--unknown-command.reply') });
    const c = new MultipathdClient({ transport: t });
    expect(await c.version()).to.deep.include({ major: 0, minor: 9, patch: 4 });
    expect(await c.version()).to.deep.include({ major: 0, minor: 9, patch: 4 });
    expect(t.sent).to.deep.equal(['version']);
  });
});

describe('libmpathcmd socket address', function () {
  it('0.9.4 ignores MULTIPATH_SOCKET_NAME, and says so when it is set', function () {
    const old = Buffer.from('no such variable in here');
    expect(describeSocketAddress(old, {})).to.deep.equal({ address: '@/org/kernel/linux/storage/multipathd', honoursEnvOverride: false, warning: undefined });
    expect(describeSocketAddress(old, { MULTIPATH_SOCKET_NAME: '/tmp/x' }).warning).to.match(/ignores it/);
  });

  it('0.12.0+ honours the override', function () {
    const newer = Buffer.from('...MULTIPATH_SOCKET_NAME...');
    expect(describeSocketAddress(newer, { MULTIPATH_SOCKET_NAME: '/tmp/x' })).to.deep.equal({ address: '/tmp/x', honoursEnvOverride: true });
    expect(describeSocketAddress(newer, {}).address).to.equal('/run/multipathd.socket or @/org/kernel/linux/storage/multipathd');
  });

  it('reads the installed library (Debian 12: 0.9.4, no override)', function () {
    const r = loadLibmpathcmd();
    expect(r.ok, r.ok ? '' : r.reason).to.equal(true);
    if (r.ok) expect(r.lib.socket.honoursEnvOverride).to.equal(false);
    const missing = loadLibmpathcmd('libmpathcmd-does-not-exist.so.0');
    expect(!missing.ok && missing.reason).to.match(/apt-get install multipath-tools/);
    const wrong = loadLibmpathcmd('libc.so.6');
    expect(!wrong.ok && wrong.reason).to.match(/lacks a symbol/);
  });
});

// ---------------------------------------------------------------------------------------

const FAKE_MULTIPATHD = String.raw`
import json, os, socket, struct, sys, threading
replies = json.load(open(sys.argv[1]))
log = open(sys.argv[2], 'a', buffering=1)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(b'\0/org/kernel/linux/storage/multipathd')  # exact length, like multipathd
s.listen(16)
print('ready', flush=True)
# Exit with the driver: its end of our stdin closes when it dies, whatever the cause.
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
def recv_all(c, n):
    data = b''
    while len(data) < n:
        chunk = c.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
def serve(c):
    while True:
        head = recv_all(c, 8)
        if head is None:
            break
        (n,) = struct.unpack('=Q', head)
        cmd = recv_all(c, n)[:-1].decode()
        log.write(cmd + '\n')
        reply = replies.get(cmd)
        if reply is None:
            reply = cmd + ': not found\nmultipath-tools v0.9.4 (12/19, 2022)\nCLI commands reference:\n list|show paths\n'
        if reply == '__close__':
            break
        if reply == '__hang__':
            threading.Event().wait(30)
            break
        if reply.startswith('__big__'):
            reply = 'x' * int(reply[7:]) + '\n'
        body = reply.encode() + b'\0'
        c.sendall(struct.pack('=Q', len(body)) + body)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

const DRIVER = String.raw`
const { spawn } = require('child_process');
const fs = require('fs');
const [distDir, fakePath, repliesPath, logPath] = process.argv.slice(2);
const { MultipathdClient } = require(distDir + '/src/multipathd/client.js');
const errInfo = (e) => ({ name: e.name, kind: e.kind, errno: e.errno, maybeExecuted: e.maybeExecuted, reason: e.reason });
const settle = (p) => p.then((v) => ({ value: v }), (e) => ({ error: errInfo(e) }));
(async () => {
  const out = {};
  const c = new MultipathdClient({ timeoutMs: 400 });
  out.noDaemon = await settle(c.getPrStatus('mpatha'));
  const srv = spawn('python3', [fakePath, repliesPath, logPath], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise((resolve, reject) => {
    srv.stdout.once('data', resolve);
    srv.once('exit', (code) => reject(new Error('fake multipathd exited ' + code)));
  });
  out.prStatus = await settle(c.getPrStatus('mpatha'));
  out.prKey = await settle(c.getPrKey('mpatha'));
  out.setPrKey = await settle(c.setPrKey('mpatha', 0x7a3f0001n, true));
  out.maps = await settle(c.showMapsJson().then((m) => m.map((x) => x.name)));
  out.paths = await settle(c.showPaths().then((p) => p.map((x) => [x.device, x.checkerState, x.multipath])));
  out.daemon = await settle(c.showDaemon());
  out.version = await settle(c.version());
  out.unknown = await settle(c.command('show bogus'));
  out.closed = await settle(c.failPath('sdz'));
  const hanging = c.reinstatePath('sdz');
  let settled = false;
  hanging.then(() => (settled = true), () => (settled = true));
  await new Promise((r) => setImmediate(r));
  out.loopFreeDuringCall = !settled;
  out.hang = await settle(hanging);
  out.afterHang = await settle(c.showDaemon());
  out.big = await settle(c.command('show config').then((r) => r.length));
  const burst = await Promise.all([c.setPrStatus('m1'), c.setPrStatus('m2'), c.setPrStatus('m3')].map(settle));
  out.burst = burst;
  out.log = fs.readFileSync(logPath, 'utf8').trim().split('\n');
  srv.kill();
  console.log(JSON.stringify(out, (k, v) => (typeof v === 'bigint' ? 'bigint:' + v.toString(16) : v)));
})().catch((e) => { console.error(e); process.exit(2); });
`;

describe('MultipathdClient through libmpathcmd against a fake multipathd (unshare -n)', function () {
  this.timeout(60000);
  let out: Record<string, any>;

  before(function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-multipathd-'));
    try {
      fs.writeFileSync(path.join(dir, 'fake.py'), FAKE_MULTIPATHD);
      fs.writeFileSync(path.join(dir, 'driver.js'), DRIVER);
      fs.writeFileSync(
        path.join(dir, 'replies.json'),
        JSON.stringify({
          'getprstatus map mpatha': fixture('getprstatus--unset.reply'),
          'getprkey map mpatha': fixture('getprkey--key.reply'),
          'setprkey map mpatha key 0x7a3f0001:aptpl': 'ok\n',
          'show maps json': fixture('show-maps-json.reply'),
          [Commands.showPaths()]: fixture('show-paths-format.reply'),
          'show daemon': fixture('show-daemon--idle.reply'),
          'fail path sdz': '__close__',
          'reinstate path sdz': '__hang__',
          'show config': '__big__1048576',
          'setprstatus map m1': 'ok\n',
          'setprstatus map m2': 'ok\n',
          'setprstatus map m3': 'ok\n',
        }),
      );
      const distDir = path.resolve(__dirname, '../..');
      const r = spawnSync('unshare', ['-n', process.execPath, path.join(dir, 'driver.js'), distDir, path.join(dir, 'fake.py'), path.join(dir, 'replies.json'), path.join(dir, 'log')], {
        encoding: 'utf8',
        timeout: 50000,
      });
      if (r.error) throw new Error(`cannot run unshare (needs root and util-linux): ${r.error.message}`);
      if (r.status !== 0) throw new Error(`driver failed (status ${r.status}):\n${r.stderr}`);
      out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports "unavailable" with ECONNREFUSED when nothing listens, and marks the command as not executed', function () {
    expect(out.noDaemon.error).to.deep.include({ name: 'MultipathdError', kind: 'unavailable', errno: os.constants.errno.ECONNREFUSED, maybeExecuted: false });
  });

  it('carries 0.9.4 replies through the real framing (getprstatus "0" without a newline)', function () {
    expect(out.prStatus).to.deep.equal({ value: 'unset' });
    expect(out.prKey).to.deep.equal({ value: { key: 'bigint:7a3f0001', aptpl: false } });
    expect(out.setPrKey).to.deep.equal({});
    expect(out.maps).to.deep.equal({ value: ['mpatha', 'mpathb'] });
    expect(out.paths.value[2]).to.deep.equal(['sdc', 'i/o pending', 'mpathb']);
    expect(out.daemon).to.deep.equal({ value: { pid: 812, state: 'idle' } });
    expect(out.version.value).to.deep.include({ major: 0, minor: 9, patch: 4 });
  });

  it('types an unknown command', function () {
    expect(out.unknown.error).to.deep.include({ kind: 'unknown-command' });
  });

  it('reports a connection closed mid-command as unavailable that may have executed', function () {
    expect(out.closed.error).to.deep.include({ kind: 'unavailable', maybeExecuted: true });
  });

  it('times out a silent daemon without blocking the event loop, then carries on', function () {
    expect(out.loopFreeDuringCall).to.equal(true);
    expect(out.hang.error).to.deep.include({ kind: 'timeout', errno: os.constants.errno.ETIMEDOUT, maybeExecuted: true });
    expect(out.afterHang).to.deep.equal({ value: { pid: 812, state: 'idle' } });
  });

  it('reads a 1 MiB reply (malloc/free across the FFI)', function () {
    expect(out.big).to.deep.equal({ value: 1048577 });
  });

  it('sends exactly the commands issued, in order', function () {
    expect(out.burst).to.deep.equal([{}, {}, {}]);
    expect(out.log).to.deep.equal([
      'getprstatus map mpatha',
      'getprkey map mpatha',
      'setprkey map mpatha key 0x7a3f0001:aptpl',
      'show maps json',
      Commands.showPaths(),
      'show daemon',
      'version',
      'show bogus',
      'fail path sdz',
      'reinstate path sdz',
      'show daemon',
      'show config',
      'setprstatus map m1',
      'setprstatus map m2',
      'setprstatus map m3',
    ]);
  });
});
