// The D-Bus management service: org.mpathpr.Manager1 on the system bus (or any bus
// address), one org.mpathpr.Device1 object per known device, the ReservationChanged and
// Fenced signals, admin methods for root (or an allow-list), and the multipathd.service
// watcher that resyncs prkeys when multipathd comes back.
//
// D-Bus is a view. It learns about commands through CommandObservers after they ran, and
// does its own work later (setImmediate, promises): nothing here can fail or hold up a
// command from the socket. Device state is re-read with PR IN through the resolver on a
// freshly opened fd, refreshes are coalesced per device, and the emulated backend is
// read from its store (and its change events) directly.

import fs from 'node:fs';
import { DBusError, interface as dbusInterface, NameFlag, RequestNameReply, sessionBus, Message, type MessageBus } from 'dbus-next';
import type { Logger } from 'pino';
import type { DeviceHandle } from '../backends/backend';
import type { EmulatedBackend } from '../backends/emulated/emulated-backend';
import { bindBackend, prOutCommand, PrCommandError, type PrOutRequest } from '../backends/pr-commands';
import { hostSysfs, type BackendChoice, type BackendResolver, type Rdev, type Sysfs } from '../backends/resolve';
import { describeDeviceFd, type PrHelperServerStats } from '../protocol/server';
import { isPrType, PrOutAction, Status } from '../scsi/constants';
import { prOutAction } from '../scsi/actions';
import { CommandObservers, decodePrOut, type ObservedCommand } from './command-observer';
import {
  changedProperties,
  emulatedSnapshot,
  holderKeyText,
  prInSnapshot,
  reservationChanged,
  type DeviceSnapshot,
  type PathView,
} from './device-state';
import { doctorEmulated, doctorFromPrIn } from './doctor';
import { Device1Interface, Manager1Interface, type BackendStatus, type DeviceController, type ManagerController } from './interfaces';
import { ManagedMaps, resyncManagedMaps, type MultipathdPrApi, type ResyncOutcome } from './managed-maps';
import { BUS_NAME, DbusErrors, deviceObjectPath, devicePathFromObjectPath, formatKey, MANAGER_PATH } from './names';
import { isUnitUp, SystemdUnitWatcher, type UnitChange, type UnitWatchState } from './systemd-unit-watcher';

export const SYSTEM_BUS_SOCKET_ADDRESS = 'unix:path=/var/run/dbus/system_bus_socket';

/** --dbus-address, else DBUS_SYSTEM_BUS_ADDRESS, else the system bus socket. */
export function resolveBusAddress(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return explicit || env.DBUS_SYSTEM_BUS_ADDRESS || SYSTEM_BUS_SOCKET_ADDRESS;
}

/** The daemon's D-Bus settings (`--no-dbus`, `--dbus-address`, `--dbus-admin-uid`). */
export interface DbusSettings {
  /** false: no D-Bus at all. Default true. */
  readonly enabled?: boolean;
  /** Undefined: DBUS_SYSTEM_BUS_ADDRESS, else the system bus. */
  readonly address?: string;
  /** Uids besides 0 allowed to call the admin methods. */
  readonly adminUids?: readonly number[];
}

export class DbusUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DbusUnavailableError';
  }
}

/**
 * Connects and says Hello, or rejects within timeoutMs. dbus-next reports an unreachable
 * bus only as an 'error' event and leaves pending calls hanging, hence the race here.
 */
export async function connectBus(address: string, timeoutMs = 5000): Promise<MessageBus> {
  let bus: MessageBus;
  try {
    bus = sessionBus({ busAddress: address });
  } catch (error) {
    throw new DbusUnavailableError(`bad bus address ${address}: ${(error as Error).message}`);
  }
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      bus.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      bus.once('error', (error: Error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  } catch (error) {
    // Later errors from the dead stream must not become an unhandled 'error' event.
    bus.on('error', () => undefined);
    try {
      bus.disconnect();
    } catch {
      // already gone
    }
    throw new DbusUnavailableError(`cannot connect to D-Bus at ${address}: ${(error as Error).message}`);
  }
  return bus;
}

export interface DbusServiceOptions {
  readonly logger: Logger;
  readonly version: string;
  /** Where the bus is; see resolveBusAddress. */
  readonly busAddress?: string;
  /** Only the counters are read. */
  readonly server: { readonly stats: PrHelperServerStats };
  readonly resolver: BackendResolver;
  readonly emulated: EmulatedBackend;
  readonly observers: CommandObservers;
  /** Uids besides 0 that may call the admin methods (the bus policy must let them call, too). */
  readonly adminUids?: readonly number[];
  /** The multipathd client for health and resync; null to never talk to multipathd. */
  readonly multipathd: MultipathdPrApi | null;
  /** Watch multipathd.service through org.freedesktop.systemd1 on the same bus. Default true. */
  readonly watchMultipathd?: boolean;
  /** How often the emulated store is checked for changes made by other processes; 0 disables. Default 1000 ms. */
  readonly emulatedPollMs?: number;
  /** How often multipathd's health is probed besides unit changes; 0 disables. Default 60 s. */
  readonly multipathdProbeMs?: number;
  readonly connectTimeoutMs?: number;
  /** The backends the resolver has, for the Backends property. */
  readonly backendNames?: readonly string[];
  readonly statePath?: string;
  readonly sysfs?: Sysfs;
}

interface DeviceEntry {
  readonly path: string;
  readonly objectPath: string;
  readonly iface: Device1Interface;
  snapshot: DeviceSnapshot;
  /** Real devices: what sysfs and the resolver said when it was first seen. */
  readonly rdev?: Rdev;
  readonly mapName?: string;
  refreshing?: Promise<void>;
  refreshAgain?: boolean;
}

const LIBRARY_DIRS = ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib/aarch64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/lib64', '/usr/lib', '/lib'];

function findLibrary(soname: string): string | undefined {
  return LIBRARY_DIRS.map((dir) => `${dir}/${soname}`).find((file) => fs.existsSync(file));
}

function emptySnapshot(path: string, backend: string, wwid = '', paths: readonly PathView[] = []): DeviceSnapshot {
  return { path, wwid, backend, generation: 0, keys: [], reservationKey: 0n, reservationType: 0, paths };
}

export class DbusService implements ManagerController, DeviceController {
  readonly manager: Manager1Interface;
  readonly maps = new ManagedMaps();
  readonly watcher: SystemdUnitWatcher | undefined;
  /** The outcome of the last multipathd resync (for logs, Doctor and tests). */
  lastResync: ResyncOutcome[] = [];
  private readonly devices = new Map<string, DeviceEntry>();
  private readonly logger: Logger;
  private readonly sysfs: Sysfs;
  private readonly adminUids: ReadonlySet<number>;
  private multipathdStatus: BackendStatus = ['multipathd', false, 'not probed yet'];
  private isDegraded = false;
  private callSender: string | undefined;
  private readonly cleanups: (() => void)[] = [];
  private lastDataVersion: number | undefined;
  private closed = false;
  /** Aborts this view's own PR IN refreshes that have not started when it stops. */
  private readonly stopping = new AbortController();
  private resyncChain: Promise<unknown> = Promise.resolve();

  constructor(
    readonly bus: MessageBus,
    private readonly options: DbusServiceOptions,
  ) {
    this.logger = options.logger.child({ component: 'dbus' });
    this.sysfs = options.sysfs ?? hostSysfs;
    this.adminUids = new Set([0, ...(options.adminUids ?? [])]);
    this.manager = new Manager1Interface(this);
    if (options.watchMultipathd !== false) this.watcher = new SystemdUnitWatcher(bus);
  }

  /** Exports the objects, owns the name, starts the watchers. */
  async start(): Promise<void> {
    // Method handlers run synchronously right before dbus-next dispatches the call to the
    // interface, so the sender recorded here is the sender of the call being dispatched.
    const capture = (msg: Message) => {
      this.callSender = msg.sender;
      return false;
    };
    this.bus.addMethodHandler(capture);
    this.cleanups.push(() => this.bus.removeMethodHandler(capture));
    this.bus.on('error', (error: Error) => {
      // After the bus goes away every send reports an error: say it once and stop the view.
      if (this.closed) return;
      this.logger.warn({ err: { message: error.message } }, `D-Bus connection lost, continuing without it: ${error.message}`);
      this.stopViews();
    });

    this.bus.export(MANAGER_PATH, this.manager);
    for (const lu of this.options.emulated.listDevices()) this.updateEmulated(lu, undefined, false);

    const reply = await withTimeout(this.bus.requestName(BUS_NAME, NameFlag.DO_NOT_QUEUE), this.options.connectTimeoutMs ?? 5000);
    if (reply !== RequestNameReply.PRIMARY_OWNER && reply !== RequestNameReply.ALREADY_OWNER) {
      throw new DbusUnavailableError(`${BUS_NAME} is already owned by another connection`);
    }

    this.cleanups.push(this.options.emulated.onChange((change) => setImmediate(() => this.safely('emulated change', () => this.updateEmulated(change.lu, change.state, true)))));
    this.cleanups.push(this.options.observers.add((command) => this.observe(command)));

    const pollMs = this.options.emulatedPollMs ?? 1000;
    if (pollMs > 0) {
      const timer = setInterval(() => this.safely('emulated poll', () => this.pollEmulated()), pollMs);
      timer.unref();
      this.cleanups.push(() => clearInterval(timer));
    }
    const probeMs = this.options.multipathdProbeMs ?? 60_000;
    if (probeMs > 0 && this.options.multipathd) {
      const timer = setInterval(() => void this.probeMultipathd(), probeMs);
      timer.unref();
      this.cleanups.push(() => clearInterval(timer));
    }
    await this.probeMultipathd();
    if (this.watcher) {
      this.watcher.on('change', (change) => this.safely('multipathd watcher', () => this.onUnitChange(change)));
      await this.watcher.start();
    }
  }

  async close(): Promise<void> {
    const connected = !this.closed;
    this.stopViews();
    const refreshes = [...this.devices.values()].map((d) => d.refreshing?.catch(() => undefined));
    await withTimeout(Promise.all(refreshes), 2000).catch(() => undefined);
    if (connected) await withTimeout(this.bus.releaseName(BUS_NAME), 1000).catch(() => undefined);
    try {
      this.bus.disconnect();
    } catch {
      // already disconnected
    }
  }

  /** Stops every observer, timer and watcher; the socket side never notices. */
  private stopViews(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopping.abort();
    this.watcher?.close();
    for (const cleanup of this.cleanups.splice(0)) cleanup();
  }

  // ---- Manager1 -------------------------------------------------------------------

  get version(): string {
    return this.options.version;
  }

  get degraded(): boolean {
    return this.isDegraded;
  }

  backends(): BackendStatus[] {
    const names = this.options.backendNames ?? ['emulated', 'sg', 'blkpr'];
    const statuses: BackendStatus[] = [];
    for (const name of names) {
      switch (name) {
        case 'emulated':
          statuses.push([
            'emulated',
            true,
            `state ${this.options.statePath ?? this.options.emulated.store.path}, initiator ${this.options.emulated.initiatorKey}, ${this.options.emulated.paths().length} paths`,
          ]);
          break;
        case 'sg':
          statuses.push(['sg', true, 'SG_IO pass-through to SCSI disks and sg nodes']);
          break;
        case 'blkpr':
          statuses.push(['blkpr', true, 'IOC_PR_* ioctls (dm, NVMe, SCSI disks)']);
          break;
        default:
          statuses.push([name, true, '']);
      }
    }
    if (!names.includes('mpath')) {
      // The resolver does not say which backends loaded; libmpathpersist's presence is what decides mpath.
      const library = findLibrary('libmpathpersist.so.0');
      statuses.push([
        'mpath',
        library !== undefined,
        library ? `libmpathpersist.so.0 at ${library}: dm-multipath maps use libmpathpersist` : 'libmpathpersist.so.0 not found: dm-multipath maps use blkpr',
      ]);
    }
    statuses.push(this.multipathdStatus);
    return statuses;
  }

  counters() {
    const stats = this.options.server.stats;
    return {
      connections: stats.connectionsActive,
      commands: BigInt(stats.commands),
      prIn: BigInt(stats.prIn),
      prOut: BigInt(stats.prOut),
      errors: BigInt(stats.executeErrors + stats.protocolViolations + stats.connectionErrors),
    };
  }

  listDevices(): string[] {
    return [...this.devices.values()].map((d) => d.objectPath).sort();
  }

  async doctor(device: string, repair: boolean): Promise<string> {
    const sender = this.takeSender();
    if (repair) await this.authorize(sender, `Doctor(${device}, repair)`);
    // Looking at a device nobody has used through us yet sends it PR IN: admins only.
    const known = this.devices.get(devicePathFromObjectPath(device) ?? device);
    if (!known && !repair) await this.authorize(sender, `Doctor(${device}) of a device not known yet`);
    const entry = known ?? (await this.findOrDiscover(device));
    if (entry.snapshot.backend === 'emulated') {
      const emulated = this.options.emulated;
      const report = doctorEmulated(emulated, entry.path, (state) => emulatedSnapshot(entry.path, state, { initiatorKey: emulated.initiatorKey, paths: emulated.paths() }), repair);
      if (report.repaired.length > 0) this.logger.info({ device: entry.path, repaired: report.repaired }, 'Doctor repaired path registrations');
      this.updateEmulated(entry.path, undefined, true);
      return JSON.stringify(report);
    }
    await this.refreshDevice(entry);
    return JSON.stringify(doctorFromPrIn(entry.snapshot, repair));
  }

  // ---- Device1 --------------------------------------------------------------------

  snapshot(devicePath: string): DeviceSnapshot {
    const entry = this.devices.get(devicePath);
    if (!entry) throw new DBusError(DbusErrors.NO_SUCH_DEVICE, `no device ${devicePath}`);
    return entry.snapshot;
  }

  async register(devicePath: string, key: bigint): Promise<void> {
    const sender = this.takeSender();
    await this.adminPrOut(sender, devicePath, { action: 'register-ignore', serviceActionKey: key });
  }

  async reserve(devicePath: string, key: bigint, type: number): Promise<void> {
    const sender = this.takeSender();
    checkType(type);
    await this.adminPrOut(sender, devicePath, { action: 'reserve', reservationKey: key, type });
  }

  async release(devicePath: string, key: bigint, type: number): Promise<void> {
    const sender = this.takeSender();
    checkType(type);
    await this.adminPrOut(sender, devicePath, { action: 'release', reservationKey: key, type });
  }

  async preempt(devicePath: string, key: bigint, victim: bigint, type: number, abort: boolean): Promise<void> {
    const sender = this.takeSender();
    checkType(type);
    await this.adminPrOut(sender, devicePath, { action: abort ? 'preempt-abort' : 'preempt', reservationKey: key, serviceActionKey: victim, type });
  }

  async setPathState(devicePath: string, index: number, state: 'failed' | 'active'): Promise<void> {
    const sender = this.takeSender();
    const what = `${state === 'failed' ? 'FailPath' : 'ReinstatePath'}(${index}) on ${devicePath}`;
    await this.authorize(sender, what);
    const entry = this.devices.get(devicePath);
    if (!entry) throw new DBusError(DbusErrors.NO_SUCH_DEVICE, `no device ${devicePath}`);
    if (entry.snapshot.backend !== 'emulated') {
      throw new DBusError(DbusErrors.NOT_SUPPORTED, `${devicePath} is served by ${entry.snapshot.backend}: path faults exist only for emulated LUs (use multipathd for real paths)`);
    }
    try {
      // Paths belong to the host, so this fails or reinstates the path to every emulated LU.
      this.options.emulated.setPathState(index, state);
    } catch (error) {
      if (error instanceof RangeError) throw new DBusError(DbusErrors.INVALID_ARGS, error.message);
      throw error;
    }
    this.logger.info({ path: index, state }, `emulated path ${index} ${state === 'failed' ? 'failed' : 'reinstated'} over D-Bus`);
    for (const lu of this.options.emulated.listDevices()) this.updateEmulated(lu, undefined, true);
  }

  // ---- admin plumbing ---------------------------------------------------------------

  private takeSender(): string | undefined {
    const sender = this.callSender;
    this.callSender = undefined;
    return sender;
  }

  /** Root or an allow-listed uid, as the bus daemon vouches for the caller; otherwise AccessDenied. */
  private async authorize(sender: string | undefined, what: string): Promise<number> {
    if (!sender) throw new DBusError(DbusErrors.ACCESS_DENIED, `${what}: the caller is unknown`);
    let uid: number;
    try {
      const reply = await this.bus.call(
        new Message({
          destination: 'org.freedesktop.DBus',
          path: '/org/freedesktop/DBus',
          interface: 'org.freedesktop.DBus',
          member: 'GetConnectionUnixUser',
          signature: 's',
          body: [sender],
        }),
      );
      uid = Number(reply?.body[0]);
    } catch (error) {
      throw new DBusError(DbusErrors.ACCESS_DENIED, `${what}: cannot tell who ${sender} is: ${(error as Error).message}`);
    }
    if (!this.adminUids.has(uid)) {
      this.logger.warn({ sender, uid, call: what }, `D-Bus admin call refused for uid ${uid}`);
      throw new DBusError(DbusErrors.ACCESS_DENIED, `${what}: uid ${uid} is not allowed (root${this.adminUids.size > 1 ? ' and the --dbus-admin-uid list' : ''} only)`);
    }
    this.logger.info({ sender, uid, call: what }, `D-Bus admin call by uid ${uid}`);
    return uid;
  }

  private async adminPrOut(sender: string | undefined, devicePath: string, request: PrOutRequest): Promise<void> {
    const name = prOutAction(request.action).title;
    await this.authorize(sender, `${name} on ${devicePath}`);
    const entry = this.devices.get(devicePath);
    if (!entry) throw new DBusError(DbusErrors.NO_SUCH_DEVICE, `no device ${devicePath}`);
    const command = prOutCommand(request);
    const file = await fs.promises.open(entry.path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK).catch((error: Error) => {
      throw new DBusError(DbusErrors.NO_SUCH_DEVICE, `cannot open ${entry.path}: ${error.message}`);
    });
    try {
      const handle = describeDeviceFd(file.fd);
      const result = await this.options.resolver.execute(handle, command);
      // The same views as a command from the socket: signals, the multipathd key record.
      this.options.observers.notify({ handle, command, result });
      if (result.status !== Status.GOOD) throw new DBusError(DbusErrors.COMMAND_FAILED, new PrCommandError(name, result).message);
    } finally {
      await file.close();
    }
  }

  // ---- keeping the view current ---------------------------------------------------------

  /** Runs view work; a failure is logged, never thrown into a caller. */
  private safely(what: string, work: () => unknown): void {
    if (this.closed) return;
    try {
      const result = work();
      if (result instanceof Promise) result.catch((error) => this.logger.warn({ err: error }, `D-Bus ${what} failed`));
    } catch (error) {
      this.logger.warn({ err: error }, `D-Bus ${what} failed`);
    }
  }

  private entryFor(path: string, initial: DeviceSnapshot, extra: { rdev?: Rdev; mapName?: string } = {}): { entry: DeviceEntry; created: boolean } {
    const existing = this.devices.get(path);
    if (existing) return { entry: existing, created: false };
    const entry: DeviceEntry = { path, objectPath: deviceObjectPath(path), iface: new Device1Interface(this, path), snapshot: initial, ...extra };
    this.devices.set(path, entry);
    this.bus.export(entry.objectPath, entry.iface);
    return { entry, created: true };
  }

  /**
   * Publishes a new snapshot: PropertiesChanged with what differs, ReservationChanged when
   * the holder or type moved. `announce` false only for devices seen for the first time
   * by discovery, which are not a change anyone could have waited for.
   */
  private publish(entry: DeviceEntry, next: DeviceSnapshot, announce: boolean): void {
    const before = entry.snapshot;
    entry.snapshot = next;
    if (!announce || this.closed) return;
    const changed = changedProperties(before, next);
    if (Object.keys(changed).length > 0) dbusInterface.Interface.emitPropertiesChanged(entry.iface, changed, []);
    if (reservationChanged(before, next)) this.manager.ReservationChanged(entry.objectPath, holderKeyText(next), next.reservationType);
  }

  private updateEmulated(lu: string, state: import('../engine/state').PrState | undefined, announce: boolean): void {
    const emulated = this.options.emulated;
    const snapshot = emulatedSnapshot(lu, state ?? emulated.readState(lu), { initiatorKey: emulated.initiatorKey, paths: emulated.paths() });
    const { entry, created } = this.entryFor(lu, emptySnapshot(lu, 'emulated'));
    this.publish(entry, snapshot, announce || !created);
  }

  /** Other processes (other hosts, `mpath-pr emu path`) change the shared store; PRAGMA data_version says when. */
  private pollEmulated(): void {
    const version = Number(this.options.emulated.store.db.pragma('data_version', { simple: true }));
    if (version === this.lastDataVersion) return;
    this.lastDataVersion = version;
    for (const lu of this.options.emulated.listDevices()) this.updateEmulated(lu, undefined, this.devices.has(lu));
  }

  private observe(command: ObservedCommand): void {
    if (this.closed) return;
    const { handle, result } = command;
    const isPrOut = command.command.direction === 'out';
    const good = result.status === Status.GOOD;
    const known = this.devices.get(handle.path);
    if (known && !(isPrOut && good)) return;
    // Only a command that worked makes a device known: one refused by access control or by
    // the resolver must never get PR IN from this view later.
    if (!known && !good) return;
    // Everything that needs the fd happens now, while it is open; the rest is deferred.
    let choice: BackendChoice | undefined;
    if (!known || known.snapshot.backend !== 'emulated') choice = this.options.resolver.resolve(handle);
    const decoded = isPrOut && good ? decodePrOut(command.command) : undefined;
    const rdev = handle.rdev;
    setImmediate(() => this.safely('command observer', () => this.afterCommand(handle.path, rdev, choice, decoded)));
  }

  private afterCommand(path: string, rdev: Rdev | undefined, choice: BackendChoice | undefined, decoded: ReturnType<typeof decodePrOut>): void {
    let entry = this.devices.get(path);
    if (!entry) {
      if (!choice?.ok) return;
      if (choice.backend === 'emulated') {
        // The LU exists in the store once it saw a command; the change event or poll fills it in.
        if (this.options.emulated.listDevices().includes(path)) this.updateEmulated(path, undefined, true);
        entry = this.devices.get(path);
      } else {
        entry = this.createRealDevice(path, rdev ?? choice.info.rdev, choice);
        void this.refreshDevice(entry).catch((error) => this.logger.debug({ err: error, device: path }, 'D-Bus device refresh failed'));
        entry = this.devices.get(path);
      }
    } else if (entry.snapshot.backend !== 'emulated' && decoded) {
      void this.refreshDevice(entry).catch((error) => this.logger.debug({ err: error, device: path }, 'D-Bus device refresh failed'));
    }
    if (!entry || !decoded) return;
    if ((decoded.action === PrOutAction.PREEMPT || decoded.action === PrOutAction.PREEMPT_AND_ABORT) && decoded.serviceActionKey !== decoded.reservationKey) {
      this.manager.Fenced(entry.objectPath, decoded.serviceActionKey, decoded.reservationKey);
      this.logger.info(
        { device: path, preempted: formatKey(decoded.serviceActionKey), by: formatKey(decoded.reservationKey), abort: decoded.action === PrOutAction.PREEMPT_AND_ABORT },
        `fenced ${formatKey(decoded.serviceActionKey)} on ${path}`,
      );
    }
    if (entry.mapName) this.recordMapKey(entry.mapName, decoded);
  }

  private recordMapKey(map: string, decoded: NonNullable<ReturnType<typeof decodePrOut>>): void {
    switch (decoded.action) {
      case PrOutAction.REGISTER:
      case PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY:
        this.maps.record(map, decoded.serviceActionKey, decoded.aptpl);
        break;
      case PrOutAction.CLEAR:
        this.maps.forget(map);
        break;
      default:
    }
  }

  private createRealDevice(path: string, rdev: Rdev | undefined, choice: Extract<BackendChoice, { ok: true }>): DeviceEntry {
    const info = this.describeReal(rdev, choice.info.class);
    return this.entryFor(path, emptySnapshot(path, choice.backend, info.wwid, info.paths), { rdev, mapName: info.mapName }).entry;
  }

  private describeReal(rdev: Rdev | undefined, deviceClass: string): { wwid: string; paths: PathView[]; mapName?: string } {
    if (!rdev) return { wwid: '', paths: [] };
    const block = `dev/block/${rdev.major}:${rdev.minor}`;
    switch (deviceClass) {
      case 'dm-multipath': {
        const uuid = this.sysfs.read(`${block}/dm/uuid`) ?? '';
        const paths = this.sysfs.slavesOf(rdev).map((name) => ({ name, state: this.sysfs.scsiState(name) ?? 'unknown', key: '' }));
        return { wwid: uuid.replace(/^mpath-/, ''), paths, mapName: this.sysfs.read(`${block}/dm/name`)?.trim() || undefined };
      }
      case 'scsi-block':
        return { wwid: this.sysfs.read(`${block}/device/wwid`)?.trim() ?? '', paths: [] };
      case 'nvme':
        return { wwid: this.sysfs.read(`${block}/wwid`)?.trim() ?? '', paths: [] };
      case 'scsi-generic':
        return { wwid: this.sysfs.read(`dev/char/${rdev.major}:${rdev.minor}/device/wwid`)?.trim() ?? '', paths: [] };
      default:
        return { wwid: '', paths: [] };
    }
  }

  /** PR IN through the resolver on a fresh read-only fd; coalesced: one in flight, at most one more queued. */
  private refreshDevice(entry: DeviceEntry): Promise<void> {
    if (entry.refreshing) {
      entry.refreshAgain = true;
      return entry.refreshing;
    }
    const run = async (): Promise<void> => {
      do {
        entry.refreshAgain = false;
        const file = await fs.promises.open(entry.path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
        try {
          const handle: DeviceHandle = describeDeviceFd(file.fd);
          const info = this.describeReal(entry.rdev ?? handle.rdev, this.options.resolver.resolve(handle).info.class);
          const snapshot = await prInSnapshot(bindBackend(this.options.resolver, handle, { signal: this.stopping.signal }), {
            path: entry.path,
            wwid: info.wwid || entry.snapshot.wwid,
            backend: entry.snapshot.backend,
            paths: info.paths,
          });
          this.publish(entry, snapshot, true);
        } finally {
          await file.close();
        }
      } while (entry.refreshAgain && !this.closed);
    };
    entry.refreshing = run().finally(() => {
      entry.refreshing = undefined;
    });
    return entry.refreshing;
  }

  private async findOrDiscover(device: string): Promise<DeviceEntry> {
    const path = devicePathFromObjectPath(device) ?? device;
    const known = this.devices.get(path);
    if (known) return known;
    if (this.options.emulated.listDevices().includes(path)) {
      this.updateEmulated(path, undefined, false);
      return this.devices.get(path)!;
    }
    let file: fs.promises.FileHandle;
    try {
      file = await fs.promises.open(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (error) {
      throw new DBusError(DbusErrors.NO_SUCH_DEVICE, `${device}: ${(error as Error).message}`);
    }
    try {
      const handle = describeDeviceFd(file.fd);
      const choice = this.options.resolver.resolve(handle);
      if (!choice.ok) throw new DBusError(DbusErrors.NO_SUCH_DEVICE, `${device}: ${choice.reason}`);
      if (choice.backend === 'emulated') {
        this.updateEmulated(handle.path, undefined, false);
        return this.devices.get(handle.path)!;
      }
      return this.createRealDevice(handle.path, handle.rdev, choice);
    } finally {
      await file.close();
    }
  }

  // ---- multipathd -----------------------------------------------------------------------

  /** Re-reads multipathd's health for the Backends property. Never throws. */
  async probeMultipathd(): Promise<void> {
    const client = this.options.multipathd;
    let status: BackendStatus;
    if (!client) {
      status = ['multipathd', false, 'not probed (no multipathd client configured)'];
    } else {
      try {
        const daemon = await client.showDaemon();
        const version = await client.version().catch(() => null);
        status = ['multipathd', true, `${version ? version.text : 'multipath-tools (version unknown)'}, pid ${daemon.pid}, ${daemon.state}`];
      } catch (error) {
        status = ['multipathd', false, `unreachable: ${(error as Error).message}`];
      }
    }
    const before = this.multipathdStatus;
    this.multipathdStatus = status;
    if (!this.closed && (before[1] !== status[1] || before[2] !== status[2])) {
      dbusInterface.Interface.emitPropertiesChanged(this.manager, { Backends: this.backends() }, []);
    }
  }

  private onUnitChange({ previous, current }: UnitChange): void {
    const degraded = isDegradedState(current);
    if (degraded !== this.isDegraded) {
      this.isDegraded = degraded;
      if (degraded) {
        const unit = current.known ? `${current.unit.activeState} (${current.unit.subState})` : '';
        this.logger.warn({ unit: this.watcher?.unit, state: unit }, `multipathd.service is ${unit}: Degraded; PR commands keep being answered, keys resync when it is back`);
      } else {
        this.logger.info({ unit: this.watcher?.unit }, 'multipathd.service is active again: no longer degraded');
      }
      dbusInterface.Interface.emitPropertiesChanged(this.manager, { Degraded: degraded }, []);
    }
    // Resync when the unit becomes active. multipathd may report READY before its socket
    // answers; its later STATUS=up is the second chance for maps that failed the first time.
    const cameUp = !isUnitUp(previous) && isUnitUp(current);
    const reportedUp = isUnitUp(current) && previous.known && current.known && previous.unit.statusText !== 'up' && current.unit.statusText === 'up';
    const lastFailed = this.lastResync.some((r) => r.prkey !== 'ok' || r.prstatus !== 'ok');
    if (cameUp || (reportedUp && lastFailed)) void this.resync();
    else void this.probeMultipathd();
  }

  /** Puts every key we registered on a map back into multipathd. Serialised; never throws. */
  resync(): Promise<ResyncOutcome[]> {
    const client = this.options.multipathd;
    const run = this.resyncChain.then(async () => {
      if (!client || this.closed) return [];
      const maps = this.maps.list();
      this.logger.info({ maps: maps.map((m) => m.map) }, `multipathd is up: resyncing ${maps.length} map(s)`);
      this.lastResync = await resyncManagedMaps(client, maps, this.logger);
      await this.probeMultipathd();
      // multipathd may have re-registered paths while it came back: show what the maps hold now.
      const resynced = new Set(maps.map((m) => m.map));
      await Promise.all(
        [...this.devices.values()].filter((d) => d.mapName && resynced.has(d.mapName)).map((d) => this.refreshDevice(d).catch(() => undefined)),
      );
      return this.lastResync;
    });
    this.resyncChain = run.catch(() => undefined);
    return run;
  }
}

/** Degraded: systemd knows multipathd.service, and it is not running. */
export function isDegradedState(state: UnitWatchState): boolean {
  return state.known && state.unit.loadState === 'loaded' && !isUnitUp(state);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

function checkType(type: number): void {
  if (!isPrType(type)) throw new DBusError(DbusErrors.INVALID_ARGS, `reservation type ${type} is not one of 1, 3, 5, 6, 7, 8`);
}

/** Connects, exports and owns the name; rejects with DbusUnavailableError when the bus cannot be used. */
export async function startDbusService(options: DbusServiceOptions): Promise<DbusService> {
  const address = resolveBusAddress(options.busAddress);
  const bus = await connectBus(address, options.connectTimeoutMs);
  const service = new DbusService(bus, options);
  try {
    await service.start();
  } catch (error) {
    await service.close().catch(() => undefined);
    if (error instanceof DbusUnavailableError) throw error;
    throw new DbusUnavailableError(`D-Bus at ${address}: ${(error as Error).message}`);
  }
  return service;
}

/**
 * The daemon's entry: the service, or undefined after ONE warning when no bus is usable.
 * The socket serves either way.
 */
export async function startDbusServiceOrWarn(options: DbusServiceOptions): Promise<DbusService | undefined> {
  try {
    const service = await startDbusService(options);
    options.logger.info({ bus: resolveBusAddress(options.busAddress), name: BUS_NAME }, `D-Bus: ${BUS_NAME} on ${resolveBusAddress(options.busAddress)}`);
    return service;
  } catch (error) {
    options.logger.warn({ err: { message: (error as Error).message } }, `D-Bus unavailable, continuing without it: ${(error as Error).message}`);
    return undefined;
  }
}
