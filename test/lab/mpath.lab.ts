// @lab {"fabric": "tcm_loop", "paths": 2, "secondHost": true}
// @lab {"fabric": "iscsi", "paths": 2, "secondHost": true}
//
// The mpath backend on a real dm-multipath map, end to end: our daemon
// (`mpath-pr serve --backend auto`) in the guest, QEMU's protocol through PrHelperClient with
// an fd of /dev/mapper/mpatha, libmpathpersist 0.9.4 in the daemon's worker process,
// multipathd 0.9.4, LIO. sg_persist on each path is the independent oracle. Host B (its own
// nexus, outside the map) plays the other cluster node.
//
// PREEMPT AND ABORT is sent only on iSCSI: it deadlocks LIO over tcm_loop.

import { expect } from 'chai';
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { buildPrIn, buildPrOut, type PrOutRequest } from '../../src/backends/pr-commands';
import { formatMpathDoctor, mpathDoctor } from '../../src/cli/doctor';
import { MultipathdClient } from '../../src/multipathd/client';
import { PrHelperClient } from '../../src/protocol/client';
import type { PrHelperReply } from '../../src/protocol/messages';
import { PrInAction, PrType, Status } from '../../src/scsi/constants';
import { decodeReadFullStatus, decodeReadKeys, decodeReadReservation } from '../../src/scsi/pr-in-data';
import { describeSense, Sense, senseMatches } from '../../src/scsi/sense';
import { relativeTargetPortOf } from '../../src/scsi/vpd';
import { labTopology, mapPaths, multipathd, readFullStatus, readKeys, readReservation, run, stopChild, waitFor, writeArtifact } from './harness/lab-guest';

const KEY_A = 0xa0a0n;
const KEY_A2 = 0xa2a2n;
const KEY_B = 0xb0b0n;
const KEY_Q = 0x9e9en;
const CLEANUP_KEY = 0xc1ea11n;
const WE_RO = PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY;

const hex = (key: bigint) => `0x${key.toString(16)}`;

interface Server {
  readonly child: ChildProcess;
  readonly socket: string;
  readonly log: string;
  readonly client: PrHelperClient;
}

async function startServer(name: string, file: string, args: string[], socket: string, log: string): Promise<Server> {
  fs.rmSync(socket, { force: true });
  const out = fs.openSync(log, 'w');
  const child = spawn(file, args, { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  await waitFor(`${name} to listen on ${socket}`, () => child.exitCode === null && fs.existsSync(socket), {
    timeoutMs: 30_000,
    describe: () => `exit ${child.exitCode}; log: ${fs.readFileSync(log, 'utf8').slice(-2000)}`,
  });
  const client = new PrHelperClient();
  await client.connect(socket);
  return { child, socket, log, client };
}

async function stopServer(server: Server | undefined): Promise<void> {
  if (!server) return;
  server.client.close();
  await stopChild(server.child);
}

function expectGood(reply: PrHelperReply, what: string): void {
  expect(reply.status, `${what}: status 0x${reply.status.toString(16)} ${reply.status === Status.CHECK_CONDITION ? describeSense(reply.sense) : ''}`).to.equal(Status.GOOD);
}

describe(`mpath backend on dm-multipath (${process.env.LAB_FABRIC ?? 'outside the lab'})`, function () {
  this.timeout(120_000);
  const topology = labTopology();
  const [pathA, pathB] = topology.pathDevices;
  const hostB = topology.hostB!;
  const short = (device: string) => path.basename(device);
  const scratch = fs.mkdtempSync('/tmp/mpath-lab-');
  let ours: Server | undefined;
  let mapFd = -1;
  const timings: Record<string, number[]> = {};

  async function timed(what: string, server: Server, cdb: Buffer, dataOut: Buffer = Buffer.alloc(0)): Promise<PrHelperReply> {
    const started = process.hrtime.bigint();
    const reply = await server.client.execute(mapFd, cdb, dataOut);
    (timings[`${server === ours ? 'mpath-pr' : 'qemu-pr-helper'} ${what}`] ??= []).push(Number(process.hrtime.bigint() - started) / 1e6);
    return reply;
  }
  const prOut = (server: Server, request: PrOutRequest) => {
    const { cdb, dataOut } = buildPrOut(request);
    return timed(request.action, server, cdb, dataOut);
  };

  function keysOn(device: string): bigint[] {
    return readKeys(device).keys;
  }

  /** Every registration and reservation gone, multipathd's key unset, every path active. */
  async function resetLu(): Promise<void> {
    for (const device of topology.pathDevices) {
      if (mapPaths(topology.mpathName).find((p) => p.device === device)?.dmState !== 'active') multipathd(`reinstate path ${short(device)}`);
    }
    await waitFor('every path active', () => mapPaths(topology.mpathName).every((p) => p.dmState === 'active'), { timeoutMs: 20_000 });
    // multipathd forgets the key first: a path it is reinstating could otherwise read the
    // key before our CLEAR and register it again after (mpath_pr_event_handle), so the
    // CLEAR is repeated until every nexus stays clean.
    multipathd(`unsetprkey map ${topology.mpathName}`);
    multipathd(`unsetprstatus map ${topology.mpathName}`);
    const devices = [...topology.pathDevices, hostB.device];
    await waitFor(
      'no registration left on any nexus',
      () => {
        if (devices.every((device) => keysOn(device).length === 0)) return true;
        run('sg_persist', ['--out', '--no-inquiry', '--register-ignore', `--param-sark=${hex(CLEANUP_KEY)}`, pathA], { allowFailure: true });
        run('sg_persist', ['--out', '--no-inquiry', '--clear', `--param-rk=${hex(CLEANUP_KEY)}`, pathA], { allowFailure: true });
        return false;
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    for (const device of devices) expect(keysOn(device), `${device} clean`).to.deep.equal([]);
  }

  before(async function () {
    ours = await startServer(
      'mpath-pr serve',
      process.execPath,
      [
        path.join(topology.repo, 'dist/src/cli/mpath-pr.js'),
        'serve',
        '--socket',
        path.join(scratch, 'mpath-pr.sock'),
        '--backend',
        'auto',
        '--state',
        path.join(scratch, 'state.db'),
        '--log-level',
        'debug',
      ],
      path.join(scratch, 'mpath-pr.sock'),
      path.join(scratch, 'mpath-pr.log'),
    );
    mapFd = fs.openSync(topology.mpathDevice, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  });

  after(async function () {
    await stopServer(ours);
    if (mapFd >= 0) fs.closeSync(mapFd);
    if (ours) writeArtifact(topology, 'mpath-lab/mpath-pr.log', fs.readFileSync(ours.log, 'utf8'));
    writeArtifact(topology, 'mpath-lab/timings.json', JSON.stringify(timings, null, 2));
    for (const [what, ms] of Object.entries(timings)) {
      const sorted = [...ms].sort((x, y) => x - y);
      console.log(`      timing ${what}: n=${ms.length} median=${sorted[Math.floor(sorted.length / 2)].toFixed(1)} ms max=${sorted[sorted.length - 1].toFixed(1)} ms`);
    }
  });

  beforeEach(resetLu);

  it('serves the map through the mpath backend, READ KEYS on a clean LU, and RESERVE through the libmpathpersist worker', async function () {
    const reply = await timed('read-keys', ours!, buildPrIn(PrInAction.READ_KEYS));
    expectGood(reply, 'READ KEYS');
    const decoded = decodeReadKeys(reply.data);
    expect(decoded.ok && decoded.value.keys).to.deep.equal([]);
    expect(fs.readFileSync(ours!.log, 'utf8'), 'resolver picked mpath').to.match(/"backend":"mpath".*device resolved/);
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    expectGood(await prOut(ours!, { action: 'reserve', reservationKey: KEY_A, type: WE_RO }), 'RESERVE');
    expect(readReservation(hostB.device).holder).to.deep.equal({ key: KEY_A, type: WE_RO });
    expect(fs.readFileSync(ours!.log, 'utf8'), 'worker started').to.include('libmpathpersist worker ready');
  });

  it('REGISTER puts the key on every path and tells multipathd', async function () {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    for (const device of topology.pathDevices) expect(keysOn(device), device).to.deep.equal([KEY_A, KEY_A]);
    const reply = await timed('read-keys', ours!, buildPrIn(PrInAction.READ_KEYS));
    expectGood(reply, 'READ KEYS');
    const decoded = decodeReadKeys(reply.data);
    expect(decoded.ok && decoded.value.keys).to.deep.equal([KEY_A, KEY_A]);
    expect(multipathd(`getprkey map ${topology.mpathName}`)).to.equal(`${hex(KEY_A)}\n`);
    expect(multipathd(`getprstatus map ${topology.mpathName}`)).to.match(/^(1|set\n)$/);
  });

  it('each path names its target port in VPD page 83h, the port READ FULL STATUS reports its registration on', async function () {
    const ports = topology.pathDevices.map((device) => relativeTargetPortOf(fs.readFileSync(`/sys/class/block/${short(device)}/device/vpd_pg83`)));
    expect(ports.every((port) => port !== undefined), `ports ${ports.join(', ')}`).to.equal(true);
    expect(new Set(ports).size, `ports ${ports.join(', ')}`).to.equal(ports.length);
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    const registeredOn = readFullStatus(pathA).entries.filter((entry) => entry.key === KEY_A).map((entry) => entry.relativeTargetPort);
    expect([...registeredOn].sort()).to.deep.equal([...ports].sort());
  });

  it('REGISTER AND IGNORE while a path is failed in the map leaves both nexuses registered', async function () {
    // libmpathpersist 0.9.4 runs its own path checker (DI_CHECKER), so a path that multipathd
    // failed but that answers TEST UNIT READY is still sent the command.
    multipathd(`fail path ${short(pathB)}`);
    await waitFor(`${pathB} failed`, () => mapPaths(topology.mpathName).find((p) => p.device === pathB)?.dmState === 'failed', { timeoutMs: 10_000 });
    expectGood(await prOut(ours!, { action: 'register-ignore', serviceActionKey: KEY_A }), 'REGISTER AND IGNORE');
    expect(keysOn(pathA), 'both nexuses registered right after GOOD').to.deep.equal([KEY_A, KEY_A]);
  });

  it('a path that loses its registration while failed gets it back on reinstate (multipathd holds our key)', async function () {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    multipathd(`fail path ${short(pathB)}`);
    await waitFor(`${pathB} failed`, () => mapPaths(topology.mpathName).find((p) => p.device === pathB)?.dmState === 'failed', { timeoutMs: 10_000 });
    // Drop pathB's own registration behind everyone's back (a target reset would).
    run('sg_persist', ['--out', '--no-inquiry', '--register', `--param-rk=${hex(KEY_A)}`, '--param-sark=0', pathB]);
    expect(keysOn(pathA)).to.deep.equal([KEY_A]);
    multipathd(`reinstate path ${short(pathB)}`);
    await waitFor(`multipathd to re-register ${pathB}`, () => keysOn(pathA).length === 2, {
      timeoutMs: 20_000,
      intervalMs: 250,
      describe: () => keysOn(pathA).map(hex).join(','),
    });
    expect(keysOn(pathB)).to.deep.equal([KEY_A, KEY_A]);
  });

  it('a path taken offline during a REGISTER ends consistent: every path holds the key or none does, and the reply says which', async function () {
    this.timeout(180_000);
    const sdB = short(pathB);
    const stateFile = `/sys/block/${sdB}/device/state`;
    const started = Date.now();
    const stamps: string[] = [];
    const stamp = (what: string) => stamps.push(`+${Date.now() - started} ms ${what}`);
    const keysSeen = () => `keys ${keysOn(pathA).map(hex).join(',') || 'none'}; prkey ${multipathd(`getprkey map ${topology.mpathName}`).trim()}; paths ${JSON.stringify(mapPaths(topology.mpathName))}`;
    try {
      expect(keysOn(pathA), 'clean LU before the test').to.deep.equal([]);
      // No wait between the two: the REGISTER is meant to meet the path in whatever state
      // the kernel and multipathd have it at that instant.
      fs.writeFileSync(stateFile, 'offline\n'); // the kernel wants echo's newline, else EINVAL
      stamp(`${sdB} offline`);
      const reply = await prOut(ours!, { action: 'register', serviceActionKey: KEY_A });
      const replied = `status 0x${reply.status.toString(16)}${reply.status === Status.CHECK_CONDITION ? ` ${describeSense(reply.sense)}` : ''}`;
      stamp(`REGISTER replied ${replied}`);
      stamp(`while ${sdB} offline: ${keysSeen()}`);

      fs.writeFileSync(stateFile, 'running\n');
      stamp(`${sdB} running`);
      if (mapPaths(topology.mpathName).find((p) => p.device === pathB)?.dmState === 'failed') {
        multipathd(`reinstate path ${sdB}`);
        stamp(`reinstate path ${sdB}`);
      }
      await waitFor('both paths active in the map', () => mapPaths(topology.mpathName).every((p) => p.dmState === 'active' && p.checkerState === 'ready'), {
        timeoutMs: 60_000,
        describe: keysSeen,
      });
      stamp('both paths active');

      const all = [KEY_A, KEY_A];
      if (reply.status === Status.GOOD) {
        // GOOD may come while the offline path is still unregistered: the returning path
        // gets the key from multipathd (the daemon set its prkey), with no help from us.
        await waitFor('KEY_A on every path after GOOD', () => keysOn(pathA).length === 2 && keysOn(pathA).every((k) => k === KEY_A), {
          timeoutMs: 60_000,
          intervalMs: 250,
          describe: keysSeen,
        });
        stamp('KEY_A on every path');
        for (const device of topology.pathDevices) expect(keysOn(device), `${device} after GOOD`).to.deep.equal(all);
        expect(multipathd(`getprkey map ${topology.mpathName}`)).to.equal(`${hex(KEY_A)}\n`);
      } else {
        // Not GOOD: the initiator will retry or give up, so the LU must not be left half
        // registered. Whatever multipathd holds as the key decides what a returning path
        // gets, so "none" is final only if multipathd has no key for the map.
        const consistent = () => {
          const keys = keysOn(pathA);
          const prkey = multipathd(`getprkey map ${topology.mpathName}`).trim();
          if (keys.length === 2 && keys.every((k) => k === KEY_A)) return 'every path';
          if (keys.length === 0 && prkey !== hex(KEY_A)) return 'no path';
          return false;
        };
        const outcome = await waitFor(`all-or-nothing after ${replied}`, consistent, { timeoutMs: 60_000, intervalMs: 250, describe: keysSeen });
        stamp(`after ${replied}: ${outcome} registered`);
        for (const device of topology.pathDevices) expect(keysOn(device), `${device} agrees`).to.deep.equal(outcome === 'every path' ? all : []);
      }
      stamp(`final: ${keysSeen()}`);
    } finally {
      console.log(stamps.map((s) => `      ${s}`).join('\n'));
      writeArtifact(topology, 'mpath-lab/offline-during-register.txt', stamps.join('\n') + '\n');
      if (fs.readFileSync(stateFile, 'utf8').trim() !== 'running') fs.writeFileSync(stateFile, 'running\n');
      await resetLu();
    }
  });

  /** Runs `body` with `device` offline in the kernel, then brings it back as an admin would (reinstating it if multipathd failed it). */
  async function withPathOfflineDuring(device: string, body: () => Promise<void>, afterReturn: () => Promise<void>): Promise<void> {
    const stateFile = `/sys/block/${short(device)}/device/state`;
    try {
      fs.writeFileSync(stateFile, 'offline\n');
      await body();
      fs.writeFileSync(stateFile, 'running\n');
      if (mapPaths(topology.mpathName).find((p) => p.device === device)?.dmState === 'failed') multipathd(`reinstate path ${short(device)}`);
      await afterReturn();
    } finally {
      if (fs.readFileSync(stateFile, 'utf8').trim() !== 'running') fs.writeFileSync(stateFile, 'running\n');
      await resetLu();
    }
  }

  it('a path offline during REGISTER gets the key from the daemon when it answers again, even where multipathd would not register it', async function () {
    const describeKeys = () => `keys ${keysOn(pathA).map(hex).join(',') || 'none'}; paths ${JSON.stringify(mapPaths(topology.mpathName))}`;
    await withPathOfflineDuring(
      pathB,
      async () => {
        expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER with a path offline');
        expect(keysOn(pathA), 'the answering nexus only').to.deep.equal([KEY_A]);
        // Without a prkey multipathd registers no returning path (the state of a host without
        // `reservation_key file`, or an outage too short for its checker): only the daemon can.
        multipathd(`unsetprkey map ${topology.mpathName}`);
      },
      async () => {
        await waitFor('the daemon to register the returning path', () => keysOn(pathA).length === 2, { timeoutMs: 30_000, intervalMs: 250, describe: describeKeys });
        expect(keysOn(pathB)).to.deep.equal([KEY_A, KEY_A]);
        expect(fs.readFileSync(ours!.log, 'utf8')).to.include('registered the key on paths that answer again');
      },
    );
  });

  it('a path offline during REGISTER stays unregistered when it returns after another node preempted our key (no un-fencing)', async function () {
    const log = () => fs.readFileSync(ours!.log, 'utf8');
    const seenBefore = log().split('registered nowhere now').length;
    await withPathOfflineDuring(
      pathB,
      async () => {
        expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER with a path offline');
        run('sg_persist', ['--out', '--no-inquiry', '--register', `--param-sark=${hex(KEY_B)}`, hostB.device]);
        run('sg_persist', ['--out', '--no-inquiry', '--preempt', `--param-rk=${hex(KEY_B)}`, `--param-sark=${hex(KEY_A)}`, `--prout-type=${WE_RO}`, hostB.device]);
        expect(keysOn(hostB.device), 'host B fenced us').to.deep.equal([KEY_B]);
      },
      async () => {
        await waitFor('the daemon to see our key registered nowhere', () => log().split('registered nowhere now').length > seenBefore, { timeoutMs: 30_000, intervalMs: 250 });
        for (const device of [...topology.pathDevices, hostB.device]) expect(keysOn(device), device).to.deep.equal([KEY_B]);
      },
    );
  });

  it('REGISTER (key change) on a map registered on one path only: ours completes it, mpathpersist rolls back', async function () {
    const partial = async () => {
      await resetLu();
      expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
      // pathB loses its registration behind everyone's back (a target reset, say), so the
      // guest's REGISTER meets RESERVATION CONFLICT there while pathA accepts it.
      run('sg_persist', ['--out', '--no-inquiry', '--register', `--param-rk=${hex(KEY_A)}`, '--param-sark=0', pathB]);
      expect(keysOn(pathA)).to.deep.equal([KEY_A]);
    };
    await partial();
    const cli = run('mpathpersist', ['--out', '--register', `--param-rk=${hex(KEY_A)}`, `--param-sark=${hex(KEY_A2)}`, topology.mpathDevice], { allowFailure: true });
    const afterCli = `mpathpersist REGISTER: exit ${cli.status}; keys ${keysOn(pathA).map(hex).join(',') || 'none'}`;
    console.log(`      ${afterCli}`);
    expect(cli.status, afterCli).to.not.equal(0);

    await partial();
    expectGood(await prOut(ours!, { action: 'register', reservationKey: KEY_A, serviceActionKey: KEY_A2 }), 'REGISTER key change');
    expect(keysOn(pathA)).to.deep.equal([KEY_A2, KEY_A2]);
    expect(fs.readFileSync(ours!.log, 'utf8')).to.include('REGISTER met RESERVATION CONFLICT on a path');
  });

  it('doctor sees the map consistent after REGISTER, and names the path that lost its registration', async function () {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    const mpd = new MultipathdClient();
    const healthy = await mpathDoctor({ multipathd: mpd, maps: [topology.mpathName] });
    const map = healthy.maps[0];
    expect(map, formatMpathDoctor(healthy)).to.deep.include({ name: topology.mpathName, verdict: 'consistent', hostKey: hex(KEY_A), multipathdKey: hex(KEY_A) });
    expect(healthy.library.ok).to.equal(true);
    run('sg_persist', ['--out', '--no-inquiry', '--register', `--param-rk=${hex(KEY_A)}`, '--param-sark=0', pathB]);
    const broken = await mpathDoctor({ multipathd: mpd, maps: [topology.mpathName] });
    writeArtifact(topology, 'mpath-lab/doctor.txt', formatMpathDoctor(healthy) + '\n' + formatMpathDoctor(broken));
    expect(broken.maps[0].verdict, formatMpathDoctor(broken)).to.equal('inconsistent');
    expect(broken.problems).to.include(`${topology.mpathName}: key ${hex(KEY_A)} is registered on 1 of 2 answering paths`);
  });

  it('`mpath-pr doctor --repair` re-registers the host key on the path that lost it', async function () {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    run('sg_persist', ['--out', '--no-inquiry', '--register', `--param-rk=${hex(KEY_A)}`, '--param-sark=0', pathB]);
    const cli = path.join(topology.repo, 'dist/src/cli/mpath-pr.js');
    const before = run(process.execPath, [cli, 'doctor', topology.mpathName, '--json'], { allowFailure: true, timeoutMs: 120_000 });
    expect(before.status, before.stdout + before.stderr).to.equal(99);
    expect(JSON.parse(before.stdout).maps[0].verdict).to.equal('inconsistent');
    const repaired = run(process.execPath, [cli, 'doctor', topology.mpathName, '--repair', '--json'], { allowFailure: true, timeoutMs: 120_000 });
    const report = JSON.parse(repaired.stdout);
    expect(report.repaired, repaired.stderr).to.deep.equal([topology.mpathName]);
    expect(report.maps[0].verdict, repaired.stdout).to.equal('consistent');
    expect(repaired.status, repaired.stderr).to.equal(0);
    expect(keysOn(pathB)).to.include(KEY_A);
  });

  it('RELEASE by a non-holder answers GOOD and leaves host B\'s reservation alone', async function () {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    run('sg_persist', ['--out', '--no-inquiry', '--register', `--param-sark=${hex(KEY_B)}`, hostB.device]);
    run('sg_persist', ['--out', '--no-inquiry', '--reserve', `--param-rk=${hex(KEY_B)}`, `--prout-type=${WE_RO}`, hostB.device]);
    expectGood(await prOut(ours!, { action: 'release', reservationKey: KEY_A, type: WE_RO }), 'RELEASE by non-holder');
    expect(readReservation(hostB.device).holder).to.deep.equal({ key: KEY_B, type: WE_RO });
    expect([...keysOn(hostB.device)].sort()).to.deep.equal([KEY_A, KEY_A, KEY_B].sort());
    const log = fs.readFileSync(ours!.log, 'utf8');
    expect(log).to.include('RELEASE by a non-holder answered without libmpathpersist');
  });

  it('RELEASE by an unregistered key is RESERVATION CONFLICT, and by the holder releases', async function () {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    const conflict = await prOut(ours!, { action: 'release', reservationKey: KEY_A2, type: WE_RO });
    expect(conflict.status).to.equal(Status.RESERVATION_CONFLICT);
    expectGood(await prOut(ours!, { action: 'reserve', reservationKey: KEY_A, type: WE_RO }), 'RESERVE');
    expect(readReservation(pathA).holder).to.deep.equal({ key: KEY_A, type: WE_RO });
    expectGood(await prOut(ours!, { action: 'release', reservationKey: KEY_A, type: WE_RO }), 'RELEASE');
    expect(readReservation(pathA).holder).to.equal(undefined);
    expect(keysOn(pathA)).to.deep.equal([KEY_A, KEY_A]);
  });

  it('RELEASE by the holder with the wrong type: INVALID RELEASE, and host B keeps its registration (mpathpersist CLEARs)', async function () {
    const setUp = async () => {
      await resetLu();
      expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
      run('sg_persist', ['--out', '--no-inquiry', '--register', `--param-sark=${hex(KEY_B)}`, hostB.device]);
      expectGood(await prOut(ours!, { action: 'reserve', reservationKey: KEY_A, type: WE_RO }), 'RESERVE');
    };
    await setUp();
    const cli = run('mpathpersist', ['--out', '--release', `--param-rk=${hex(KEY_A)}`, `--prout-type=${PrType.EXCLUSIVE_ACCESS}`, topology.mpathDevice], { allowFailure: true });
    const holder = readReservation(hostB.device).holder;
    const afterCli = `mpathpersist RELEASE (wrong type): exit ${cli.status}; holder ${holder ? hex(holder.key) : 'none'}; keys ${keysOn(hostB.device).map(hex).join(',')}`;
    console.log(`      ${afterCli}`);
    expect(keysOn(hostB.device), `the 0.9.4 CLEAR: ${afterCli}`).to.not.include(KEY_B);

    await setUp();
    const reply = await prOut(ours!, { action: 'release', reservationKey: KEY_A, type: PrType.EXCLUSIVE_ACCESS });
    expect(reply.status).to.equal(Status.CHECK_CONDITION);
    expect(senseMatches(reply.sense, Sense.INVALID_RELEASE_OF_PERSISTENT_RESERVATION), describeSense(reply.sense)).to.equal(true);
    expect(readReservation(hostB.device).holder).to.deep.equal({ key: KEY_A, type: WE_RO });
    expect([...keysOn(hostB.device)].sort()).to.deep.equal([KEY_A, KEY_A, KEY_B].sort());
  });

  /** The holder preempts its own key: the reservation stays, and so does the registration of every nexus. */
  async function selfPreemptKeepsEveryPath(action: 'preempt' | 'preempt-abort', label: string): Promise<void> {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    expectGood(await prOut(ours!, { action: 'reserve', reservationKey: KEY_A, type: WE_RO }), 'RESERVE');
    expectGood(await prOut(ours!, { action, reservationKey: KEY_A, serviceActionKey: KEY_A, type: WE_RO }), label);
    expect(keysOn(pathA), 'both nexuses still registered').to.deep.equal([KEY_A, KEY_A]);
    expect(readReservation(pathA).holder).to.deep.equal({ key: KEY_A, type: WE_RO });
  }

  it('self-PREEMPT keeps every path registered', () => selfPreemptKeepsEveryPath('preempt', 'self-PREEMPT'));

  if (topology.fabric === 'iscsi') {
    it('self-PREEMPT AND ABORT keeps every path registered (iSCSI only)', () => selfPreemptKeepsEveryPath('preempt-abort', 'self-PREEMPT AND ABORT'));
  }

  it('PREEMPT of host B takes its reservation and removes its key', async function () {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    run('sg_persist', ['--out', '--no-inquiry', '--register', `--param-sark=${hex(KEY_B)}`, hostB.device]);
    run('sg_persist', ['--out', '--no-inquiry', '--reserve', `--param-rk=${hex(KEY_B)}`, `--prout-type=${WE_RO}`, hostB.device]);
    expectGood(await prOut(ours!, { action: 'preempt', reservationKey: KEY_A, serviceActionKey: KEY_B, type: WE_RO }), 'PREEMPT');
    expect(keysOn(pathA)).to.deep.equal([KEY_A, KEY_A]);
    expect(readReservation(pathA).holder?.key).to.equal(KEY_A);
  });

  const FENCE_TITLE = 'fence_mpath flow: host B PREEMPT AND ABORT of our key (WE-RO held through the daemon) fences every path, and our next PR IN says so';
  if (topology.fabric === 'iscsi') {
    it(FENCE_TITLE, async function () {
      try {
        expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'A: REGISTER');
        run('sg_persist', ['--out', '--no-inquiry', '--register', `--param-sark=${hex(KEY_B)}`, hostB.device]);
        expectGood(await prOut(ours!, { action: 'reserve', reservationKey: KEY_A, type: WE_RO }), 'A: RESERVE WE-RO');
        expect(readReservation(hostB.device).holder, 'A holds the reservation').to.deep.equal({ key: KEY_A, type: WE_RO });
        expect([...keysOn(hostB.device)].sort()).to.deep.equal([KEY_A, KEY_A, KEY_B].sort());

        // What fence_mpath on the surviving node does to the fenced node's key.
        run('sg_persist', ['--out', '--no-inquiry', '--preempt-abort', `--param-rk=${hex(KEY_B)}`, `--param-sark=${hex(KEY_A)}`, `--prout-type=${WE_RO}`, hostB.device]);

        for (const device of topology.pathDevices) {
          expect(keysOn(device), `${device}: only host B registered`).to.deep.equal([KEY_B]);
          expect(readReservation(device).holder, `${device}: host B holds WE-RO`).to.deep.equal({ key: KEY_B, type: WE_RO });
        }

        // Host A (the guest's view through our daemon) sees that it was fenced.
        const keys = await timed('read-keys', ours!, buildPrIn(PrInAction.READ_KEYS));
        expectGood(keys, 'A: READ KEYS after being preempted');
        const decodedKeys = decodeReadKeys(keys.data);
        expect(decodedKeys.ok && decodedKeys.value.keys, 'A: READ KEYS').to.deep.equal([KEY_B]);
        const reservation = await timed('read-reservation', ours!, buildPrIn(PrInAction.READ_RESERVATION));
        expectGood(reservation, 'A: READ RESERVATION after being preempted');
        const decodedReservation = decodeReadReservation(reservation.data);
        expect(decodedReservation.ok && decodedReservation.value.reservation, 'A: READ RESERVATION').to.deep.equal({ key: KEY_B, scope: 0, type: WE_RO });
        expect(keysOn(pathA), 'A still fenced after its PR IN').to.deep.equal([KEY_B]);
      } finally {
        // The last of host B's state must not reach the next suite of this boot.
        await resetLu();
      }
    });
  } else {
    it(`${FENCE_TITLE} [skipped on ${topology.fabric}: PREEMPT AND ABORT deadlocks LIO over tcm_loop; runs on iSCSI]`, function () {
      this.skip();
    });
  }

  it('unregistering (SARK 0) removes the key from every path', async function () {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    expectGood(await prOut(ours!, { action: 'register', reservationKey: KEY_A, serviceActionKey: 0n }), 'unregister');
    for (const device of topology.pathDevices) expect(keysOn(device), device).to.deep.equal([]);
  });

  it('PR IN answers while every path is failed under queue_if_no_path (SG_IO on the map would hang)', async function () {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    try {
      for (const device of topology.pathDevices) multipathd(`fail path ${short(device)}`);
      await waitFor('every path failed in the map', () => mapPaths(topology.mpathName).every((p) => p.dmState === 'failed'), { timeoutMs: 10_000 });
      // After the failures: multipathd (no_path_retry fail) turns queueing off when the last path fails.
      run('dmsetup', ['message', topology.mpathName, '0', 'queue_if_no_path']);
      const table = run('dmsetup', ['table', topology.mpathName]).stdout;
      expect(table, 'the map queues I/O with no path').to.include('queue_if_no_path');
      // What SG_IO on the map does now: the kernel retries the dm ioctl until a path returns.
      const onMap = run('timeout', ['-s', 'KILL', '3', 'sg_persist', '--in', '--no-inquiry', '--read-keys', topology.mpathDevice], { allowFailure: true });
      // timeout(1) exits 137, or dies by the same SIGKILL it sends its process group (status null).
      expect([137, null], `sg_persist on the map still hanging after 3 s: exit ${onMap.status}; ${onMap.stdout}${onMap.stderr}`).to.include(onMap.status);
      const reply = await timed('read-keys', ours!, buildPrIn(PrInAction.READ_KEYS));
      expectGood(reply, 'READ KEYS with every path failed');
      const decoded = decodeReadKeys(reply.data);
      expect(decoded.ok && decoded.value.keys).to.deep.equal([KEY_A, KEY_A]);
      const status = await timed('read-reservation', ours!, buildPrIn(PrInAction.READ_RESERVATION));
      expectGood(status, 'READ RESERVATION with every path failed');
    } finally {
      run('dmsetup', ['message', topology.mpathName, '0', 'fail_if_no_path'], { allowFailure: true });
    }
  });

  it('refuses READ FULL STATUS? no: answers it by SG_IO with every registrant', async function () {
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    const reply = await timed('read-full-status', ours!, buildPrIn(PrInAction.READ_FULL_STATUS));
    expectGood(reply, 'READ FULL STATUS');
    const decoded = decodeReadFullStatus(reply.data);
    expect(decoded.ok, decoded.ok ? '' : decoded.reason).to.equal(true);
    if (!decoded.ok) return;
    expect(decoded.value.descriptors.map((d) => d.key)).to.deep.equal([KEY_A, KEY_A]);
    const protocols = decoded.value.descriptors.map((d) => d.transportId.protocol);
    expect(protocols).to.deep.equal(topology.fabric === 'iscsi' ? ['iscsi', 'iscsi'] : ['sas', 'sas']);
  });

  it('refuses REGISTER AND MOVE with INVALID FIELD IN CDB and PR OUT on a read-only fd with INVALID OPCODE', async function () {
    const move = await ours!.client.execute(mapFd, Buffer.from([0x5f, 0x07, 0, 0, 0, 0, 0, 0, 24 + 24, 0]), Buffer.alloc(48));
    expect(move.status).to.equal(Status.CHECK_CONDITION);
    expect(senseMatches(move.sense, Sense.INVALID_FIELD_IN_CDB), describeSense(move.sense)).to.equal(true);
    const ro = fs.openSync(topology.mpathDevice, fs.constants.O_RDONLY);
    try {
      const { cdb, dataOut } = buildPrOut({ action: 'register', serviceActionKey: KEY_A });
      const reply = await ours!.client.execute(ro, cdb, dataOut);
      expect(reply.status).to.equal(Status.CHECK_CONDITION);
      expect(senseMatches(reply.sense, Sense.INVALID_OPCODE), describeSense(reply.sense)).to.equal(true);
    } finally {
      fs.closeSync(ro);
    }
    expect(keysOn(pathA)).to.deep.equal([]);
  });

  it('a killed libmpathpersist worker is replaced for the next command', async function () {
    const workerPid = () =>
      run('pgrep', ['-P', String(ours!.child.pid), '-f', 'mpath-worker'], { allowFailure: true })
        .stdout.trim()
        .split('\n')
        .filter(Boolean)
        .map(Number);
    expectGood(await prOut(ours!, { action: 'register', serviceActionKey: KEY_A }), 'REGISTER');
    expectGood(await prOut(ours!, { action: 'reserve', reservationKey: KEY_A, type: WE_RO }), 'RESERVE (library)');
    const before = workerPid();
    expect(before, 'one worker').to.have.length(1);
    process.kill(before[0], 'SIGKILL');
    await waitFor('worker gone', () => !fs.existsSync(`/proc/${before[0]}`), { timeoutMs: 10_000 });
    expectGood(await prOut(ours!, { action: 'release', reservationKey: KEY_A, type: WE_RO }), 'RELEASE (library) after the kill');
    expect(readReservation(hostB.device).holder).to.equal(undefined);
    const after = workerPid();
    expect(after).to.have.length(1);
    expect(after[0]).to.not.equal(before[0]);
  });

  describe('regression against Debian qemu-pr-helper (libmpathpersist 0.9.4 on the same map)', function () {
    let qemu: Server | undefined;
    before(async function () {
      const socket = path.join(scratch, 'qemu-pr-helper.sock');
      qemu = await startServer('qemu-pr-helper', '/usr/bin/qemu-pr-helper', ['-k', socket], socket, path.join(scratch, 'qemu-pr-helper.log'));
    });
    after(async function () {
      await stopServer(qemu);
      if (qemu) writeArtifact(topology, 'mpath-lab/qemu-pr-helper.log', fs.readFileSync(qemu.log, 'utf8'));
    });

    it('REGISTER AND IGNORE with a failed path: qemu-pr-helper leaves that path unregistered, ours does not', async function () {
      multipathd(`fail path ${short(pathB)}`);
      await waitFor(`${pathB} failed`, () => mapPaths(topology.mpathName).find((p) => p.device === pathB)?.dmState === 'failed', { timeoutMs: 10_000 });
      expectGood(await prOut(qemu!, { action: 'register-ignore', serviceActionKey: KEY_Q }), 'qemu-pr-helper REGISTER AND IGNORE');
      expect(keysOn(pathA), 'qemu-pr-helper: one nexus only').to.deep.equal([KEY_Q]);

      await resetLu();
      multipathd(`fail path ${short(pathB)}`);
      await waitFor(`${pathB} failed`, () => mapPaths(topology.mpathName).find((p) => p.device === pathB)?.dmState === 'failed', { timeoutMs: 10_000 });
      expectGood(await prOut(ours!, { action: 'register-ignore', serviceActionKey: KEY_Q }), 'mpath-pr REGISTER AND IGNORE');
      expect(keysOn(pathA), 'mpath-pr: both nexuses').to.deep.equal([KEY_Q, KEY_Q]);
    });

    it('RELEASE by a non-holder: mpathpersist (the same 0.9.4 library) clears host B\'s reservation, ours leaves it', async function () {
      const setUp = async (via: 'mpathpersist' | 'qemu-pr-helper' | 'mpath-pr') => {
        await resetLu();
        if (via === 'mpathpersist') run('mpathpersist', ['--out', '--register', `--param-sark=${hex(KEY_A)}`, topology.mpathDevice]);
        else expectGood(await prOut(via === 'qemu-pr-helper' ? qemu! : ours!, { action: 'register', serviceActionKey: KEY_A }), `REGISTER via ${via}`);
        run('sg_persist', ['--out', '--no-inquiry', '--register', `--param-sark=${hex(KEY_B)}`, hostB.device]);
        run('sg_persist', ['--out', '--no-inquiry', '--reserve', `--param-rk=${hex(KEY_B)}`, `--prout-type=${WE_RO}`, hostB.device]);
      };
      const state = () => {
        const holder = readReservation(hostB.device).holder;
        return `holder ${holder ? `${hex(holder.key)} type ${holder.type}` : 'none'}; keys ${keysOn(hostB.device).map(hex).join(',')}`;
      };

      await setUp('qemu-pr-helper');
      const qemuReply = await prOut(qemu!, { action: 'release', reservationKey: KEY_A, type: WE_RO });
      const afterQemu = `qemu-pr-helper RELEASE: status 0x${qemuReply.status.toString(16)} ${qemuReply.status === Status.CHECK_CONDITION ? describeSense(qemuReply.sense) : ''}; ${state()}`;

      await setUp('mpathpersist');
      const cli = run('mpathpersist', ['--out', '--release', `--param-rk=${hex(KEY_A)}`, `--prout-type=${WE_RO}`, topology.mpathDevice], { allowFailure: true });
      const afterCli = `mpathpersist RELEASE: exit ${cli.status}; ${state()}`;
      writeArtifact(topology, 'mpath-lab/release-by-non-holder.txt', `${afterQemu}\n${afterCli}\n`);
      console.log(`      ${afterQemu}\n      ${afterCli}`);
      expect(readReservation(hostB.device).holder?.key, `the 0.9.4 bug: ${afterCli}`).to.not.equal(KEY_B);

      await setUp('mpath-pr');
      expectGood(await prOut(ours!, { action: 'release', reservationKey: KEY_A, type: WE_RO }), 'RELEASE via mpath-pr');
      expect(readReservation(hostB.device).holder).to.deep.equal({ key: KEY_B, type: WE_RO });
    });
  });
});
