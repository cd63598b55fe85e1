// org.mpathpr.Device1, one object per known device under /org/mpathpr/Manager1/Device:
// its PR state as properties (read live from the controller's snapshot) and the admin
// methods, which the controller authorizes.

import { DEVICE_PROPERTIES, deviceProperties, type DevicePropertyName, type DeviceSnapshot } from './device-state';
import { SpecifiedInterface, type InterfaceSpec } from './interface-spec';
import type { BusCaller } from './method-calls';
import { DEVICE_INTERFACE } from './names';

export interface DeviceController {
  snapshot(devicePath: string): DeviceSnapshot;
  register(devicePath: string, key: bigint, caller: BusCaller | undefined): Promise<void>;
  reserve(devicePath: string, key: bigint, type: number, caller: BusCaller | undefined): Promise<void>;
  release(devicePath: string, key: bigint, type: number, caller: BusCaller | undefined): Promise<void>;
  preempt(devicePath: string, key: bigint, victim: bigint, type: number, abort: boolean, caller: BusCaller | undefined): Promise<void>;
  setPathState(devicePath: string, index: number, state: 'failed' | 'active', caller: BusCaller | undefined): Promise<void>;
}

/** The signatures of deviceProperties()' values. */
const PROPERTY_SIGNATURES: Record<DevicePropertyName, string> = {
  Path: 's',
  Wwid: 's',
  Backend: 's',
  Generation: 'u',
  Keys: 'at',
  ReservationKey: 't',
  ReservationType: 'u',
  Paths: 'a(sss)',
};

export const DEVICE1: InterfaceSpec = {
  name: DEVICE_INTERFACE,
  properties: PROPERTY_SIGNATURES,
  methods: {
    Register: { in: 't', out: '', args: ['key'] },
    Reserve: { in: 'tu', out: '', args: ['key', 'type'] },
    Release: { in: 'tu', out: '', args: ['key', 'type'] },
    Preempt: { in: 'ttub', out: '', args: ['key', 'victimKey', 'type', 'abort'] },
    FailPath: { in: 'u', out: '', args: ['index'] },
    ReinstatePath: { in: 'u', out: '', args: ['index'] },
  },
};

export class Device1Interface extends SpecifiedInterface {
  static {
    // Each property is the live snapshot's value, as deviceProperties() gives it.
    for (const name of DEVICE_PROPERTIES) {
      Object.defineProperty(this.prototype, name, {
        get(this: Device1Interface) {
          return deviceProperties(this.controller.snapshot(this.devicePath))[name];
        },
      });
    }
    this.declare(DEVICE1);
  }

  constructor(
    private readonly controller: DeviceController,
    readonly devicePath: string,
  ) {
    super(DEVICE1);
  }

  Register(key: bigint, caller?: BusCaller): Promise<void> {
    return this.controller.register(this.devicePath, key, caller);
  }
  Reserve(key: bigint, type: number, caller?: BusCaller): Promise<void> {
    return this.controller.reserve(this.devicePath, key, type, caller);
  }
  Release(key: bigint, type: number, caller?: BusCaller): Promise<void> {
    return this.controller.release(this.devicePath, key, type, caller);
  }
  Preempt(key: bigint, victim: bigint, type: number, abort: boolean, caller?: BusCaller): Promise<void> {
    return this.controller.preempt(this.devicePath, key, victim, type, abort, caller);
  }
  FailPath(index: number, caller?: BusCaller): Promise<void> {
    return this.controller.setPathState(this.devicePath, index, 'failed', caller);
  }
  ReinstatePath(index: number, caller?: BusCaller): Promise<void> {
    return this.controller.setPathState(this.devicePath, index, 'active', caller);
  }
}
