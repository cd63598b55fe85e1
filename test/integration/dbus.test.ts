// The D-Bus management service against a private dbus-daemon started by the test:
// a real `mpath-pr serve --dbus-address` process driven over its socket like QEMU does,
// admin calls from root and from uid 65534, the shipped bus policy file on a bus with
// the system bus's defaults, the multipathd watcher through a FAKE org.freedesktop.systemd1
// (real systemd cannot run here) with a multipathd TEST DOUBLE (no multipathd on this
// host), and a daemon whose bus is unreachable.

import { decoded } from '../support/pr-bytes';
import { encodePrOutCdb } from '../../src/scsi/cdb';
import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import pino from 'pino';
import type { Message, MessageBus } from 'dbus-next';
import * as pr from '../../src/backends/pr-commands';
import { createBackends } from '../../src/daemon/daemon';
import { CommandObservers, decodePrOut, observeExecute } from '../../src/dbus/command-observer';
import { EmulatedBackend } from '../../src/backends/emulated/emulated-backend';
import { BackendResolver } from '../../src/backends/resolve';
import type { PrHelperExecute } from '../../src/protocol/server';
import { describeDeviceFd } from '../../src/device';
import { changedProperties, emulatedSnapshot, prInSnapshot, type DeviceSnapshot } from '../../src/dbus/device-state';
import type { MultipathdPrApi } from '../../src/dbus/managed-maps';
import {
  BUS_NAME,
  DEVICE_INTERFACE,
  deviceObjectPath,
  devicePathFromObjectPath,
  escapePathElement,
  MANAGER_INTERFACE,
  MANAGER_PATH,
  unescapePathElement,
} from '../../src/dbus/names';
import { resolveBusAddress } from '../../src/dbus/bus';
import type { DbusService } from '../../src/dbus/service';
import { unitObjectPath } from '../../src/dbus/systemd-unit-watcher';
import { Commands } from '../../src/multipathd/commands';
import { MultipathdError } from '../../src/multipathd/replies';
import { initialState } from '../../src/engine/state';
import { PrType } from '../../src/scsi/constants';
import { VERSION } from '../../src/daemon/daemon';
import { connectClient, executorFor } from '../support/client';
import { MPATH_PR as CLI, tempDir } from '../support/daemon';
import { eventually } from '../support/wait';
import {
  call,
  connectClientBus,
  getProperty,
  leaveObservedBus,
  SignalRecorder,
  startObservedBus,
  startPrivateBus,
  startServeWith,
  startServiceInProcess,
  type DbusServeProcess,
  type ObservedBus,
  type PrivateBus,
} from './dbus-bus';
import { FakeSystemd } from './dbus-fake-systemd';

const run = promisify(execFile);
const CHILD = path.resolve(__dirname, 'dbus-admin-child.js');
const NOBODY = 65534;

interface ChildOutcome {
  ok: boolean;
  uid?: number;
  name?: string;
  message?: string;
  value?: unknown[];
}

/** One D-Bus call made by a child process running as uid 65534. */
async function callAsNobody(address: string, objectPath: string, iface: string, member: string, signature: string, body: unknown[]): Promise<ChildOutcome> {
  if (process.getuid?.() !== 0) throw new Error('these tests call the service from uid 65534: run them as root');
  const json = JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? `bigint:${v}` : v));
  const child = spawn(process.execPath, [CHILD, address, BUS_NAME, objectPath, iface, member, signature, json], {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH, HOME: '/nonexistent' },
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (err += c));
  await new Promise((resolve) => child.on('exit', resolve));
  const line = out.trim().split('\n')[0];
  if (!line) throw new Error(`child printed nothing; stderr: ${err}`);
  return JSON.parse(line) as ChildOutcome;
}

function isPropertiesChanged(objectPath: string, iface: string, property?: string) {
  return (m: Message) =>
    m.path === objectPath &&
    m.interface === 'org.freedesktop.DBus.Properties' &&
    m.member === 'PropertiesChanged' &&
    m.body[0] === iface &&
    (property === undefined || property in (m.body[1] as Record<string, unknown>));
}

function changedValue(m: Message, property: string): unknown {
  return (m.body[1] as Record<string, { value: unknown }>)[property].value;
}

function snapshot(partial: Partial<DeviceSnapshot>): DeviceSnapshot {
  return { path: '/x', wwid: '', backend: 'emulated', generation: 0, keys: [], reservationKey: 0n, reservationType: 0, paths: [], ...partial };
}

describe('D-Bus: object paths and change detection', () => {
  it('encodes any device path as one object-path element and back', () => {
    for (const text of ['/dev/mapper/mpath-a', '/tmp/lu 0.img', '', '_', 'Ω/ü', 'abcXYZ019']) {
      const element = escapePathElement(text);
      expect(element).to.match(/^[A-Za-z0-9_]+$/);
      expect(unescapePathElement(element)).to.equal(text);
      expect(devicePathFromObjectPath(deviceObjectPath(text))).to.equal(text);
    }
    expect(escapePathElement('multipathd.service')).to.equal('multipathd_2eservice');
    expect(unitObjectPath('multipathd.service')).to.equal('/org/freedesktop/systemd1/unit/multipathd_2eservice');
  });

  it('refuses object paths it did not produce', () => {
    expect(unescapePathElement('a_zz')).to.equal(undefined);
    expect(unescapePathElement('a_41')).to.equal(undefined); // 'A' would have stayed a letter
    expect(devicePathFromObjectPath('/org/mpathpr/Manager1/Device/a/b')).to.equal(undefined);
    expect(devicePathFromObjectPath('/org/other/Device/abc')).to.equal(undefined);
  });

  it('reports exactly the properties that differ', () => {
    const before = snapshot({ generation: 1, keys: [0xa1n], paths: [{ name: 'path0', state: 'active', key: '0x00000000000000a1' }] });
    expect(changedProperties(before, before)).to.deep.equal({});
    const after = snapshot({ generation: 1, keys: [0xa1n], reservationKey: 0xa1n, reservationType: 1, paths: before.paths });
    expect(changedProperties(before, after)).to.deep.equal({ ReservationKey: 0xa1n, ReservationType: 1 });
    const failed = snapshot({ generation: 1, keys: [0xa1n], paths: [{ name: 'path0', state: 'failed', key: '0x00000000000000a1' }] });
    expect(changedProperties(before, failed)).to.deep.equal({ Paths: [['path0', 'failed', '0x00000000000000a1']] });
  });

  it('decodes PR OUT keys and type, and ignores PR IN and malformed lists', () => {
    const { cdb, dataOut } = pr.buildPrOut({ action: 'preempt-abort', reservationKey: 0xb1n, serviceActionKey: 0xa1n, type: PrType.EXCLUSIVE_ACCESS });
    expect(decodePrOut(decoded(cdb, dataOut))).to.deep.include({ action: 0x05, type: PrType.EXCLUSIVE_ACCESS, reservationKey: 0xb1n, serviceActionKey: 0xa1n });
    expect(decodePrOut(decoded(pr.buildPrIn(0)))).to.equal(undefined);
    const shortList = encodePrOutCdb({ action: 0x05, type: PrType.EXCLUSIVE_ACCESS, parameterListLength: 5 });
    expect(decodePrOut(decoded(shortList, Buffer.alloc(5)))).to.equal(undefined);
  });

  it('an empty emulated LU has generation 0, no keys, no reservation', () => {
    const s = emulatedSnapshot('/lu', initialState(), { initiatorKey: 'x', paths: [{ initiator: 'x', index: 0, state: 'active' }] });
    expect(s).to.deep.include({ generation: 0, keys: [], reservationKey: 0n, reservationType: 0 });
    expect(s.paths).to.deep.equal([{ name: 'path0', state: 'active', key: '' }]);
  });

  it('builds the PR IN view of a device from READ KEYS and READ RESERVATION', async () => {
    const dir = tempDir('mpath-pr-dbus-prin-');
    const backends = createBackends({ backend: 'auto', statePath: path.join(dir, 'san.db'), initiator: 'prin-host', paths: 2 });
    try {
      const lu = path.join(dir, 'lu.img');
      fs.writeFileSync(lu, Buffer.alloc(512));
      const runIt = pr.bindBackend(backends.resolver, { fd: -1, path: lu, writable: true });
      await pr.register(runIt, 0x42n);
      await pr.reserve(runIt, 0x42n, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY);
      const view = await prInSnapshot(runIt, { path: lu, wwid: 'naa.test', backend: 'sg', paths: [] });
      expect(view).to.deep.equal({
        path: lu,
        wwid: 'naa.test',
        backend: 'sg',
        paths: [],
        generation: 2,
        keys: [0x42n, 0x42n],
        reservationKey: 0x42n,
        reservationType: PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
      });
    } finally {
      await backends.resolver.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes the bus address from the flag, then DBUS_SYSTEM_BUS_ADDRESS, then the system socket', () => {
    expect(resolveBusAddress('unix:path=/a', { DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/b' })).to.equal('unix:path=/a');
    expect(resolveBusAddress(undefined, { DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/b' })).to.equal('unix:path=/b');
    expect(resolveBusAddress(undefined, {})).to.equal('unix:path=/var/run/dbus/system_bus_socket');
  });
});

describe('D-Bus service of a serve process (private dbus-daemon, real sockets)', function () {
  this.timeout(60_000);
  let bus: PrivateBus;
  let client: MessageBus;
  let signals: SignalRecorder;
  let dir: string;
  let state: string;
  let lu: string;
  let luObject: string;
  let hostA: DbusServeProcess;
  const others: DbusServeProcess[] = [];

  before(async () => {
    bus = await startPrivateBus();
    dir = tempDir('mpath-pr-dbus-e2e-');
    state = path.join(dir, 'san.db');
    lu = path.join(fs.realpathSync(dir), 'lu0.img');
    fs.writeFileSync(lu, Buffer.alloc(4096));
    luObject = deviceObjectPath(lu);
    hostA = await startServeWith({ dir, state, initiator: 'node-a', args: ['--dbus-address', bus.address] });
    client = await connectClientBus(bus.address);
    signals = await SignalRecorder.start(client, BUS_NAME);
  });

  after(async () => {
    signals?.stop();
    client?.disconnect();
    for (const d of [hostA, ...others]) await d?.stop();
    await bus?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const managerProperty = (name: string) => getProperty(client, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, name);
  const deviceProperty = (name: string) => getProperty(client, BUS_NAME, luObject, DEVICE_INTERFACE, name);

  it('owns org.mpathpr.Manager1 and introspects through a stock D-Bus tool', async () => {
    // busctl comes with systemd; dbus-send (dbus-bin) comes with dbus-daemon, which these tests need anyway.
    const haveBusctl = await run('busctl', ['--version']).then(
      () => true,
      () => false,
    );
    if (haveBusctl) {
      const { stdout } = await run('busctl', [`--address=${bus.address}`, 'introspect', BUS_NAME, MANAGER_PATH]);
      for (const member of ['org.mpathpr.Manager1', '.Version', '.Backends', '.Degraded', '.Connections', '.ListDevices', '.Doctor', '.ReservationChanged', '.Fenced']) {
        expect(stdout).to.include(member);
      }
      expect(stdout).to.match(/\.Backends\s+property\s+a\(sbs\)/);
      expect(stdout).to.match(/\.Fenced\s+signal\s+ott/);
    } else {
      const { stdout } = await run('dbus-send', [`--bus=${bus.address}`, '--print-reply', `--dest=${BUS_NAME}`, MANAGER_PATH, 'org.freedesktop.DBus.Introspectable.Introspect']);
      expect(stdout).to.include('<interface name="org.mpathpr.Manager1">');
      expect(stdout).to.match(/<property name="Backends" type="a\(sbs\)" access="read"/);
      expect(stdout).to.match(/<signal name="Fenced">/);
    }
    // The same through dbus-send's XML either way: every member is declared with its signature.
    const { stdout: xml } = await run('dbus-send', [`--bus=${bus.address}`, '--print-reply', `--dest=${BUS_NAME}`, MANAGER_PATH, 'org.freedesktop.DBus.Introspectable.Introspect']);
    expect(xml).to.match(/<method name="Doctor">\s*<arg name="device" direction="in" type="s"\/>\s*<arg name="repair" direction="in" type="b"\/>\s*<arg name="report" direction="out" type="s"\/>/);
    expect(xml).to.match(/<signal name="Fenced">\s*<arg name="device" type="o"\/>\s*<arg name="preemptedKey" type="t"\/>\s*<arg name="byKey" type="t"\/>/);
    expect(xml).to.match(/<property name="Commands" type="t" access="read">\s*<annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"\/>/);
  });

  it('serves the Manager1 properties', async () => {
    expect(await managerProperty('Version')).to.equal(VERSION);
    expect(await managerProperty('Degraded')).to.equal(false);
    const backends = (await managerProperty('Backends')) as [string, boolean, string][];
    const byName = Object.fromEntries(backends.map(([name, healthy, detail]) => [name, { healthy, detail }]));
    expect(byName.emulated.healthy).to.equal(true);
    expect(byName.emulated.detail).to.include(state);
    expect(byName).to.have.keys('emulated', 'sg', 'blkpr', 'mpath', 'multipathd');
    // No multipathd runs on this host: unhealthy, with the reason.
    expect(byName.multipathd.healthy).to.equal(false);
    expect(byName.multipathd.detail).to.match(/unreachable/);
    expect(typeof (await managerProperty('Commands'))).to.equal('bigint');
  });

  it('PropertiesChanged and ReservationChanged follow PR OUTs sent over the helper socket', async () => {
    const fd = fs.openSync(lu, 'r+');
    const qemu = await connectClient(hostA.socket);
    try {
      const runA = executorFor(qemu, fd);
      const from = signals.count;
      await pr.register(runA, 0xa1n);
      const keysChanged = await signals.next(isPropertiesChanged(luObject, DEVICE_INTERFACE, 'Keys'), 'Keys PropertiesChanged', 10_000, from);
      expect(changedValue(keysChanged, 'Keys')).to.deep.equal([0xa1n, 0xa1n]);
      // One REGISTER per path: the generation counts both.
      expect(changedValue(keysChanged, 'Generation')).to.equal(2);

      const beforeReserve = signals.count;
      await pr.reserve(runA, 0xa1n, PrType.WRITE_EXCLUSIVE);
      const reservation = await signals.next((m) => m.path === MANAGER_PATH && m.member === 'ReservationChanged', 'ReservationChanged', 10_000, beforeReserve);
      expect(reservation.body).to.deep.equal([luObject, '0x00000000000000a1', PrType.WRITE_EXCLUSIVE]);
      const typeChanged = await signals.next(isPropertiesChanged(luObject, DEVICE_INTERFACE, 'ReservationType'), 'ReservationType PropertiesChanged', 10_000, beforeReserve);
      expect(changedValue(typeChanged, 'ReservationKey')).to.equal(0xa1n);

      expect(await deviceProperty('Path')).to.equal(lu);
      expect(await deviceProperty('Backend')).to.equal('emulated');
      expect(await deviceProperty('Paths')).to.deep.equal([
        ['path0', 'active', '0x00000000000000a1'],
        ['path1', 'active', '0x00000000000000a1'],
      ]);
      const listed = await call(client, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'ListDevices');
      expect(listed.body[0]).to.include(luObject);
      const tree = await call(client, BUS_NAME, `${MANAGER_PATH}/Device`, 'org.freedesktop.DBus.Introspectable', 'Introspect');
      expect(tree.body[0]).to.include(`<node name="${escapePathElement(lu)}"/>`);
      expect(Number(await managerProperty('PrOut'))).to.be.at.least(2);

      const beforeRelease = signals.count;
      await pr.release(runA, 0xa1n, PrType.WRITE_EXCLUSIVE);
      const released = await signals.next((m) => m.path === MANAGER_PATH && m.member === 'ReservationChanged', 'ReservationChanged (released)', 10_000, beforeRelease);
      expect(released.body).to.deep.equal([luObject, '', 0]);
    } finally {
      qemu.close();
      fs.closeSync(fd);
    }
  });

  it('signals Fenced when this host preempts and aborts another host', async () => {
    // Host B shares the SAN file but has no D-Bus; it holds the reservation.
    const hostB = await startServeWith({ dir, state, initiator: 'node-b', args: ['--no-dbus'] });
    others.push(hostB);
    const fd = fs.openSync(lu, 'r+');
    const qemuA = await connectClient(hostA.socket);
    const qemuB = await connectClient(hostB.socket);
    try {
      const runA = executorFor(qemuA, fd);
      const runB = executorFor(qemuB, fd);
      await pr.register(runB, 0xb1n);
      await pr.reserve(runB, 0xb1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
      const from = signals.count;
      await pr.preempt(runA, 0xa1n, 0xb1n, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, true);
      const fenced = await signals.next((m) => m.path === MANAGER_PATH && m.member === 'Fenced', 'Fenced', 10_000, from);
      expect(fenced.body).to.deep.equal([luObject, 0xb1n, 0xa1n]);
      const holder = await signals.next((m) => m.path === MANAGER_PATH && m.member === 'ReservationChanged', 'ReservationChanged (preempt)', 10_000, from);
      expect(holder.body).to.deep.equal([luObject, '0x00000000000000a1', PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY]);
      expect(await deviceProperty('Keys')).to.deep.equal([0xa1n, 0xa1n]);
      // The log line is written after the signal is sent; wait for the daemon's output.
      await eventually(() => /fenced 0x00000000000000b1/.test(hostA.logs()), 'the fenced log line');
    } finally {
      qemuA.close();
      qemuB.close();
      fs.closeSync(fd);
    }
  });

  it('runs admin methods for root and refuses uid 65534 with org.mpathpr.Error.AccessDenied', async () => {
    const refused = await callAsNobody(bus.address, luObject, DEVICE_INTERFACE, 'Register', 't', [0x99n]);
    expect(refused).to.deep.include({ ok: false, uid: NOBODY, name: 'org.mpathpr.Error.AccessDenied' });
    const refusedPath = await callAsNobody(bus.address, luObject, DEVICE_INTERFACE, 'FailPath', 'u', [0]);
    expect(refusedPath).to.deep.include({ ok: false, name: 'org.mpathpr.Error.AccessDenied' });
    // Reading stays open to everyone the bus lets in.
    const read = await callAsNobody(bus.address, MANAGER_PATH, 'org.freedesktop.DBus.Properties', 'Get', 'ss', [MANAGER_INTERFACE, 'Version']);
    expect(read).to.deep.include({ ok: true, value: [VERSION] });
    expect(await deviceProperty('Keys')).to.not.include(0x99n);
    await eventually(() => /D-Bus admin call refused for uid 65534/.test(hostA.logs()), 'the refusal log line');

    // Root (this test) changes the key on every path of the host.
    await call(client, BUS_NAME, luObject, DEVICE_INTERFACE, 'Register', 't', [0xa2n]);
    expect(await deviceProperty('Keys')).to.deep.equal([0xa2n, 0xa2n]);
    expect(await deviceProperty('ReservationKey')).to.equal(0xa2n);

    // A conflict comes back as CommandFailed with the SCSI outcome.
    const conflict = await call(client, BUS_NAME, luObject, DEVICE_INTERFACE, 'Reserve', 'tu', [0x77n, PrType.EXCLUSIVE_ACCESS]).then(
      () => undefined,
      (e: { type: string; text: string }) => e,
    );
    expect(conflict?.type).to.equal('org.mpathpr.Error.CommandFailed');
    expect(conflict?.text).to.match(/RESERVE: reservation conflict/);
    const badType = await call(client, BUS_NAME, luObject, DEVICE_INTERFACE, 'Reserve', 'tu', [0xa2n, 2]).then(
      () => undefined,
      (e: { type: string }) => e.type,
    );
    expect(badType).to.equal('org.mpathpr.Error.InvalidArgs');
  });

  it('FailPath and ReinstatePath change Paths with PropertiesChanged; a bad index is InvalidArgs', async () => {
    const from = signals.count;
    await call(client, BUS_NAME, luObject, DEVICE_INTERFACE, 'FailPath', 'u', [1]);
    const failed = await signals.next(isPropertiesChanged(luObject, DEVICE_INTERFACE, 'Paths'), 'Paths PropertiesChanged (fail)', 10_000, from);
    expect(changedValue(failed, 'Paths')).to.deep.equal([
      ['path0', 'active', '0x00000000000000a2'],
      ['path1', 'failed', '0x00000000000000a2'],
    ]);
    const mid = signals.count;
    await call(client, BUS_NAME, luObject, DEVICE_INTERFACE, 'ReinstatePath', 'u', [1]);
    const back = await signals.next(isPropertiesChanged(luObject, DEVICE_INTERFACE, 'Paths'), 'Paths PropertiesChanged (reinstate)', 10_000, mid);
    expect((changedValue(back, 'Paths') as string[][])[1]).to.deep.equal(['path1', 'active', '0x00000000000000a2']);
    const bad = await call(client, BUS_NAME, luObject, DEVICE_INTERFACE, 'FailPath', 'u', [7]).then(
      () => undefined,
      (e: { type: string }) => e.type,
    );
    expect(bad).to.equal('org.mpathpr.Error.InvalidArgs');
  });

  it('Doctor reports an unregistered active path, and repair re-registers it', async () => {
    const lu2 = path.join(fs.realpathSync(dir), 'lu-doctor.img');
    fs.writeFileSync(lu2, Buffer.alloc(4096));
    const fd = fs.openSync(lu2, 'r+');
    const qemu = await connectClient(hostA.socket);
    try {
      // Path 1 is down while the key is registered: only path 0 gets it.
      await call(client, BUS_NAME, luObject, DEVICE_INTERFACE, 'FailPath', 'u', [1]);
      await pr.register(executorFor(qemu, fd), 0xd1n);
    } finally {
      qemu.close();
      fs.closeSync(fd);
    }
    // Bring path 1 back behind the daemon's back (no multipathd-style re-registration),
    // the way a path can return while nobody re-registers it.
    const { EmulatedStore } = await import('../../src/backends/emulated/store');
    const store = new EmulatedStore(state);
    const hostKey = store.hosts().find((h) => h.includes('node-a'))!;
    store.immediate(() => store.setPathState(hostKey, 1, 'active'));
    store.close();

    const report = JSON.parse((await call(client, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'Doctor', 'sb', [lu2, false])).body[0] as string);
    expect(report.backend).to.equal('emulated');
    expect(report.paths).to.deep.equal([
      { name: 'path0', state: 'active', registered: '0x00000000000000d1', holdsReservation: false },
      { name: 'path1', state: 'active', registered: null, holdsReservation: false },
    ]);
    expect(report.findings.join('\n')).to.match(/path1 is active but not registered/);
    expect(report.repaired).to.deep.equal([]);

    const refused = await callAsNobody(bus.address, MANAGER_PATH, MANAGER_INTERFACE, 'Doctor', 'sb', [lu2, true]);
    expect(refused).to.deep.include({ ok: false, name: 'org.mpathpr.Error.AccessDenied' });
    // Reading the report of a known device is open; probing a device nobody used is not.
    const readOnly = await callAsNobody(bus.address, MANAGER_PATH, MANAGER_INTERFACE, 'Doctor', 'sb', [lu2, false]);
    expect(readOnly.ok).to.equal(true);
    expect(JSON.parse((readOnly.value as string[])[0]).device).to.equal(lu2);
    const probe = await callAsNobody(bus.address, MANAGER_PATH, MANAGER_INTERFACE, 'Doctor', 'sb', ['/dev/null', false]);
    expect(probe).to.deep.include({ ok: false, name: 'org.mpathpr.Error.AccessDenied' });

    const repaired = JSON.parse((await call(client, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'Doctor', 'sb', [deviceObjectPath(lu2), true])).body[0] as string);
    expect(repaired.repaired).to.deep.equal(['path1']);
    expect(repaired.findings).to.deep.equal([]);
    expect(await getProperty(client, BUS_NAME, deviceObjectPath(lu2), DEVICE_INTERFACE, 'Keys')).to.deep.equal([0xd1n, 0xd1n]);

    const unknown = await call(client, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'Doctor', 'sb', ['/nonexistent/device', false]).then(
      () => undefined,
      (e: { type: string }) => e.type,
    );
    expect(unknown).to.equal('org.mpathpr.Error.NoSuchDevice');
  });

  it('never lists a device the resolver refused', async () => {
    const fd = fs.openSync('/dev/null', 'r+');
    const qemu = await connectClient(hostA.socket);
    try {
      const result = await pr.prOut(executorFor(qemu, fd), { action: 'register', serviceActionKey: 0x5n });
      expect(result.status).to.not.equal(0);
    } finally {
      qemu.close();
      fs.closeSync(fd);
    }
    const listed = (await call(client, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'ListDevices')).body[0] as string[];
    expect(listed).to.include(luObject);
    expect(listed).to.not.include(deviceObjectPath('/dev/null'));
  });

  it('shows a path failed by `mpath-pr emu path` in another process', async () => {
    const env = { ...process.env, MPATH_PR_STATE: state, MPATH_PR_INITIATOR: 'node-a' };
    const from = signals.count;
    await run(process.execPath, [CLI, 'emu', 'path', 'fail', '--path', '0'], { env });
    const failed = await signals.next(
      (m) => isPropertiesChanged(luObject, DEVICE_INTERFACE, 'Paths')(m) && (changedValue(m, 'Paths') as string[][])[0][1] === 'failed',
      'Paths PropertiesChanged (emu path fail)',
      10_000,
      from,
    );
    expect((changedValue(failed, 'Paths') as string[][])[0]).to.deep.equal(['path0', 'failed', '0x00000000000000a2']);
    await run(process.execPath, [CLI, 'emu', 'path', 'reinstate', '--path', '0'], { env });
    await signals.next(
      (m) => isPropertiesChanged(luObject, DEVICE_INTERFACE, 'Paths')(m) && (changedValue(m, 'Paths') as string[][])[0][1] === 'active',
      'Paths PropertiesChanged (emu path reinstate)',
      10_000,
      from,
    );
  });
});

describe('D-Bus: --dbus-admin-uid', function () {
  this.timeout(60_000);
  let bus: PrivateBus;
  let dir: string;
  let serve: DbusServeProcess;
  after(async () => {
    await serve?.stop();
    await bus?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lets an allow-listed uid call the admin methods', async () => {
    bus = await startPrivateBus();
    dir = tempDir('mpath-pr-dbus-allow-');
    const lu = path.join(fs.realpathSync(dir), 'lu0.img');
    fs.writeFileSync(lu, Buffer.alloc(4096));
    serve = await startServeWith({ dir, state: path.join(dir, 'san.db'), initiator: 'allow', args: ['--dbus-address', bus.address, '--dbus-admin-uid', 'nobody'] });
    const fd = fs.openSync(lu, 'r+');
    const qemu = await connectClient(serve.socket);
    try {
      await pr.register(executorFor(qemu, fd), 0x10n);
    } finally {
      qemu.close();
      fs.closeSync(fd);
    }
    const allowed = await callAsNobody(bus.address, deviceObjectPath(lu), DEVICE_INTERFACE, 'Register', 't', [0x20n]);
    expect(allowed).to.deep.include({ ok: true, uid: NOBODY });
    const client = await connectClientBus(bus.address);
    try {
      expect(await getProperty(client, BUS_NAME, deviceObjectPath(lu), DEVICE_INTERFACE, 'Keys')).to.deep.equal([0x20n, 0x20n]);
    } finally {
      client.disconnect();
    }
    await eventually(() => /D-Bus admin call by uid 65534/.test(serve.logs()), 'the admin-call log line');
  });
});

describe('D-Bus: a serve process that loses its bus', function () {
  this.timeout(60_000);
  let bus: PrivateBus;
  let dir: string;
  let serve: DbusServeProcess;
  after(async () => {
    await serve?.stop();
    await bus?.stop().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps answering commands and logs one warning', async () => {
    bus = await startPrivateBus();
    dir = tempDir('mpath-pr-dbus-lost-');
    const lu = path.join(dir, 'lu0.img');
    fs.writeFileSync(lu, Buffer.alloc(4096));
    serve = await startServeWith({ dir, state: path.join(dir, 'san.db'), initiator: 'orphan', args: ['--dbus-address', bus.address] });
    expect(serve.logs()).to.include(`D-Bus: ${BUS_NAME}`);
    await bus.stop();
    const fd = fs.openSync(lu, 'r+');
    const qemu = await connectClient(serve.socket);
    try {
      const runIt = executorFor(qemu, fd);
      for (let i = 1n; i <= 5n; i++) await pr.register(runIt, i, { currentKey: i - 1n });
      await pr.reserve(runIt, 5n, PrType.EXCLUSIVE_ACCESS);
      expect((await pr.readReservation(runIt)).reservation).to.deep.include({ key: 5n, type: PrType.EXCLUSIVE_ACCESS });
    } finally {
      qemu.close();
      fs.closeSync(fd);
    }
    await eventually(() => /D-Bus connection lost/.test(serve.logs()), 'the connection-lost warning');
    const warnings = serve
      .logs()
      .split('\n')
      .filter((line) => /D-Bus/.test(line) && /"level":40/.test(line));
    expect(warnings).to.have.length(1);
    expect(serve.child.exitCode).to.equal(null);
  });
});

describe('D-Bus: the shipped bus policy on a bus with the system bus defaults', function () {
  this.timeout(60_000);
  let bus: PrivateBus;
  let dir: string;
  let serve: DbusServeProcess;
  let lu: string;

  before(async () => {
    bus = await startPrivateBus({ kind: 'system', include: [path.resolve(__dirname, '../../../dbus/org.mpathpr.Manager1.conf')] });
    dir = tempDir('mpath-pr-dbus-policy-');
    lu = path.join(fs.realpathSync(dir), 'lu0.img');
    fs.writeFileSync(lu, Buffer.alloc(4096));
    serve = await startServeWith({ dir, state: path.join(dir, 'san.db'), initiator: 'policy-host', args: ['--dbus-address', bus.address] });
  });
  after(async () => {
    await serve?.stop();
    await bus?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lets root own the name, and lets others read but not call', async () => {
    expect(serve.logs()).to.include(`D-Bus: ${BUS_NAME}`);
    const read = await callAsNobody(bus.address, MANAGER_PATH, 'org.freedesktop.DBus.Properties', 'Get', 'ss', [MANAGER_INTERFACE, 'Degraded']);
    expect(read).to.deep.include({ ok: true, value: [false] });
    const introspect = await callAsNobody(bus.address, MANAGER_PATH, 'org.freedesktop.DBus.Introspectable', 'Introspect', '', []);
    expect(introspect.ok).to.equal(true);
    const listed = await callAsNobody(bus.address, MANAGER_PATH, MANAGER_INTERFACE, 'ListDevices', '', []);
    expect(listed).to.deep.include({ ok: true, value: [[]] });
    // The bus itself refuses, before the daemon's own uid check.
    const doctor = await callAsNobody(bus.address, MANAGER_PATH, MANAGER_INTERFACE, 'Doctor', 'sb', [lu, false]);
    expect(doctor).to.deep.include({ ok: false, name: 'org.freedesktop.DBus.Error.AccessDenied' });
    const register = await callAsNobody(bus.address, deviceObjectPath(lu), DEVICE_INTERFACE, 'Register', 't', [1n]);
    expect(register).to.deep.include({ ok: false, name: 'org.freedesktop.DBus.Error.AccessDenied' });
    const own = await callAsNobody(bus.address, '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'RequestName', 'su', [BUS_NAME, 4]);
    expect(own).to.deep.include({ ok: false, name: 'org.freedesktop.DBus.Error.AccessDenied' });
  });

  it('root may call the methods', async () => {
    const root = await connectClientBus(bus.address);
    try {
      const reply = await call(root, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'Doctor', 'sb', [lu, false]);
      expect(JSON.parse(reply.body[0] as string)).to.deep.include({ device: lu, backend: 'emulated' });
    } finally {
      root.disconnect();
    }
  });
});

/** multipathd cannot run on this host: a TEST DOUBLE that records the commands it would have been sent. */
class MultipathdTestDouble implements MultipathdPrApi {
  readonly commands: string[] = [];
  reachable = true;
  async showDaemon() {
    if (!this.reachable) throw new MultipathdError({ command: 'show daemon', kind: 'unavailable', reason: 'test double: multipathd is down' });
    return { pid: 4242, state: 'running' };
  }
  async version() {
    return { major: 0, minor: 9, patch: 4, text: 'multipath-tools v0.9.4 (12/19, 2022)' };
  }
  async setPrKey(map: string, key: bigint, aptpl: boolean) {
    this.commands.push(Commands.setPrKey(map, key, aptpl));
  }
  async setPrStatus(map: string) {
    this.commands.push(Commands.setPrStatus(map));
  }
}

class LogLines extends Writable {
  readonly lines: { level: number; msg: string }[] = [];
  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    for (const line of chunk.toString().split('\n').filter(Boolean)) this.lines.push(JSON.parse(line));
    done();
  }
  matching(pattern: RegExp): { level: number; msg: string }[] {
    return this.lines.filter((l) => pattern.test(l.msg));
  }
}

describe('D-Bus: multipathd watcher through a FAKE org.freedesktop.systemd1', function () {
  this.timeout(60_000);
  let observedBus: ObservedBus;
  let bus: PrivateBus;
  let client: MessageBus;
  let signals: SignalRecorder;
  let dir: string;
  let backends: ReturnType<typeof createBackends>;
  let service: DbusService | undefined;
  let systemdBus: MessageBus | undefined;
  let logs: LogLines;
  let multipathd: MultipathdTestDouble;

  beforeEach(async () => {
    observedBus = await startObservedBus();
    ({ bus, client, signals } = observedBus);
    dir = tempDir('mpath-pr-dbus-watch-');
    backends = createBackends({ backend: 'auto', statePath: path.join(dir, 'san.db'), initiator: 'watch-host', paths: 2 });
    logs = new LogLines();
    multipathd = new MultipathdTestDouble();
  });
  afterEach(async () => {
    leaveObservedBus(observedBus);
    await service?.close();
    service = undefined;
    systemdBus?.disconnect();
    systemdBus = undefined;
    await backends.resolver.close();
    await bus.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function startService(): Promise<DbusService> {
    service = await startServiceInProcess(bus.address, {
      logger: pino({ level: 'info' }, logs),
      resolver: backends.resolver,
      emulated: backends.emulated,
      observers: new CommandObservers(),
      multipathd,
      emulatedPollMs: 0,
    });
    return service;
  }

  async function startFakeSystemd(state: { activeState: string; subState: string; statusText: string }): Promise<FakeSystemd> {
    systemdBus = await connectClientBus(bus.address);
    return FakeSystemd.start(systemdBus, 'multipathd.service', state);
  }

  it('goes Degraded when multipathd.service stops, and resyncs prkeys when it is active again', async () => {
    const systemd = await startFakeSystemd({ activeState: 'active', subState: 'running', statusText: 'up' });
    const dbus = await startService();
    expect(systemd.manager.subscribed).to.equal(1);
    expect(dbus.watcher!.state).to.deep.equal({ known: true, unit: { loadState: 'loaded', activeState: 'active', subState: 'running', statusText: 'up' } });
    expect(await getProperty(client, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'Degraded')).to.equal(false);
    const backendsBefore = (await getProperty(client, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'Backends')) as [string, boolean, string][];
    expect(backendsBefore.find(([name]) => name === 'multipathd')).to.deep.equal(['multipathd', true, 'multipath-tools v0.9.4 (12/19, 2022), pid 4242, running']);

    dbus.resync.maps.record('mpatha', 0xabcn, false);
    dbus.resync.maps.record('mpathb', 0x1234n, true);

    const from = signals.count;
    multipathd.reachable = false;
    systemd.set({ activeState: 'inactive', subState: 'dead', statusText: 'shutdown' });
    const degraded = await signals.next(isPropertiesChanged(MANAGER_PATH, MANAGER_INTERFACE, 'Degraded'), 'Degraded PropertiesChanged', 10_000, from);
    expect(changedValue(degraded, 'Degraded')).to.equal(true);
    expect(await getProperty(client, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'Degraded')).to.equal(true);
    expect(logs.matching(/multipathd\.service is inactive \(dead\): Degraded/)).to.have.length(1);
    expect(multipathd.commands).to.deep.equal([]);

    const mid = signals.count;
    multipathd.reachable = true;
    systemd.set({ activeState: 'activating', subState: 'start', statusText: 'startup' });
    systemd.set({ activeState: 'active', subState: 'running', statusText: 'up' });
    const recovered = await signals.next(
      (m) => isPropertiesChanged(MANAGER_PATH, MANAGER_INTERFACE, 'Degraded')(m) && changedValue(m, 'Degraded') === false,
      'Degraded=false PropertiesChanged',
      10_000,
      mid,
    );
    expect(recovered).to.not.equal(undefined);
    await eventually(() => multipathd.commands.length >= 4, 'the resync commands');
    expect(multipathd.commands).to.deep.equal([
      'setprkey map mpatha key 0xabc',
      'setprstatus map mpatha',
      'setprkey map mpathb key 0x1234:aptpl',
      'setprstatus map mpathb',
    ]);
    await eventually(() => dbus.resync.last.length === 2, 'the resync report');
    expect(dbus.resync.last.map((r) => [r.map, r.prkey, r.prstatus])).to.deep.equal([
      ['mpatha', 'ok', 'ok'],
      ['mpathb', 'ok', 'ok'],
    ]);
  });

  it('ignores PropertiesChanged for the unit sent by anyone but systemd', async () => {
    await startFakeSystemd({ activeState: 'active', subState: 'running', statusText: 'up' });
    const dbus = await startService();
    // Let every signal on the bus reach the service, so only its own sender check stands in the way.
    await call(dbus.bus, 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'AddMatch', 's', ["type='signal'"]);
    const impostorBus = await connectClientBus(bus.address);
    try {
      // Same object path, same interfaces, but only queued for the name: another unique name.
      const impostor = await FakeSystemd.start(impostorBus, 'multipathd.service', { activeState: 'active', subState: 'running', statusText: 'up' });
      impostor.set({ activeState: 'failed', subState: 'failed' });
      // The bus delivers one connection's messages in order: once this call is answered,
      // the service has already handled the impostor's signal.
      await call(impostorBus, BUS_NAME, MANAGER_PATH, 'org.freedesktop.DBus.Properties', 'Get', 'ss', [MANAGER_INTERFACE, 'Version']);
      expect(dbus.watcher!.state).to.deep.include({ known: true, unit: { loadState: 'loaded', activeState: 'active', subState: 'running', statusText: 'up' } });
      expect(dbus.health.degraded).to.equal(false);
    } finally {
      impostorBus.disconnect();
    }
  });

  it('without systemd on the bus it is not degraded, and picks systemd up when it arrives', async () => {
    const dbus = await startService();
    expect(dbus.watcher!.state).to.deep.equal({ known: false, reason: 'org.freedesktop.systemd1 is not on this bus' });
    expect(dbus.health.degraded).to.equal(false);
    dbus.resync.maps.record('mpathc', 0x5n, false);
    const from = signals.count;
    await startFakeSystemd({ activeState: 'failed', subState: 'failed', statusText: '' });
    const degraded = await signals.next(isPropertiesChanged(MANAGER_PATH, MANAGER_INTERFACE, 'Degraded'), 'Degraded PropertiesChanged', 10_000, from);
    expect(changedValue(degraded, 'Degraded')).to.equal(true);
    expect(multipathd.commands).to.deep.equal([]);
  });
});

describe('D-Bus: a device served by a non-emulated backend (the PR IN view)', function () {
  this.timeout(60_000);
  // No SCSI device exists here: the resolver is forced to put an emulated LU behind the
  // 'sg' slot, so the service treats it like any real device (PR IN on a reopened fd).
  let observedBus: ObservedBus;
  let client: MessageBus;
  let signals: SignalRecorder;
  let dir: string;
  let san: EmulatedBackend;
  let otherHost: EmulatedBackend;
  let unrelated: EmulatedBackend;
  let resolver: BackendResolver;
  let service: DbusService;
  /** What the daemon's server calls: the resolver, wrapped by the command observers. */
  let observed: PrHelperExecute;

  before(async () => {
    observedBus = await startObservedBus();
    ({ client, signals } = observedBus);
    dir = tempDir('mpath-pr-dbus-real-');
    san = new EmulatedBackend({ statePath: path.join(dir, 'san.db'), initiator: 'real-a', paths: 2 });
    otherHost = new EmulatedBackend({ statePath: path.join(dir, 'san.db'), initiator: 'real-b', paths: 1 });
    unrelated = new EmulatedBackend({ statePath: ':memory:', initiator: 'nobody-here' });
    resolver = new BackendResolver({ backends: { sg: san }, forced: 'sg' });
    const observers = new CommandObservers();
    service = await startServiceInProcess(observedBus.bus.address, {
      logger: pino({ level: 'silent' }),
      resolver,
      emulated: unrelated,
      observers,
      multipathd: null,
      watchMultipathd: false,
    });
    observed = observeExecute(({ handle, command }) => resolver.execute(handle, command), observers);
  });
  after(async () => {
    leaveObservedBus(observedBus);
    await service.close();
    await resolver.close();
    await otherHost.close();
    await unrelated.close();
    await observedBus.bus.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('publishes the PR IN view after each PR OUT, and Fenced on PREEMPT AND ABORT', async () => {
    const lu = path.join(fs.realpathSync(dir), 'disk.img');
    fs.writeFileSync(lu, Buffer.alloc(4096));
    const objectPath = deviceObjectPath(lu);
    const fd = fs.openSync(lu, 'r+');
    try {
      const handle = describeDeviceFd(fd);
      const peer = { pid: process.pid, uid: 0, gid: 0 };
      const runIt: pr.PrExecutor = async (cdb, dataOut) => observed({ handle, command: decoded(cdb, dataOut), peer, signal: new AbortController().signal });
      const other = pr.bindBackend(otherHost, { fd: -1, path: lu, writable: true });

      let from = signals.count;
      await pr.register(runIt, 0xa1n);
      const first = await signals.next(isPropertiesChanged(objectPath, DEVICE_INTERFACE, 'Keys'), 'Keys PropertiesChanged', 10_000, from);
      expect(changedValue(first, 'Keys')).to.deep.equal([0xa1n, 0xa1n]);
      expect(await getProperty(client, BUS_NAME, objectPath, DEVICE_INTERFACE, 'Backend')).to.equal('sg');
      expect(await getProperty(client, BUS_NAME, objectPath, DEVICE_INTERFACE, 'Paths')).to.deep.equal([]);

      // Another host (not observed) registers and reserves; our PREEMPT AND ABORT fences it.
      await pr.register(other, 0xb1n);
      await pr.reserve(other, 0xb1n, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY);
      from = signals.count;
      await pr.preempt(runIt, 0xa1n, 0xb1n, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, true);
      const fenced = await signals.next((m) => m.member === 'Fenced', 'Fenced', 10_000, from);
      expect(fenced.body).to.deep.equal([objectPath, 0xb1n, 0xa1n]);
      const holder = await signals.next((m) => m.member === 'ReservationChanged', 'ReservationChanged', 10_000, from);
      expect(holder.body).to.deep.equal([objectPath, '0x00000000000000a1', PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY]);
      expect(await getProperty(client, BUS_NAME, objectPath, DEVICE_INTERFACE, 'Keys')).to.deep.equal([0xa1n, 0xa1n]);

      const report = JSON.parse((await call(client, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, 'Doctor', 'sb', [objectPath, false])).body[0] as string);
      expect(report).to.deep.include({ device: lu, backend: 'sg', keys: ['0x00000000000000a1', '0x00000000000000a1'], findings: [], repaired: [] });
      expect(report.reservation).to.deep.equal({ holderKey: '0x00000000000000a1', type: PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, typeName: report.reservation.typeName });
      const failPath = await call(client, BUS_NAME, objectPath, DEVICE_INTERFACE, 'FailPath', 'u', [0]).then(
        () => undefined,
        (e: { type: string }) => e.type,
      );
      expect(failPath).to.equal('org.mpathpr.Error.NotSupported');
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('D-Bus: a daemon whose bus is unreachable', function () {
  this.timeout(60_000);
  let dir: string;
  let serve: DbusServeProcess | undefined;
  afterEach(async () => {
    await serve?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves the socket and logs one warning', async () => {
    dir = tempDir('mpath-pr-dbus-nobus-');
    const lu = path.join(dir, 'lu0.img');
    fs.writeFileSync(lu, Buffer.alloc(4096));
    serve = await startServeWith({ dir, state: path.join(dir, 'san.db'), initiator: 'lonely', args: ['--dbus-address', `unix:path=${dir}/no-bus-here`] });
    const fd = fs.openSync(lu, 'r+');
    const qemu = await connectClient(serve.socket);
    try {
      const runIt = executorFor(qemu, fd);
      await pr.register(runIt, 0x11n);
      await pr.reserve(runIt, 0x11n, PrType.WRITE_EXCLUSIVE);
      expect((await pr.readReservation(runIt)).reservation).to.deep.include({ key: 0x11n });
    } finally {
      qemu.close();
      fs.closeSync(fd);
    }
    const warnings = serve
      .logs()
      .split('\n')
      .filter((line) => /D-Bus/.test(line) && /"level":40/.test(line));
    expect(warnings).to.have.length(1);
    expect(warnings[0]).to.include('D-Bus unavailable, continuing without it');
    expect(warnings[0]).to.include('no-bus-here');
  });

  it('--no-dbus does not try at all', async () => {
    dir = tempDir('mpath-pr-dbus-off-');
    serve = await startServeWith({ dir, state: path.join(dir, 'san.db'), initiator: 'quiet', args: ['--no-dbus', '--dbus-address', 'unix:path=/nonexistent'] });
    expect(serve.logs()).to.not.match(/D-Bus/);
  });
});
