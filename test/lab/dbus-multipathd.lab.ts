// @lab {"fabric": "tcm_loop", "paths": 2, "dbus": true}
//
// The D-Bus view of multipathd's health and the prkey resync after a real multipathd
// restart. Our daemon (`mpath-pr serve --backend auto`) publishes org.mpathpr.Manager1 on
// the lab's system bus; /dev/mapper/mpatha is served by the mpath backend; multipathd
// 0.9.4 is real and is really killed and started again.
//
// The guest has no systemd (stage 2's PID 1 is a shell), so multipathd.service is a
// FAKE org.freedesktop.systemd1 (test/integration/dbus-fake-systemd.ts) owned by this
// test on the system bus. The fake only reports the unit state we flip; the process it
// describes is the real multipathd, stopped and started around the flips the way
// `systemctl restart multipathd` would.
//
// The restarted multipathd is made to forget our key (it is removed from
// /etc/multipath/prkeys while multipathd is down), so the key it reports afterwards can
// only come from our daemon's resync of the keys it recorded at REGISTER.

import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Message, type MessageBus } from 'dbus-next';
import { buildPrOut, type PrOutRequest } from '../../src/backends/pr-commands';
import { BUS_NAME, formatKey, MANAGER_INTERFACE, MANAGER_PATH } from '../../src/dbus/names';
import { connectBus } from '../../src/dbus/bus';
import { PrHelperClient } from '../../src/protocol/client';
import type { PrHelperReply } from '../../src/protocol/messages';
import { Status } from '../../src/scsi/constants';
import { describeSense } from '../../src/scsi/sense';
import { call, getProperty, SignalRecorder } from '../integration/dbus-bus';
import { FakeSystemd } from '../integration/dbus-fake-systemd';
import { eventually } from '../support/wait';
import { labTopology, mapPaths, multipathd, readKeys, run, stopChild, waitFor, writeArtifact } from './harness/lab-guest';

const KEY = 0xdb05a1n;
const CLEANUP_KEY = 0xc1ea11n;
const hex = (key: bigint) => `0x${key.toString(16)}`;
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const PRKEYS_FILE = '/etc/multipath/prkeys';
const POLICY_DIR = '/etc/dbus-1/system.d';
// Lets root own org.freedesktop.systemd1 for the fake, whether or not the host's systemd
// package installed its own policy (which the guest reads through the host root).
const FAKE_SYSTEMD_POLICY = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- mpath-pr lab only: a FAKE org.freedesktop.systemd1 owned by the test (no systemd in the guest). -->
<busconfig>
  <policy user="root">
    <allow own="org.freedesktop.systemd1"/>
    <allow send_destination="org.freedesktop.systemd1"/>
    <allow receive_sender="org.freedesktop.systemd1"/>
  </policy>
</busconfig>
`;


/** multipathd's pid from `show daemon` ("pid 123 idle"), or undefined when it does not answer. */
function multipathdPid(): number | undefined {
  const match = /^pid (\d+) (\S+)/.exec(multipathd('show daemon', 5_000));
  return match ? Number(match[1]) : undefined;
}

/** Gone, or a zombie its parent has not reaped yet: either way it no longer serves. */
function processEnded(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

function isManagerChange(property: string, value: unknown) {
  return (m: Message) =>
    m.path === MANAGER_PATH &&
    m.interface === 'org.freedesktop.DBus.Properties' &&
    m.member === 'PropertiesChanged' &&
    m.body[0] === MANAGER_INTERFACE &&
    (m.body[1] as Record<string, { value: unknown }>)[property]?.value === value;
}

type BackendStatus = [string, boolean, string];

describe('D-Bus: multipathd restart, Degraded and the prkey resync (FAKE systemd1 unit, real multipathd)', function () {
  this.timeout(240_000);
  const topology = labTopology();
  const map = topology.mpathName;
  const scratch = fs.mkdtempSync('/tmp/dbus-mpathd-lab-');
  const socket = path.join(scratch, 'mpath-pr.sock');
  const daemonLog = path.join(scratch, 'mpath-pr.log');
  const restartedLog = path.join(topology.outputDir, 'dbus-multipathd/multipathd-restarted.log');
  const installedPolicies: string[] = [];
  let systemdBus: MessageBus | undefined;
  let clientBus: MessageBus | undefined;
  let systemd: FakeSystemd | undefined;
  let signals: SignalRecorder | undefined;
  let daemon: ChildProcess | undefined;
  let client: PrHelperClient | undefined;
  let mapFd = -1;
  let restarted: ChildProcess | undefined;

  const logText = () => (fs.existsSync(daemonLog) ? fs.readFileSync(daemonLog, 'utf8') : '');
  const manager = <T>(name: string) => getProperty(clientBus!, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, name) as Promise<T>;

  async function prOut(request: PrOutRequest): Promise<PrHelperReply> {
    const { cdb, dataOut } = buildPrOut(request);
    return client!.execute(mapFd, cdb, dataOut);
  }

  function expectGood(reply: PrHelperReply, what: string): void {
    expect(reply.status, `${what}: status 0x${reply.status.toString(16)} ${reply.status === Status.CHECK_CONDITION ? describeSense(reply.sense) : ''}`).to.equal(Status.GOOD);
  }

  /** Starts multipathd the way guest-setup.sh does; it outlives this suite (the guest powers off after the job). */
  function startMultipathd(): ChildProcess {
    fs.mkdirSync(path.dirname(restartedLog), { recursive: true });
    const out = fs.openSync(restartedLog, 'a');
    const child = spawn('/sbin/multipathd', ['-d', '-s'], { env: { ...process.env, PATH: SYSTEM_PATH }, stdio: ['ignore', out, out], detached: true });
    fs.closeSync(out);
    child.unref();
    return child;
  }

  async function waitForMultipathdServing(what: string, notPid?: number): Promise<number> {
    const pid = await waitFor(
      what,
      () => {
        const answering = multipathdPid();
        return answering !== undefined && answering !== notPid && answering;
      },
      { timeoutMs: 30_000, describe: () => `show daemon: ${JSON.stringify(multipathd('show daemon', 5_000))}` },
    );
    await waitFor(
      `${map} with ${topology.pathDevices.length} active ready paths under multipathd pid ${pid}`,
      () => {
        const paths = mapPaths(map);
        return paths.length === topology.pathDevices.length && paths.every((p) => p.dmState === 'active' && p.checkerState === 'ready');
      },
      { timeoutMs: 30_000, describe: () => JSON.stringify(mapPaths(map)) },
    );
    return pid;
  }

  before(async function () {
    // A cold node start over 9p under TCG, twice (the daemon re-executes after dropping privileges), took 22 s on a loaded host.
    this.timeout(240_000);
    const address = topology.dbusAddress;
    if (!address) throw new Error('LAB_DBUS_ADDRESS is not set: this suite needs the lab booted with "dbus": true');

    // The daemon may own org.mpathpr.Manager1 only with its bus policy installed, as on a real host.
    fs.mkdirSync(POLICY_DIR, { recursive: true });
    const managerPolicy = path.join(POLICY_DIR, 'org.mpathpr.Manager1.conf');
    fs.copyFileSync(path.join(topology.repo, 'dbus/org.mpathpr.Manager1.conf'), managerPolicy);
    const fakePolicy = path.join(POLICY_DIR, 'mpath-pr-lab-fake-systemd1.conf');
    fs.writeFileSync(fakePolicy, FAKE_SYSTEMD_POLICY);
    installedPolicies.push(managerPolicy, fakePolicy);

    clientBus = await connectBus(address, 10_000);
    await call(clientBus, 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'ReloadConfig');

    systemdBus = await connectBus(address, 10_000);
    systemd = await FakeSystemd.start(systemdBus, 'multipathd.service', { activeState: 'active', subState: 'running', statusText: 'up' });
    const owner = await call(clientBus, 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetNameOwner', 's', ['org.freedesktop.systemd1']);
    expect(owner.body[0], 'the fake owns org.freedesktop.systemd1').to.equal((systemdBus as unknown as { name: string }).name);

    fs.rmSync(socket, { force: true });
    const out = fs.openSync(daemonLog, 'w');
    daemon = spawn(
      process.execPath,
      [
        path.join(topology.repo, 'dist/src/cli/mpath-pr.js'),
        'serve',
        '--socket',
        socket,
        '--backend',
        'auto',
        '--state',
        path.join(scratch, 'state.db'),
        '--dbus-address',
        address,
        '--log-level',
        'debug',
      ],
      { stdio: ['ignore', out, out] },
    );
    fs.closeSync(out);
    await waitFor('mpath-pr serve ready', () => daemon!.exitCode === null && logText().includes('mpath-pr ready'), {
      timeoutMs: 150_000,
      describe: () => `exit ${daemon!.exitCode}; log: ${logText().slice(-2000)}`,
    });
    // Without a usable bus the daemon serves anyway and says so once: that would be a failure here.
    expect(logText(), 'daemon log').to.not.include('D-Bus unavailable');
    expect(logText(), 'daemon log').to.include(`D-Bus: ${BUS_NAME} on ${address}`);

    signals = await SignalRecorder.start(clientBus, BUS_NAME);
    client = new PrHelperClient();
    await client.connect(socket);
    mapFd = fs.openSync(topology.mpathDevice, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  });

  after(async function () {
    // Leave the LU, multipathd and the bus as the boot had them, whatever failed above.
    if (multipathdPid() === undefined) {
      restarted = startMultipathd();
      await waitForMultipathdServing('multipathd back for the clean-up').catch((error) => console.log(`      clean-up: ${String(error)}`));
    }
    if (client?.connected && mapFd >= 0) {
      const reply = await prOut({ action: 'register', reservationKey: KEY, serviceActionKey: 0n }).catch(() => undefined);
      if (reply?.status !== Status.GOOD) console.log(`      clean-up: unregister through the daemon answered ${reply ? `status 0x${reply.status.toString(16)}` : 'nothing'}`);
    }
    client?.close();
    if (mapFd >= 0) fs.closeSync(mapFd);
    if (daemon) await stopChild(daemon);
    const [pathA] = topology.pathDevices;
    if (readKeys(pathA).keys.length > 0) {
      run('sg_persist', ['--out', '--no-inquiry', '--register-ignore', `--param-sark=${hex(CLEANUP_KEY)}`, pathA], { allowFailure: true });
      run('sg_persist', ['--out', '--no-inquiry', '--clear', `--param-rk=${hex(CLEANUP_KEY)}`, pathA], { allowFailure: true });
    }
    multipathd(`unsetprkey map ${map}`);
    multipathd(`unsetprstatus map ${map}`);
    signals?.stop();
    systemdBus?.disconnect();
    clientBus?.disconnect();
    for (const file of installedPolicies) fs.rmSync(file, { force: true });
    writeArtifact(topology, 'dbus-multipathd/mpath-pr.log', logText());
  });

  it('starts healthy: multipathd.service active, Manager1 not Degraded, multipathd reachable', async function () {
    expect(systemd!.manager.subscribed, 'the daemon subscribed to the fake systemd').to.be.greaterThan(0);
    expect(await manager<boolean>('Degraded')).to.equal(false);
    const backends = await manager<BackendStatus[]>('Backends');
    const health = backends.find(([name]) => name === 'multipathd');
    expect(health?.[1], `multipathd health: ${JSON.stringify(health)}`).to.equal(true);
    expect(health?.[2]).to.include(`pid ${multipathdPid()}`);
  });

  it('REGISTER on mpatha through the daemon: every path carries the key and multipathd knows it', async function () {
    expectGood(await prOut({ action: 'register', serviceActionKey: KEY }), 'REGISTER');
    for (const device of topology.pathDevices) expect(readKeys(device).keys, device).to.deep.equal([KEY, KEY]);
    expect(multipathd(`getprkey map ${map}`)).to.equal(`${hex(KEY)}\n`);
    expect(logText(), 'resolver picked mpath').to.match(/"backend":"mpath".*device resolved/);
    // The D-Bus view saw the command (the same observer records the map's key for the resync).
    const devices = await eventually(
      async () => {
        const reply = await call(clientBus!, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'ListDevices');
        const paths = reply.body[0] as string[];
        return paths.length > 0 && paths;
      },
      'the map to appear in ListDevices',
      { timeoutMs: 10_000, intervalMs: 200, describe: () => 'no devices' },
    );
    expect(devices).to.have.length(1);
  });

  it('multipathd.service inactive makes Manager1 Degraded (PropertiesChanged)', async function () {
    const from = signals!.count;
    systemd!.set({ activeState: 'inactive', subState: 'dead', statusText: 'shutdown' });
    await signals!.next(isManagerChange('Degraded', true), 'Manager1 Degraded=true', 20_000, from);
    expect(await manager<boolean>('Degraded')).to.equal(true);
    await waitFor('the Degraded warning in the daemon log', () => logText().includes('multipathd.service is inactive (dead): Degraded'), {
      timeoutMs: 10_000,
      describe: () => logText().slice(-1500),
    });
  });

  it('a restarted multipathd that forgot the key gets it back from the resync when the unit is active again', async function () {
    const oldPid = multipathdPid();
    expect(oldPid, 'multipathd answers before the restart').to.be.a('number');
    process.kill(oldPid!, 'SIGTERM');
    await waitFor(`multipathd pid ${oldPid} to exit`, () => processEnded(oldPid!), { timeoutMs: 30_000 });

    // Forget the key, so the restarted multipathd cannot read it back from its own file.
    const before = fs.readFileSync(PRKEYS_FILE, 'utf8');
    expect(before, 'prkeys file before').to.match(new RegExp(`^0x0*${KEY.toString(16)} ${topology.wwid}$`, 'm'));
    fs.writeFileSync(
      PRKEYS_FILE,
      before
        .split('\n')
        .filter((line) => !line.includes(topology.wwid))
        .join('\n'),
    );

    restarted = startMultipathd();
    const newPid = await waitForMultipathdServing('the restarted multipathd to answer', oldPid);
    expect(newPid).to.not.equal(oldPid);
    expect(multipathd(`getprkey map ${map}`), 'the restarted multipathd does not know the key').to.equal('none\n');
    // The LU kept its registrations; only multipathd forgot.
    for (const device of topology.pathDevices) expect(readKeys(device).keys, device).to.deep.equal([KEY, KEY]);
    expect(await manager<boolean>('Degraded'), 'still Degraded until systemd says active').to.equal(true);

    const from = signals!.count;
    systemd!.set({ activeState: 'active', subState: 'running', statusText: 'up' });
    await signals!.next(isManagerChange('Degraded', false), 'Manager1 Degraded=false', 20_000, from);
    expect(await manager<boolean>('Degraded')).to.equal(false);

    await waitFor(`multipathd getprkey map ${map} = ${hex(KEY)}`, () => multipathd(`getprkey map ${map}`) === `${hex(KEY)}\n`, {
      timeoutMs: 20_000,
      describe: () => `getprkey: ${JSON.stringify(multipathd(`getprkey map ${map}`))}; daemon log: ${logText().slice(-1500)}`,
    });
    expect(multipathd(`getprstatus map ${map}`), 'prstatus set again').to.match(/^(1|set\n)$/);
    expect(fs.readFileSync(PRKEYS_FILE, 'utf8'), 'prkeys file after the resync').to.match(new RegExp(`^0x0*${KEY.toString(16)} ${topology.wwid}$`, 'm'));
    await waitFor('the resync line in the daemon log', () => logText().includes(`multipathd resync: ${map} has key ${formatKey(KEY)} again`), {
      timeoutMs: 10_000,
      describe: () => logText().slice(-1500),
    });

    // The health probe after the resync reports the new multipathd.
    await eventually(
      async () => {
        const health = (await manager<BackendStatus[]>('Backends')).find(([name]) => name === 'multipathd');
        return health?.[1] === true && health[2].includes(`pid ${newPid}`);
      },
      `Manager1.Backends to show multipathd pid ${newPid}`,
      { timeoutMs: 10_000, intervalMs: 200, describe: () => 'see Backends' },
    );
  });
});
