// Devices served by a real backend (sg, blkpr, mpath). All a real device tells us is PR
// IN, so their snapshots are READ KEYS and READ RESERVATION sent through the resolver on
// a freshly opened read-only fd, after each PR OUT through this daemon and on demand.
// Refreshes are coalesced per device: one in flight, at most one more queued.

import fs from 'node:fs';
import type { Logger } from 'pino';
import type { DeviceHandle } from '../backends/backend';
import type { BackendChoice, BackendResolver } from '../backends/resolve';
import { bindBackend } from '../backends/pr-commands';
import { describeDeviceFd, describeHandle, type DeviceDescription, type DeviceTree } from '../device';
import { realDeviceView } from './device-describer';
import { emptySnapshot, type DeviceEntry, type DeviceRegistry } from './device-registry';
import { prInSnapshot } from './device-state';
import type { ViewLifetime } from './view-lifetime';

interface Refresh {
  running: Promise<void>;
  /** Another refresh was asked for while this one ran. */
  again: boolean;
}

export class RealDevices {
  private readonly refreshes = new Map<string, Refresh>();

  constructor(
    private readonly resolver: BackendResolver,
    private readonly registry: DeviceRegistry,
    private readonly deviceTree: DeviceTree | undefined,
    private readonly lifetime: ViewLifetime,
    private readonly logger: Logger,
  ) {}

  /** Registers a device the resolver gives to a real backend, from the description the command carried; nothing is read from it yet. */
  add(path: string, description: DeviceDescription, choice: Extract<BackendChoice, { ok: true }>): DeviceEntry {
    const view = realDeviceView(description);
    return this.registry.add(path, emptySnapshot(path, choice.backend, view.wwid, view.paths), { rdev: description.rdev, mapName: view.mapName }).entry;
  }

  /** refresh() in the background; a failure is only worth a debug line (the next command retries). */
  refreshLater(entry: DeviceEntry): void {
    void this.refresh(entry).catch((error) => this.logger.debug({ err: error, device: entry.path }, 'D-Bus device refresh failed'));
  }

  /** Re-reads the device's PR state and publishes it. */
  refresh(entry: DeviceEntry): Promise<void> {
    const pending = this.refreshes.get(entry.path);
    if (pending) {
      pending.again = true;
      return pending.running;
    }
    const refresh: Refresh = { running: Promise.resolve(), again: false };
    this.refreshes.set(entry.path, refresh);
    const run = async (): Promise<void> => {
      do {
        refresh.again = false;
        await this.readAndPublish(entry);
      } while (refresh.again && !this.lifetime.stopped);
    };
    refresh.running = run().finally(() => this.refreshes.delete(entry.path));
    return refresh.running;
  }

  /** Refreshes the devices of these dm-multipath maps; failures are ignored. */
  async refreshMaps(mapNames: ReadonlySet<string>): Promise<void> {
    const devices = this.registry.entries().filter((d) => d.mapName && mapNames.has(d.mapName));
    await Promise.all(devices.map((d) => this.refresh(d).catch(() => undefined)));
  }

  /** Resolves once the refreshes in flight have ended, however they ended. */
  async settle(): Promise<void> {
    await Promise.all([...this.refreshes.values()].map((r) => r.running.catch(() => undefined)));
  }

  private async readAndPublish(entry: DeviceEntry): Promise<void> {
    const file = await fs.promises.open(entry.path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    try {
      // Described afresh: a map's paths come and go between refreshes.
      const handle: DeviceHandle = describeDeviceFd(file.fd, this.deviceTree);
      const view = realDeviceView(describeHandle(handle));
      const snapshot = await prInSnapshot(bindBackend(this.resolver, handle, { signal: this.lifetime.signal }), {
        path: entry.path,
        wwid: view.wwid || entry.snapshot.wwid,
        backend: entry.snapshot.backend,
        paths: view.paths,
      });
      this.registry.publish(entry, snapshot, true);
    } finally {
      await file.close();
    }
  }
}
