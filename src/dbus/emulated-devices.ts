// The emulated LUs as D-Bus devices. The engine's state knows every path's registration,
// so these snapshots are read from the backend (not through PR IN), at start, on the
// backend's own change events, and when the shared state file changed under it (other
// hosts, `mpath-pr emu path`, which only a poll of its data version notices).

import type { EmulatedBackend } from '../backends/emulated/emulated-backend';
import type { PathState } from '../backends/emulated/store';
import type { PrState } from '../engine/state';
import { emulatedSnapshot, type DeviceSnapshot } from './device-state';
import { emptySnapshot, type DeviceRegistry } from './device-registry';
import { doctorEmulated, type DoctorReport } from './doctor';
import type { ViewLifetime } from './view-lifetime';

export class EmulatedDevices {
  private lastDataVersion: number | undefined;

  constructor(
    private readonly emulated: EmulatedBackend,
    private readonly registry: DeviceRegistry,
    private readonly lifetime: ViewLifetime,
    /** Shown in the Backends property; default: the store's own path. */
    private readonly statePath?: string,
  ) {}

  /** The Backends detail of the emulated backend. */
  statusDetail(): string {
    return `state ${this.statePath ?? this.emulated.statePath}, initiator ${this.emulated.initiatorKey}, ${this.emulated.paths().length} paths`;
  }

  has(lu: string): boolean {
    return this.emulated.listDevices().includes(lu);
  }

  /** Follows changes: this backend's own at once, other processes' every pollMs (0: never). */
  follow(pollMs: number): void {
    const stopListening = this.emulated.onChange((change) =>
      setImmediate(() => this.lifetime.safely('emulated change', () => this.update(change.lu, change.state, true))),
    );
    this.lifetime.onStop(stopListening);
    this.lifetime.every(pollMs, () => this.lifetime.safely('emulated poll', () => this.poll()));
  }

  /**
   * Publishes the LU's state (read now unless given). `announce` applies to an LU seen
   * for the first time; a known one always announces what changed.
   */
  update(lu: string, state: PrState | undefined, announce: boolean): void {
    const snapshot = this.snapshot(lu, state ?? this.emulated.readState(lu));
    const { entry, created } = this.registry.add(lu, emptySnapshot(lu, 'emulated'));
    this.registry.publish(entry, snapshot, announce || !created);
  }

  updateAll(announce: boolean): void {
    for (const lu of this.emulated.listDevices()) this.update(lu, undefined, announce);
  }

  /** Fails or reinstates one of this host's paths, which reaches every LU. Throws RangeError for a path the host lacks. */
  setPathState(index: number, state: PathState): void {
    this.emulated.setPathState(index, state);
    this.updateAll(true);
  }

  /** The per-path report of an LU, repaired first when asked; the LU is published afterwards. */
  doctor(lu: string, repair: boolean): DoctorReport {
    const report = doctorEmulated(this.emulated, lu, (state) => this.snapshot(lu, state), repair);
    this.update(lu, undefined, true);
    return report;
  }

  private snapshot(lu: string, state: PrState): DeviceSnapshot {
    return emulatedSnapshot(lu, state, { initiatorKey: this.emulated.initiatorKey, paths: this.emulated.paths() });
  }

  /** Re-reads every LU once the state file's data version moved. */
  private poll(): void {
    const version = this.emulated.dataVersion();
    if (version === this.lastDataVersion) return;
    this.lastDataVersion = version;
    this.updateAll(false);
  }
}
