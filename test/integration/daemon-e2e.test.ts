// End to end: real `mpath-pr serve` processes, real Unix sockets, real SCM_RIGHTS.

import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import * as libc from '../../ffi/libc';
import * as pr from '../../src/backends/pr-commands';
import { PrType, Status } from '../../src/scsi/constants';
import { Sense, senseMatches } from '../../src/scsi/sense';
import { connectClient, executorFor, withClient } from '../support/client';
import { daemonSuite, MPATH_PR, runToExit, startServe, type ServeProcess } from '../support/daemon';
import { openFdCount } from '../support/proc';
import { eventually } from '../support/wait';

const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => runToExit(MPATH_PR, args, { env });

describe('daemon end to end (serve processes, real sockets, SCM_RIGHTS)', function () {
  this.timeout(60_000);
  const suite = daemonSuite('mpath-pr-e2e-');
  let dir: string;
  let state: string;
  let lu: string;

  beforeEach(() => {
    dir = suite.dir;
    state = path.join(dir, 'san.db');
    lu = path.join(dir, 'lu0.img');
    fs.writeFileSync(lu, Buffer.alloc(4096));
  });

  async function serve(initiator: string, paths = 2, logLevel?: string): Promise<ServeProcess> {
    return suite.add(await startServe({ dir, state, initiator, paths, logLevel }));
  }

  /** Resolves once the daemon's fd count is back to `baseline` (it closes a client's fds when it sees the client go). */
  const fdsBackTo = (host: ServeProcess, baseline: number) =>
    eventually(() => openFdCount(host.pid) === baseline, `daemon fds back to ${baseline}`, { describe: () => `${openFdCount(host.pid)} open` });

  it("runs fence_mpath's flow between two hosts that share one state file", async () => {
    const hostA = await serve('node-a');
    const hostB = await serve('node-b');
    await withClient(hostA.socket, lu, (runA) => withClient(hostB.socket, lu, async (runB) => {
      await pr.register(runA, 0xa1n);
      await pr.register(runB, 0xb1n);
      expect((await pr.readKeys(runA)).keys).to.have.members([0xa1n, 0xa1n, 0xb1n, 0xb1n]);
      await pr.reserve(runA, 0xa1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
      await pr.preempt(runB, 0xb1n, 0xa1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, true);
      const keys = await pr.readKeys(runB);
      expect(keys.keys).to.deep.equal([0xb1n, 0xb1n]);
      const reservation = await pr.readReservation(runB);
      expect(reservation.reservation).to.deep.include({ key: 0xb1n, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY });
      // The fenced host cannot come back with its old key.
      const again = await pr.prOut(runA, { action: 'register', reservationKey: 0xa1n, serviceActionKey: 0xa2n });
      expect(again.status === Status.RESERVATION_CONFLICT || senseMatches(again.sense, Sense.REGISTRATIONS_PREEMPTED)).to.equal(true);
    }));
    expect(hostA.logs()).to.match(/"action":"RESERVE".*"status":"GOOD"/);
    expect(hostB.logs()).to.match(/"action":"PREEMPT AND ABORT".*"peer":|"peer":.*"action":"PREEMPT AND ABORT"/);
  });

  it('the CLI goes through the daemon with --socket and exits with sg3_utils codes', async () => {
    const hostA = await serve('cli-a');
    const hostB = await serve('cli-b');
    expect((await cli(['out', '--register', '--param-sark', '0xaa', '--socket', hostA.socket, lu])).code).to.equal(0);
    expect((await cli(['out', '--register', '--param-sark', '0xbb', '--socket', hostB.socket, lu])).code).to.equal(0);
    expect((await cli(['out', '--reserve', '--param-rk', '0xaa', '--prout-type', '5', '--socket', hostA.socket, lu])).code).to.equal(0);
    const conflict = await cli(['out', '--reserve', '--param-rk', '0xbb', '--prout-type', '5', '--socket', hostB.socket, lu]);
    expect(conflict.code).to.equal(24);
    expect(conflict.stderr).to.match(/Reservation conflict/);
    const badType = await cli(['out', '--release', '--param-rk', '0xaa', '--prout-type', '3', '--socket', hostA.socket, lu]);
    expect(badType.code).to.equal(5);
    const shown = await cli(['in', '--read-reservation', '--socket', hostB.socket, lu]);
    expect(shown.stdout).to.contain('Key=0xaa').and.to.contain('Write Exclusive, registrants only');
    const json = JSON.parse((await cli(['in', '--read-keys', '--json', '--socket', hostB.socket, lu])).stdout);
    expect(json.data.keys).to.have.members(['0xaa', '0xaa', '0xbb', '0xbb']);
    const missing = await cli(['in', '--read-keys', '--socket', path.join(dir, 'nobody.sock'), lu]);
    expect(missing.code).to.equal(15);
    const usage = await cli(['out', '--register', '--reserve', lu]);
    expect(usage.code).to.equal(1);
  });

  it('emu path fail/reinstate from another process is seen by the running daemon', async () => {
    const host = await serve('faulty', 3);
    await withClient(host.socket, lu, async (runOn) => {
      const env = { MPATH_PR_STATE: state, MPATH_PR_INITIATOR: 'faulty' };
      expect((await cli(['emu', 'path', 'fail', '--path', '1'], env)).code).to.equal(0);
      await pr.register(runOn, 0x77n);
      expect((await pr.readKeys(runOn)).keys).to.deep.equal([0x77n, 0x77n]);
      const reinstated = await cli(['emu', 'path', 'reinstate', '--path', '1', '--json'], env);
      expect(JSON.parse(reinstated.stdout).reregistered).to.deep.equal([lu]);
      expect((await pr.readKeys(runOn)).keys).to.deep.equal([0x77n, 0x77n, 0x77n]);
      const listed = await cli(['emu', 'path', 'list'], env);
      expect(listed.stdout).to.match(/path 1 {2}target port 2 {2}active/);
    });
  });

  it('50 concurrent clients lose nothing and leak no fd', async () => {
    const host = await serve('busy');
    const baseline = openFdCount(host.pid);
    const clients = await Promise.all(Array.from({ length: 50 }, () => connectClient(host.socket)));
    const ROUNDS = 6;
    await Promise.all(
      clients.map(async (client, i) => {
        for (let round = 0; round < ROUNDS; round++) {
          const fd = fs.openSync(lu, 'r+');
          try {
            const runOn = executorFor(client, fd);
            await pr.registerIgnore(runOn, BigInt(1 + i * 100 + round));
            await pr.readKeys(runOn);
          } finally {
            fs.closeSync(fd);
          }
        }
      }),
    );
    for (const client of clients) client.close();
    // Each REGISTER AND IGNORE reached both paths of the host: two generations each.
    const { generation } = await withClient(host.socket, lu, (observe) => pr.readKeys(observe), 'r');
    expect(generation).to.equal(50 * ROUNDS * 2);
    await fdsBackTo(host, baseline);
  });

  it('a client that drops mid-request does not disturb others and leaks no fd', async () => {
    const host = await serve('drops');
    const baseline = openFdCount(host.pid);
    const fd = fs.openSync(lu, 'r+');
    try {
      for (const cut of [3, 10, 16 + 5]) {
        const sock = libc.unixStreamSocket({ nonBlocking: false });
        expect(libc.connect(sock, host.socket)).to.equal('connected');
        const features = libc.read(sock, 4);
        expect(features).to.deep.equal(Buffer.alloc(4));
        libc.write(sock, Buffer.alloc(4));
        const { cdb, dataOut } = pr.buildPrOut({ action: 'register', serviceActionKey: 0x99n });
        const request = Buffer.concat([cdb, Buffer.alloc(16 - cdb.length), dataOut]);
        libc.sendmsg(sock, request.subarray(0, cut), [fd]);
        libc.close(sock);
      }
      const keys = await withClient(host.socket, lu, (run) => pr.readKeys(run));
      expect(keys.keys).to.deep.equal([]); // none of the torn REGISTERs ran
    } finally {
      fs.closeSync(fd);
    }
    await fdsBackTo(host, baseline);
  });

  it('a slow device does not stall a command for another device', async () => {
    // trace: the daemon logs each command it admits, so the test knows the slow one is in flight.
    const host = await serve('slowfast', 2, 'trace');
    const slow = path.join(dir, 'slow.img');
    fs.writeFileSync(slow, '');
    // Longer than any machine needs for the fast command; the test ends the slow one by hanging up.
    expect((await cli(['emu', 'delay', slow, '--ms', '600000', '--state', state])).code).to.equal(0);
    let slowSettled = false;
    await withClient(host.socket, slow, async (runSlow) => {
      const slowDone = pr.prOut(runSlow, { action: 'register', serviceActionKey: 0x5n }).finally(() => {
        slowSettled = true;
      });
      slowDone.catch(() => undefined); // rejected when the client hangs up below
      await host.waitForLog(/slow\.img[^\n]*"msg":"command admitted"/);
      await withClient(host.socket, lu, (runFast) => pr.register(runFast, 0xfn));
      expect(slowSettled, 'the slow command is still in flight when the fast one has its reply').to.equal(false);
    });
  });

  it('SIGTERM lets an in-flight command finish and reply before the daemon exits 0', async () => {
    // trace: the daemon logs each command it admits, so the test knows the command is in flight.
    const host = await serve('graceful', 2, 'trace');
    expect((await cli(['emu', 'delay', lu, '--ms', '1500', '--state', state])).code).to.equal(0);
    await withClient(host.socket, lu, async (run) => {
      const pending = pr.prOut(run, { action: 'register', serviceActionKey: 0x42n });
      await host.waitForLog(/lu0\.img[^\n]*"msg":"command admitted"/);
      const exit = host.stop('SIGTERM');
      const result = await pending;
      expect(result.status).to.equal(Status.GOOD);
      expect(await exit).to.equal(0);
    });
    expect(fs.existsSync(host.socket)).to.equal(false);
  });
});
