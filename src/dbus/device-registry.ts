// The devices the D-Bus view knows: one Device1 object each, exported when first seen
// and kept for the daemon's life, with the snapshot its properties show. Publishing a
// new snapshot sends PropertiesChanged and ReservationChanged for what moved.

import { DBusError, interface as dbusInterface } from 'dbus-next';
import type { DevNumber } from '../device';
import { Device1Interface } from './device1';
import { changedProperties, holderKeyText, reservationChanged, type DeviceSnapshot } from './device-state';
import type { Manager1Interface } from './manager1';
import type { ExportedObjects } from './method-calls';
import { DbusErrors, deviceObjectPath, devicePathFromObjectPath } from './names';
import type { ViewLifetime } from './view-lifetime';

export interface DeviceEntry {
  readonly path: string;
  readonly objectPath: string;
  readonly iface: Device1Interface;
  snapshot: DeviceSnapshot;
  /** Real devices: what sysfs and the resolver said when it was first seen. */
  readonly rdev?: DevNumber;
  readonly mapName?: string;
}

/** What a device shows before anything was read from it. */
export function emptySnapshot(path: string, backend: string, wwid = '', paths: DeviceSnapshot['paths'] = []): DeviceSnapshot {
  return { path, wwid, backend, generation: 0, keys: [], reservationKey: 0n, reservationType: 0, paths };
}

export class DeviceRegistry {
  private readonly devices = new Map<string, DeviceEntry>();

  constructor(
    private readonly objects: ExportedObjects,
    private readonly manager: Manager1Interface,
    private readonly lifetime: ViewLifetime,
    /** Builds the Device1 object of a device path. */
    private readonly deviceInterface: (devicePath: string) => Device1Interface,
  ) {}

  get(devicePath: string): DeviceEntry | undefined {
    return this.devices.get(devicePath);
  }

  /** A device by its path or its object path, if known. */
  find(device: string): DeviceEntry | undefined {
    return this.devices.get(devicePathFromObjectPath(device) ?? device);
  }

  /** The known device, or NoSuchDevice. */
  require(devicePath: string): DeviceEntry {
    const entry = this.devices.get(devicePath);
    if (!entry) throw new DBusError(DbusErrors.NO_SUCH_DEVICE, `no device ${devicePath}`);
    return entry;
  }

  entries(): DeviceEntry[] {
    return [...this.devices.values()];
  }

  objectPaths(): string[] {
    return this.entries()
      .map((d) => d.objectPath)
      .sort();
  }

  /** The device's entry, exported with `initial` when it is new. */
  add(devicePath: string, initial: DeviceSnapshot, seen: { rdev?: DevNumber; mapName?: string } = {}): { entry: DeviceEntry; created: boolean } {
    const existing = this.devices.get(devicePath);
    if (existing) return { entry: existing, created: false };
    const entry: DeviceEntry = { path: devicePath, objectPath: deviceObjectPath(devicePath), iface: this.deviceInterface(devicePath), snapshot: initial, ...seen };
    this.devices.set(devicePath, entry);
    this.objects.export(entry.objectPath, entry.iface);
    return { entry, created: true };
  }

  /**
   * Publishes a new snapshot: PropertiesChanged with what differs, ReservationChanged when
   * the holder or type moved. `announce` false only for devices seen for the first time
   * by discovery, which are not a change anyone could have waited for.
   */
  publish(entry: DeviceEntry, next: DeviceSnapshot, announce: boolean): void {
    const before = entry.snapshot;
    entry.snapshot = next;
    if (!announce || this.lifetime.stopped) return;
    const changed = changedProperties(before, next);
    if (Object.keys(changed).length > 0) dbusInterface.Interface.emitPropertiesChanged(entry.iface, changed, []);
    if (reservationChanged(before, next)) this.manager.ReservationChanged(entry.objectPath, holderKeyText(next), next.reservationType);
  }
}
