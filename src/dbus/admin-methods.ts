// The methods that change or probe devices: Device1's PR OUT methods and path faults,
// and Manager1.Doctor. Each is authorized per call (see authorization.ts). A PR OUT runs
// through the resolver like a command from the socket, and the command observers see it
// the same way, so its signals and the multipathd key record follow.

import fs from 'node:fs';
import { DBusError } from 'dbus-next';
import type { Logger } from 'pino';
import { prOutCommand, PrCommandError, type PrOutRequest } from '../backends/pr-commands';
import type { BackendResolver } from '../backends/resolve';
import { describeDeviceFd, describeHandle } from '../device';
import { prOutAction } from '../scsi/actions';
import { isPrType, Status } from '../scsi/constants';
import type { AdminAuthorizer } from './authorization';
import type { CommandObservers } from './command-observer';
import type { DeviceController } from './device1';
import type { DeviceEntry, DeviceRegistry } from './device-registry';
import type { DeviceSnapshot } from './device-state';
import { doctorFromPrIn } from './doctor';
import type { EmulatedDevices } from './emulated-devices';
import type { BusCaller } from './method-calls';
import { DbusErrors, devicePathFromObjectPath } from './names';
import type { RealDevices } from './real-devices';

export interface AdminParts {
  readonly authorizer: AdminAuthorizer;
  readonly resolver: BackendResolver;
  readonly observers: CommandObservers;
  readonly registry: DeviceRegistry;
  readonly emulated: EmulatedDevices;
  readonly real: RealDevices;
  readonly logger: Logger;
}

function checkType(type: number): void {
  if (!isPrType(type)) throw new DBusError(DbusErrors.INVALID_ARGS, `reservation type ${type} is not one of 1, 3, 5, 6, 7, 8`);
}

export class AdminMethods implements DeviceController {
  constructor(private readonly parts: AdminParts) {}

  snapshot(devicePath: string): DeviceSnapshot {
    return this.parts.registry.require(devicePath).snapshot;
  }

  async register(devicePath: string, key: bigint, caller: BusCaller | undefined): Promise<void> {
    await this.prOut(caller, devicePath, { action: 'register-ignore', serviceActionKey: key });
  }

  async reserve(devicePath: string, key: bigint, type: number, caller: BusCaller | undefined): Promise<void> {
    checkType(type);
    await this.prOut(caller, devicePath, { action: 'reserve', reservationKey: key, type });
  }

  async release(devicePath: string, key: bigint, type: number, caller: BusCaller | undefined): Promise<void> {
    checkType(type);
    await this.prOut(caller, devicePath, { action: 'release', reservationKey: key, type });
  }

  async preempt(devicePath: string, key: bigint, victim: bigint, type: number, abort: boolean, caller: BusCaller | undefined): Promise<void> {
    checkType(type);
    await this.prOut(caller, devicePath, { action: abort ? 'preempt-abort' : 'preempt', reservationKey: key, serviceActionKey: victim, type });
  }

  async setPathState(devicePath: string, index: number, state: 'failed' | 'active', caller: BusCaller | undefined): Promise<void> {
    await this.parts.authorizer.authorize(caller, `${state === 'failed' ? 'FailPath' : 'ReinstatePath'}(${index}) on ${devicePath}`);
    const entry = this.parts.registry.require(devicePath);
    if (entry.snapshot.backend !== 'emulated') {
      throw new DBusError(DbusErrors.NOT_SUPPORTED, `${devicePath} is served by ${entry.snapshot.backend}: path faults exist only for emulated LUs (use multipathd for real paths)`);
    }
    try {
      // Paths belong to the host, so this fails or reinstates the path to every emulated LU.
      this.parts.emulated.setPathState(index, state);
    } catch (error) {
      if (error instanceof RangeError) throw new DBusError(DbusErrors.INVALID_ARGS, error.message);
      throw error;
    }
    this.parts.logger.info({ path: index, state }, `emulated path ${index} ${state === 'failed' ? 'failed' : 'reinstated'} over D-Bus`);
  }

  /** Manager1.Doctor: the report as JSON. Repair, and a device nobody used through us yet (it would get PR IN), are for admins. */
  async doctor(device: string, repair: boolean, caller: BusCaller | undefined): Promise<string> {
    const { authorizer, registry, emulated } = this.parts;
    if (repair) await authorizer.authorize(caller, `Doctor(${device}, repair)`);
    const known = registry.find(device);
    if (!known && !repair) await authorizer.authorize(caller, `Doctor(${device}) of a device not known yet`);
    const entry = known ?? (await this.discover(device));
    if (entry.snapshot.backend === 'emulated') {
      const report = emulated.doctor(entry.path, repair);
      if (report.repaired.length > 0) this.parts.logger.info({ device: entry.path, repaired: report.repaired }, 'Doctor repaired path registrations');
      return JSON.stringify(report);
    }
    await this.parts.real.refresh(entry);
    return JSON.stringify(doctorFromPrIn(entry.snapshot, repair));
  }

  private async prOut(caller: BusCaller | undefined, devicePath: string, request: PrOutRequest): Promise<void> {
    const name = prOutAction(request.action).title;
    await this.parts.authorizer.authorize(caller, `${name} on ${devicePath}`);
    const entry = this.parts.registry.require(devicePath);
    const command = prOutCommand(request);
    const file = await fs.promises.open(entry.path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK).catch((error: Error) => {
      throw new DBusError(DbusErrors.NO_SUCH_DEVICE, `cannot open ${entry.path}: ${error.message}`);
    });
    try {
      const handle = describeDeviceFd(file.fd);
      const result = await this.parts.resolver.execute(handle, command);
      // The same views as a command from the socket: signals, the multipathd key record.
      this.parts.observers.notify({ handle, command, result });
      if (result.status !== Status.GOOD) throw new DBusError(DbusErrors.COMMAND_FAILED, new PrCommandError(name, result).message);
    } finally {
      await file.close();
    }
  }

  /** A device named by path or object path that the view does not know yet: known to the emulated store, or opened and resolved. */
  private async discover(device: string): Promise<DeviceEntry> {
    const { registry, emulated, resolver } = this.parts;
    const path = devicePathFromObjectPath(device) ?? device;
    if (emulated.has(path)) {
      emulated.update(path, undefined, false);
      return registry.require(path);
    }
    let file: fs.promises.FileHandle;
    try {
      file = await fs.promises.open(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (error) {
      throw new DBusError(DbusErrors.NO_SUCH_DEVICE, `${device}: ${(error as Error).message}`);
    }
    try {
      const handle = describeDeviceFd(file.fd);
      const choice = resolver.resolve(handle);
      if (!choice.ok) throw new DBusError(DbusErrors.NO_SUCH_DEVICE, `${device}: ${choice.reason}`);
      if (choice.backend === 'emulated') {
        emulated.update(handle.path, undefined, false);
        return registry.require(handle.path);
      }
      return this.parts.real.add(handle.path, describeHandle(handle), choice);
    } finally {
      await file.close();
    }
  }
}
