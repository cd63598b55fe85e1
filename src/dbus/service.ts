// The D-Bus management service: org.mpathpr.Manager1 on the system bus (or any bus
// address), one org.mpathpr.Device1 object per known device, the ReservationChanged and
// Fenced signals, admin methods for root (or an allow-list), and the multipathd.service
// watcher that resyncs prkeys when multipathd comes back. This file only composes the
// pieces and runs their lifetime.
//
// D-Bus is a view. It learns about commands through CommandObservers after they ran, and
// does its own work later (setImmediate, promises): nothing here can fail or hold up a
// command from the socket.

import { interface as dbusInterface, NameFlag, RequestNameReply, type MessageBus } from 'dbus-next';
import type { Logger } from 'pino';
import type { EmulatedBackend } from '../backends/emulated/emulated-backend';
import type { BackendResolver } from '../backends/resolve';
import type { DeviceTree } from '../device';
import type { PrHelperServerStats } from '../protocol/server';
import { AdminMethods } from './admin-methods';
import { AdminAuthorizer } from './authorization';
import { backendStatuses } from './backend-status';
import { connectBus, DbusUnavailableError, resolveBusAddress, withTimeout } from './bus';
import type { CommandObservers } from './command-observer';
import { CommandView } from './command-view';
import { Device1Interface } from './device1';
import { DeviceRegistry } from './device-registry';
import { EmulatedDevices } from './emulated-devices';
import { MapKeyResync, resyncDue, type MultipathdPrApi } from './managed-maps';
import { Manager1Interface, type ManagerController, type ManagerCounters } from './manager1';
import { ExportedObjects } from './method-calls';
import { MultipathdHealth } from './multipathd-health';
import { BUS_NAME, MANAGER_PATH } from './names';
import { RealDevices } from './real-devices';
import { SystemdUnitWatcher } from './systemd-unit-watcher';
import { ViewLifetime } from './view-lifetime';

/** The daemon's D-Bus settings (`--no-dbus`, `--dbus-address`, `--dbus-admin-uid`). */
export interface DbusSettings {
  /** false: no D-Bus at all. Default true. */
  readonly enabled?: boolean;
  /** Undefined: DBUS_SYSTEM_BUS_ADDRESS, else the system bus. */
  readonly address?: string;
  /** Uids besides 0 allowed to call the admin methods. */
  readonly adminUids?: readonly number[];
}

export interface DbusServiceOptions {
  readonly logger: Logger;
  readonly version: string;
  /** Where the bus is; see resolveBusAddress. */
  readonly busAddress?: string;
  /** Only the counters are read. */
  readonly server: { readonly stats: PrHelperServerStats };
  /** Runs the view's PR IN and the admin PR OUTs; its available backends are the Backends property. */
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
  readonly statePath?: string;
  /** Where sysfs and the device nodes are; tests pass a fake tree. */
  readonly deviceTree?: DeviceTree;
}

function countersOf(stats: PrHelperServerStats): ManagerCounters {
  return {
    connections: stats.connectionsActive,
    commands: BigInt(stats.commands),
    prIn: BigInt(stats.prIn),
    prOut: BigInt(stats.prOut),
    errors: BigInt(stats.executeErrors + stats.protocolViolations + stats.connectionErrors),
  };
}

export class DbusService {
  readonly manager: Manager1Interface;
  readonly watcher: SystemdUnitWatcher | undefined;
  /** multipathd's health and the Degraded state. */
  readonly health: MultipathdHealth;
  /** The keys registered on dm-multipath maps, and their resync into multipathd. */
  readonly resync: MapKeyResync;
  private readonly logger: Logger;
  private readonly lifetime: ViewLifetime;
  private readonly objects: ExportedObjects;
  private readonly registry: DeviceRegistry;
  private readonly emulated: EmulatedDevices;
  private readonly real: RealDevices;
  private readonly admin: AdminMethods;
  private readonly commands: CommandView;

  constructor(
    readonly bus: MessageBus,
    private readonly options: DbusServiceOptions,
  ) {
    const { resolver, observers } = options;
    const logger = (this.logger = options.logger.child({ component: 'dbus' }));
    const lifetime = (this.lifetime = new ViewLifetime(logger));
    this.objects = new ExportedObjects(bus);
    lifetime.onStop(() => this.objects.close());
    if (options.watchMultipathd !== false) this.watcher = new SystemdUnitWatcher(bus);
    lifetime.onStop(() => this.watcher?.close());
    this.health = new MultipathdHealth(options.multipathd, logger, () => lifetime.stopped, (name) => this.managerPropertyChanged(name), this.watcher?.unit);
    this.manager = new Manager1Interface(this.managerController());

    const registry = (this.registry = new DeviceRegistry(this.objects, this.manager, lifetime, (path) => new Device1Interface(this.admin, path)));
    const emulated = (this.emulated = new EmulatedDevices(options.emulated, registry, lifetime, options.statePath));
    const real = (this.real = new RealDevices(resolver, registry, options.deviceTree, lifetime, logger));
    const authorizer = new AdminAuthorizer(bus, logger, options.adminUids);
    this.admin = new AdminMethods({ authorizer, resolver, observers, registry, emulated, real, logger });
    this.resync = new MapKeyResync(options.multipathd, logger, () => lifetime.stopped, async (maps) => {
      await this.health.probe();
      await real.refreshMaps(maps);
    });
    this.commands = new CommandView({ resolver, registry, emulated, real, maps: this.resync.maps, manager: this.manager, lifetime, logger });
  }

  private managerController(): ManagerController {
    const { health, options } = this;
    return {
      version: options.version,
      backends: () => backendStatuses(options.resolver, () => this.emulated.statusDetail(), health.status),
      counters: () => countersOf(options.server.stats),
      get degraded() {
        return health.degraded;
      },
      listDevices: () => this.registry.objectPaths(),
      doctor: (device, repair, caller) => this.admin.doctor(device, repair, caller),
    };
  }

  /** Exports the objects, owns the name, starts the watchers. */
  async start(): Promise<void> {
    this.bus.on('error', (error: Error) => {
      // After the bus goes away every send reports an error: say it once and stop the view.
      if (this.lifetime.stopped) return;
      this.logger.warn({ err: { message: error.message } }, `D-Bus connection lost, continuing without it: ${error.message}`);
      this.lifetime.stop();
    });

    this.objects.export(MANAGER_PATH, this.manager);
    this.emulated.updateAll(false);

    const reply = await withTimeout(this.bus.requestName(BUS_NAME, NameFlag.DO_NOT_QUEUE), this.options.connectTimeoutMs ?? 5000);
    if (reply !== RequestNameReply.PRIMARY_OWNER && reply !== RequestNameReply.ALREADY_OWNER) {
      throw new DbusUnavailableError(`${BUS_NAME} is already owned by another connection`);
    }

    this.emulated.follow(this.options.emulatedPollMs ?? 1000);
    this.lifetime.onStop(this.options.observers.add(this.commands.observe));
    if (this.options.multipathd) this.lifetime.every(this.options.multipathdProbeMs ?? 60_000, () => void this.health.probe());
    await this.health.probe();
    if (this.watcher) {
      this.watcher.on('change', (change) =>
        this.lifetime.safely('multipathd watcher', () => {
          this.health.followUnit(change);
          if (resyncDue(change, this.resync.lastFailed)) void this.resync.run();
          else void this.health.probe();
        }),
      );
      await this.watcher.start();
    }
  }

  async close(): Promise<void> {
    const connected = this.lifetime.stop();
    await withTimeout(this.real.settle(), 2000).catch(() => undefined);
    if (connected) await withTimeout(this.bus.releaseName(BUS_NAME), 1000).catch(() => undefined);
    try {
      this.bus.disconnect();
    } catch {
      // already disconnected
    }
  }

  private managerPropertyChanged(name: 'Backends' | 'Degraded'): void {
    dbusInterface.Interface.emitPropertiesChanged(this.manager, { [name]: this.manager[name] }, []);
  }
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
