// What the D-Bus view does with each command this daemon ran (from the socket or an
// admin method): a command that worked makes its device known, a PR OUT refreshes a real
// device's PR IN view, a PREEMPT of another key signals Fenced, and a REGISTER or CLEAR
// on a dm-multipath map updates the key record the multipathd resync uses.

import type { Logger } from 'pino';
import type { BackendChoice, BackendResolver } from '../backends/resolve';
import { describeHandle, type DeviceDescription } from '../device';
import { PrOutAction, Status } from '../scsi/constants';
import { decodePrOut, type DecodedPrOut, type ObservedCommand } from './command-observer';
import type { DeviceEntry, DeviceRegistry } from './device-registry';
import type { EmulatedDevices } from './emulated-devices';
import type { ManagedMaps } from './managed-maps';
import type { Manager1Interface } from './manager1';
import { formatKey } from './names';
import type { RealDevices } from './real-devices';
import type { ViewLifetime } from './view-lifetime';

export interface CommandViewParts {
  readonly resolver: BackendResolver;
  readonly registry: DeviceRegistry;
  readonly emulated: EmulatedDevices;
  readonly real: RealDevices;
  readonly maps: ManagedMaps;
  readonly manager: Manager1Interface;
  readonly lifetime: ViewLifetime;
  readonly logger: Logger;
}

export class CommandView {
  constructor(private readonly parts: CommandViewParts) {}

  /** The CommandObserver. Everything that needs the fd happens now, while it is open; the rest is deferred. */
  readonly observe = (command: ObservedCommand): void => {
    const { registry, resolver, lifetime } = this.parts;
    if (lifetime.stopped) return;
    const { handle, result } = command;
    // Only a command that worked makes a device known: one refused by access control or by
    // the resolver must never get PR IN from this view later.
    if (result.status !== Status.GOOD) return;
    const prOut = decodePrOut(command.command);
    const known = registry.get(handle.path);
    if (known && !prOut) return;
    const choice = !known || known.snapshot.backend !== 'emulated' ? resolver.resolve(handle) : undefined;
    const description = describeHandle(handle);
    setImmediate(() => lifetime.safely('command observer', () => this.afterCommand(handle.path, description, choice, prOut)));
  };

  private afterCommand(path: string, description: DeviceDescription, choice: BackendChoice | undefined, prOut: DecodedPrOut | undefined): void {
    const { registry, real } = this.parts;
    const known = registry.get(path);
    if (known && known.snapshot.backend !== 'emulated' && prOut) real.refreshLater(known);
    const entry = known ?? this.firstSeen(path, description, choice);
    if (!entry || !prOut) return;
    if ((prOut.action === PrOutAction.PREEMPT || prOut.action === PrOutAction.PREEMPT_AND_ABORT) && prOut.serviceActionKey !== prOut.reservationKey) {
      this.fenced(entry, prOut);
    }
    if (entry.mapName) this.parts.maps.recordPrOut(entry.mapName, prOut);
  }

  /** A device's first command through this daemon: it becomes a Device1 object with its current state. */
  private firstSeen(path: string, description: DeviceDescription, choice: BackendChoice | undefined): DeviceEntry | undefined {
    const { registry, emulated, real } = this.parts;
    if (!choice?.ok) return undefined;
    if (choice.backend === 'emulated') {
      // The LU exists in the store once it saw a command; the change event or poll fills it in.
      if (emulated.has(path)) emulated.update(path, undefined, true);
      return registry.get(path);
    }
    const entry = real.add(path, description, choice);
    real.refreshLater(entry);
    return entry;
  }

  private fenced(entry: DeviceEntry, prOut: DecodedPrOut): void {
    this.parts.manager.Fenced(entry.objectPath, prOut.serviceActionKey, prOut.reservationKey);
    this.parts.logger.info(
      { device: entry.path, preempted: formatKey(prOut.serviceActionKey), by: formatKey(prOut.reservationKey), abort: prOut.action === PrOutAction.PREEMPT_AND_ABORT },
      `fenced ${formatKey(prOut.serviceActionKey)} on ${entry.path}`,
    );
  }
}
