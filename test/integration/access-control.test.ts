// Access control on real `mpath-pr serve` processes: a peer of another uid (a real child
// process started as nobody), a device outside --allow-device, and the per-peer limits.

import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import * as pr from '../../src/backends/pr-commands';
import { PrHelperClient } from '../../src/protocol/client';
import { Status } from '../../src/scsi/constants';
import { Sense, senseMatches } from '../../src/scsi/sense';
import { executorFor } from '../support/client';
import { daemonSuite, launchDaemon, MPATH_PR, requireRoot, runToExit, type DaemonProcess } from '../support/daemon';
import type { PeerOutcome } from './peer-client';

const NOBODY = 65534;
const PEER_CLIENT = path.join(__dirname, 'peer-client.js');

/** Runs peer-client.js as nobody and returns what it saw. */
async function peerAsNobody(socket: string, lu?: string): Promise<PeerOutcome> {
  const { code, stdout, output } = await runToExit(PEER_CLIENT, [socket, ...(lu ? [lu] : [])], { uid: NOBODY, gid: NOBODY });
  try {
    return JSON.parse(stdout.trim().split('\n').pop()!) as PeerOutcome;
  } catch {
    throw new Error(`peer client exited ${code} without an outcome: ${output}`);
  }
}

describe('access control (real serve processes)', function () {
  this.timeout(60_000);
  // nobody must be able to reach the socket: the socket mode alone then decides, as for qemu-pr-helper.
  const suite = daemonSuite('mpath-pr-acl-', { mode: 0o711 });
  let dir: string;
  let state: string;
  let socket: string;

  requireRoot('these tests start clients under another uid');

  beforeEach(() => {
    dir = suite.dir;
    state = path.join(dir, 'san.db');
    socket = path.join(dir, 'acl.sock');
  });

  async function serve(extra: string[], logLevel = 'debug'): Promise<DaemonProcess> {
    return suite.add(await launchDaemon(MPATH_PR, ['serve', '--socket', socket, '--socket-mode', '0666', '--state', state, '--backend', 'emulated', '--log-level', logLevel, ...extra]));
  }

  function sharedLu(name: string): string {
    const lu = path.join(dir, name);
    fs.writeFileSync(lu, Buffer.alloc(4096), { mode: 0o666 });
    fs.chmodSync(lu, 0o666);
    return lu;
  }

  it('a peer whose uid is not allowed is closed without a single byte, and the log names its pid, uid and gid', async () => {
    const d = await serve(['--allow-uid', '4242']);
    const outcome = await peerAsNobody(socket);
    expect(outcome.uid).to.equal(NOBODY);
    expect(outcome.error).to.equal(undefined);
    expect(outcome.eof).to.equal(true);
    expect(outcome.firstBytes).to.deep.equal([]);
    await d.waitForLog(/refused connection from pid \d+ uid 65534/);
    const line = d.records().find((r) => r.reason === 'not-allowed')!;
    expect(line.peer).to.deep.equal({ pid: outcome.pid, uid: NOBODY, gid: NOBODY });
    expect(line.msg).to.equal(`refused connection from pid ${outcome.pid} uid ${NOBODY} gid ${NOBODY}: not in --allow-uid/--allow-gid`);
  });

  it('the same peer, once allowed by uid name, gets the features word and its commands run', async () => {
    await serve(['--allow-uid', '4242', '--allow-uid', 'nobody']);
    const lu = sharedLu('lu-nobody.img');
    const outcome = await peerAsNobody(socket, lu);
    expect(outcome.error).to.equal(undefined);
    expect(outcome.eof).to.equal(false);
    expect(outcome.firstBytes).to.deep.equal([0, 0, 0, 0]);
    expect(outcome.keys).to.deep.equal(['65534', '65534']);
  });

  it('--allow-gid admits a peer by its primary gid', async () => {
    await serve(['--allow-uid', '4242', '--allow-gid', String(NOBODY)]);
    const outcome = await peerAsNobody(socket);
    expect(outcome.eof).to.equal(false);
    expect(outcome.firstBytes).to.deep.equal([0, 0, 0, 0]);
  });

  it('a device outside --allow-device gets LOGICAL UNIT NOT SUPPORTED before any SCSI command: the emulated store is untouched', async () => {
    const allowedDir = path.join(dir, 'allowed');
    fs.mkdirSync(allowedDir);
    const allowed = path.join(allowedDir, 'lu0.img');
    fs.writeFileSync(allowed, Buffer.alloc(4096));
    const outside = path.join(dir, 'outside.img');
    fs.writeFileSync(outside, Buffer.alloc(4096));
    const d = await serve(['--allow-device', `${allowedDir}/*.img`, '--allow-device', '36001405deadbeef']);
    const client = new PrHelperClient();
    await client.connect(socket);
    const outsideFd = fs.openSync(outside, 'r+');
    const allowedFd = fs.openSync(allowed, 'r+');
    try {
      const refused = await pr.prOut(executorFor(client, outsideFd), { action: 'register', serviceActionKey: 0xbadn });
      expect(refused.status).to.equal(Status.CHECK_CONDITION);
      expect(senseMatches(refused.sense, Sense.LOGICAL_UNIT_NOT_SUPPORTED), 'sense 05/25/00').to.equal(true);
      const refusedIn = await executorFor(client, outsideFd)(pr.buildPrIn(0x00), Buffer.alloc(0));
      expect(refusedIn.status).to.equal(Status.CHECK_CONDITION);
      expect(refusedIn.dataIn.length).to.equal(0);
      // The allowed device on the same connection works.
      await pr.register(executorFor(client, allowedFd), 0x600dn);
      expect((await pr.readKeys(executorFor(client, allowedFd))).keys).to.deep.equal([0x600dn, 0x600dn]);
    } finally {
      client.close();
      fs.closeSync(outsideFd);
      fs.closeSync(allowedFd);
    }
    await d.waitForLog(/refused command for .*outside\.img from pid \d+ uid 0 gid 0/);
    const line = d.records().find((r) => r.device === outside && typeof r.msg === 'string' && r.msg.startsWith('refused command'))!;
    expect(line.peer).to.deep.include({ uid: 0, gid: 0, pid: process.pid });
    // The server's own command log shows the answer the client got (the log may trail the reply).
    await d.waitForLog(/"action":"REGISTER"[^\n]*outside\.img|outside\.img[^\n]*"action":"REGISTER"/);
    const answered = d.records().find((r) => r.device === outside && r.action === 'REGISTER')!;
    expect(answered).to.deep.include({ status: 'CHECK_CONDITION' });
    expect(String(answered.sense)).to.match(/LOGICAL UNIT NOT SUPPORTED/i);
    // No state change: the refused LU was never created in the shared store.
    const { code, stdout, output } = await runToExit(MPATH_PR, ['in', '--read-keys', '--json', '--backend', 'emulated', '--state', state, outside]);
    expect(code, output).to.equal(0);
    expect(JSON.parse(stdout).data).to.deep.include({ generation: 0, keys: [] });
  });

  it('refuses a uid its connections beyond --max-connections-per-peer, and admits again when one closes', async () => {
    const d = await serve(['--max-connections-per-peer', '2']);
    const first = new PrHelperClient();
    const second = new PrHelperClient();
    await first.connect(socket);
    await second.connect(socket);
    const third = new PrHelperClient({ connectAttempts: 1 });
    let thirdError: Error | undefined;
    await third.connect(socket).catch((error: Error) => (thirdError = error));
    expect(thirdError, 'the third connection must fail its handshake').to.be.instanceOf(Error);
    await d.waitForLog(/uid already has 2 connections/);
    first.close();
    // The daemon frees the slot when it sees the close; a retry then succeeds.
    await d.waitForLog(/"reason":"eof"/);
    const fourth = new PrHelperClient();
    await fourth.connect(socket);
    expect(fourth.connected).to.equal(true);
    second.close();
    fourth.close();
  });

  it('beyond --max-in-flight-per-peer a command waits its turn (FIFO) instead of being answered BUSY', async () => {
    const d = await serve(['--max-in-flight-per-peer', '1'], 'trace');
    const slow = path.join(dir, 'slow.img');
    const fast = path.join(dir, 'fast.img');
    fs.writeFileSync(slow, '');
    fs.writeFileSync(fast, '');
    const delayed = await runToExit(MPATH_PR, ['emu', 'delay', slow, '--ms', '1500', '--state', state]);
    expect(delayed.code, delayed.output).to.equal(0);
    const slowClient = new PrHelperClient();
    const fastClient = new PrHelperClient();
    await slowClient.connect(socket);
    await fastClient.connect(socket);
    const slowFd = fs.openSync(slow, 'r+');
    const fastFd = fs.openSync(fast, 'r+');
    const order: string[] = [];
    try {
      const slowDone = pr.register(executorFor(slowClient, slowFd), 0x5n).then(() => order.push('slow'));
      // The slow command holds the uid's only slot before the fast one is sent.
      await d.waitForLog(/slow\.img[^\n]*"msg":"command admitted"/);
      const fastDone = pr.register(executorFor(fastClient, fastFd), 0xfn).then(() => order.push('fast'));
      await Promise.all([slowDone, fastDone]);
    } finally {
      slowClient.close();
      fastClient.close();
      fs.closeSync(slowFd);
      fs.closeSync(fastFd);
    }
    // Without the limit the fast device answers first (daemon-e2e proves that); with one slot
    // per uid it waits for the slow one, and both succeed.
    expect(order).to.deep.equal(['slow', 'fast']);
    await d.waitForLog(/in-flight limit reached; command waits its turn/);
    expect(d.logs()).to.not.match(/"status":"BUSY"|"status":"TASK SET FULL"/);
  });
});
