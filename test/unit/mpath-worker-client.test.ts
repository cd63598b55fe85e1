// The libmpathpersist worker host: stand-in worker scripts (written per test) exercise the
// process management (order, deaths, hangs, failed starts, stderr), and the real worker runs
// the real library on this machine.

import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MpathWorkerClient, type WorkerCall, type WorkerLogger } from '../../src/backends/mpath/mpath-worker-client';

function capture(): { logger: WorkerLogger; lines: Array<{ level: string; msg: string; obj: unknown }> } {
  const lines: Array<{ level: string; msg: string; obj: unknown }> = [];
  const sink = (level: string) => (obj: unknown, msg?: string) => {
    lines.push({ level, msg: msg ?? '', obj });
  };
  return { logger: { debug: sink('debug'), info: sink('info'), warn: sink('warn'), error: sink('error') } as unknown as WorkerLogger, lines };
}

const PRELUDE = `process.on('disconnect', () => process.exit(0));\n`;

/** Requests the stand-in worker answers by misbehaving: the child exits with status 1, or never answers. */
const EXITS = 99;
const HANGS = 98;

/**
 * A stand-in worker: replies rc = serviceAction + 100 (and the service action as the data)
 * after as many ms as the allocation length says (call() names it the delay), except to
 * EXITS and HANGS. Answers `error` to a request that arrives while another is in flight.
 */
const BEHAVING_WORKER = `${PRELUDE}
let inFlight = 0;
process.on('message', (m) => {
  if (inFlight++ > 0) { process.send({ kind: 'error', id: m.id, message: 'overlap' }); return; }
  process.stderr.write('noise for ' + m.id + '\\n');
  if (m.serviceAction === ${EXITS}) { process.stderr.write('about to exit(1)\\n'); process.exit(1); }
  if (m.serviceAction === ${HANGS}) return;
  setTimeout(() => { inFlight--; process.send({ kind: 'reply', id: m.id, rc: m.serviceAction + 100, elapsedMs: 1, wire: new Uint8Array([m.serviceAction]) }); }, m.allocationLength);
});
process.send({ kind: 'ready', ok: true, abi: 'stand-in', openFilesLimit: 'n/a' });
`;

const call = (serviceAction: number, delayMs = 0): WorkerCall => ({
  kind: 'in',
  target: { major: 253, minor: 0 },
  serviceAction,
  allocationLength: delayMs,
});

describe('mpath worker client (libmpathpersist child process)', function () {
  this.timeout(30_000);
  let dir: string;
  const clients: MpathWorkerClient[] = [];
  const script = (name: string, text: string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  };
  const client = (options: ConstructorParameters<typeof MpathWorkerClient>[0]) => {
    const c = new MpathWorkerClient(options);
    clients.push(c);
    return c;
  };

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpath-worker-test-'));
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('runs calls one at a time in the order they were made, on one child', async function () {
    const c = client({ workerPath: script('behaving.js', BEHAVING_WORKER) });
    // Later calls are faster: any overlap or reordering would show.
    const outcomes = await Promise.all([call(5, 60), call(4, 40), call(3, 20), call(2, 0), call(1, 0)].map((r) => c.call(r)));
    expect(outcomes.map((o) => (o.kind === 'reply' ? o.rc : o.kind))).to.deep.equal([105, 104, 103, 102, 101]);
    expect(outcomes.map((o) => (o.kind === 'reply' ? [...(o.wire ?? [])] : []))).to.deep.equal([[5], [4], [3], [2], [1]]);
    expect(c.starts).to.equal(1);
  });

  it('answers the command in flight with `died` when the child exits, and starts a new child for the next', async function () {
    const { logger, lines } = capture();
    const c = client({ workerPath: script('behaving.js', BEHAVING_WORKER), logger });
    expect((await c.call(call(1))).kind).to.equal('reply');
    const firstPid = c.pid;
    const died = await c.call(call(EXITS));
    expect(died.kind).to.equal('died');
    expect(died.kind === 'died' && died.reason).to.match(/exited with status 1/).and.to.include('about to exit(1)');
    const next = await c.call(call(7));
    expect(next).to.include({ kind: 'reply', rc: 107 });
    expect(c.pid).to.be.a('number').and.not.equal(firstPid);
    expect(c.starts).to.equal(2);
    expect(c.deathsInFlight).to.equal(1);
    // The child's stderr reached the logger at debug, line by line.
    expect(lines.filter((l) => l.level === 'debug').map((l) => l.msg)).to.include.members(['libmpathpersist: noise for 1', 'libmpathpersist: about to exit(1)']);
  });

  it('kills a child that overruns the call deadline and answers `died`', async function () {
    const c = client({ workerPath: script('behaving.js', BEHAVING_WORKER), callTimeoutMs: 300 });
    const hung = await c.call(call(HANGS));
    expect(hung.kind).to.equal('died');
    expect(hung.kind === 'died' && hung.reason).to.include('SIGKILL');
    expect(await c.call(call(3))).to.include({ kind: 'reply', rc: 103 });
  });

  it('reports `unavailable` when the library cannot initialise, and does not fork again within the back-off', async function () {
    const c = client({
      workerPath: script('not-ready.js', `${PRELUDE}process.send({ kind: 'ready', ok: false, reason: 'libmpathpersist.so.0 could not be loaded' });\n`),
      restartBackoffMs: 60_000,
    });
    const first = await c.call(call(1));
    expect(first).to.deep.equal({ kind: 'unavailable', reason: 'libmpathpersist.so.0 could not be loaded' });
    expect(await c.call(call(1))).to.deep.equal(first);
    expect(c.starts).to.equal(1);
    expect(await c.probe()).to.deep.include({ ok: false, reason: 'libmpathpersist.so.0 could not be loaded' });
  });

  it('reports `unavailable` for a child that exits or stays silent before it is ready', async function () {
    const exits = client({ workerPath: script('exits.js', `process.stderr.write('dm_prereq failed\\n'); process.exit(1);\n`), restartBackoffMs: 0 });
    const outcome = await exits.call(call(1));
    expect(outcome.kind).to.equal('unavailable');
    expect(outcome.kind === 'unavailable' && outcome.reason).to.include('exited with status 1 before it was ready').and.include('dm_prereq failed');
    const silent = client({ workerPath: script('silent.js', `${PRELUDE}setInterval(() => {}, 1000);\n`), startTimeoutMs: 300 });
    const timedOut = await silent.call(call(1));
    expect(timedOut.kind === 'unavailable' && timedOut.reason).to.include('did not start within 300 ms');
  });

  it('refuses calls after close and leaves no child behind', async function () {
    const c = client({ workerPath: script('behaving.js', BEHAVING_WORKER) });
    await c.call(call(1));
    const pid = c.pid!;
    await c.close();
    expect(fs.existsSync(`/proc/${pid}`) && !fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ')).to.equal(false);
    expect(await c.call(call(1))).to.deep.equal({ kind: 'unavailable', reason: 'the mpath backend is closed' });
  });

  describe('the real worker with the installed libmpathpersist', function () {
    const limitsOf = (pid: number | 'self') => fs.readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));

    it('loads and initialises the library in the child; the library\'s RLIMIT_NOFILE change stays there', async function () {
      const before = limitsOf('self');
      const c = client({});
      const ready = await c.probe();
      expect(ready, JSON.stringify(ready)).to.include({ ok: true });
      expect(ready.abi).to.match(/^LIBMPATHPERSIST_2\./);
      expect(ready.libraryPath).to.match(/libmpathpersist\.so/);
      expect(limitsOf('self')).to.equal(before);
    });

    it('survives the library on a block device that is not a map: exit(1) without device-mapper, DMMP_ERROR with it', async function () {
      const { logger, lines } = capture();
      const c = client({ logger });
      const blockDevice = fs
        .readdirSync('/sys/class/block')
        .map((name) => ({ name, dev: fs.readFileSync(`/sys/class/block/${name}/dev`, 'utf8').trim() }))
        .find((d) => fs.existsSync(`/dev/${d.name}`) && !d.name.startsWith('dm-'));
      expect(blockDevice, 'this machine has a block device node').to.not.equal(undefined);
      const [major, minor] = blockDevice!.dev.split(':').map(Number);
      let dmUsable = true;
      try {
        fs.closeSync(fs.openSync('/dev/mapper/control', 'r+'));
      } catch {
        dmUsable = false;
      }
      const outcome = await c.call({ kind: 'in', target: { major, minor }, serviceAction: 0, allocationLength: 8192, verbose: 2 });
      if (dmUsable) {
        expect(outcome.kind === 'reply' && outcome.rc, JSON.stringify(outcome)).to.be.a('number').and.not.equal(0);
      } else {
        // libdevmapper's dm_prereq fails and libmultipath calls exit(1): the daemon lives on.
        expect(outcome.kind, JSON.stringify(outcome)).to.equal('died');
        expect(lines.map((l) => l.msg).join('\n')).to.include('device-mapper');
      }
      expect((await c.probe()).ok).to.equal(true);
    });

    it('answers `error` without calling the library when no node has the dev_t', async function () {
      const c = client({});
      const outcome = await c.call({ kind: 'in', target: { major: 4095, minor: 1048575 }, serviceAction: 0, allocationLength: 8192 });
      expect(outcome.kind).to.equal('error');
      expect(outcome.kind === 'error' && outcome.message).to.include('no block device node for 4095:1048575');
    });
  });
});
