// The exported D-Bus interfaces. Members are declared with configureMembers: dbus-next's
// decorators do not work under TypeScript (dbusjs/node-dbus-next#101). Every property is
// read-only and read live from the controller; every method defers to it.

import { interface as dbusInterface } from 'dbus-next';
import { DEVICE_INTERFACE, MANAGER_INTERFACE } from './names';
import { deviceProperties, type DeviceSnapshot } from './device-state';

interface IntrospectionArg {
  $: { name?: string; direction?: string; type: string };
}
interface IntrospectionMember {
  $: { name: string };
  arg?: IntrospectionArg[];
  annotation?: { $: { name: string; value: string } }[];
}
interface IntrospectionInterface {
  method?: IntrospectionMember[];
  signal?: IntrospectionMember[];
  property?: IntrospectionMember[];
}

/**
 * dbus-next introspects arguments without names; busctl, d-feet and generated proxies
 * show the names, so they are added here (in declaration order: in-args, then out-args).
 * Properties that change without a signal say so with the standard annotation.
 */
function describeMembers(
  xml: IntrospectionInterface,
  argNames: Record<string, readonly string[]>,
  silentProperties: readonly string[] = [],
): IntrospectionInterface {
  for (const member of [...(xml.method ?? []), ...(xml.signal ?? [])]) {
    const names = argNames[member.$.name];
    member.arg?.forEach((arg, i) => {
      if (names?.[i]) arg.$ = { name: names[i], ...arg.$ };
    });
  }
  for (const property of xml.property ?? []) {
    if (silentProperties.includes(property.$.name)) {
      property.annotation = [{ $: { name: 'org.freedesktop.DBus.Property.EmitsChangedSignal', value: 'false' } }];
    }
  }
  return xml;
}

const baseIntrospect = (dbusInterface.Interface.prototype as unknown as { $introspect(): IntrospectionInterface }).$introspect;

/** The Backends property: one (name, healthy, detail) per backend and for multipathd. */
export type BackendStatus = readonly [name: string, healthy: boolean, detail: string];

export interface ManagerController {
  readonly version: string;
  backends(): BackendStatus[];
  counters(): { connections: number; commands: bigint; prIn: bigint; prOut: bigint; errors: bigint };
  readonly degraded: boolean;
  listDevices(): string[];
  doctor(device: string, repair: boolean): Promise<string>;
}

export class Manager1Interface extends dbusInterface.Interface {
  constructor(private readonly controller: ManagerController) {
    super(MANAGER_INTERFACE);
  }

  get Version(): string {
    return this.controller.version;
  }
  get Backends(): BackendStatus[] {
    return this.controller.backends();
  }
  get Connections(): number {
    return this.controller.counters().connections;
  }
  get Commands(): bigint {
    return this.controller.counters().commands;
  }
  get PrIn(): bigint {
    return this.controller.counters().prIn;
  }
  get PrOut(): bigint {
    return this.controller.counters().prOut;
  }
  get Errors(): bigint {
    return this.controller.counters().errors;
  }
  get Degraded(): boolean {
    return this.controller.degraded;
  }

  $introspect(): IntrospectionInterface {
    return describeMembers(
      baseIntrospect.call(this),
      { ListDevices: ['devices'], Doctor: ['device', 'repair', 'report'], ReservationChanged: ['device', 'holderKey', 'type'], Fenced: ['device', 'preemptedKey', 'byKey'] },
      // Counters change with every command; read them when needed.
      ['Connections', 'Commands', 'PrIn', 'PrOut', 'Errors'],
    );
  }

  ListDevices(): string[] {
    return this.controller.listDevices();
  }

  Doctor(device: string, repair: boolean): Promise<string> {
    return this.controller.doctor(device, repair);
  }

  /** Signal: the reservation of a device changed holder or type (holderKey '' and type 0: none). */
  ReservationChanged(device: string, holderKey: string, type: number): [string, string, number] {
    return [device, holderKey, type];
  }

  /** Signal: a PREEMPT (AND ABORT) through this daemon removed another key's registrations. */
  Fenced(device: string, preemptedKey: bigint, byKey: bigint): [string, bigint, bigint] {
    return [device, preemptedKey, byKey];
  }
}

const READ = 'read' as const;

Manager1Interface.configureMembers({
  properties: {
    Version: { signature: 's', access: READ },
    Backends: { signature: 'a(sbs)', access: READ },
    Connections: { signature: 'u', access: READ },
    Commands: { signature: 't', access: READ },
    PrIn: { signature: 't', access: READ },
    PrOut: { signature: 't', access: READ },
    Errors: { signature: 't', access: READ },
    Degraded: { signature: 'b', access: READ },
  },
  methods: {
    ListDevices: { inSignature: '', outSignature: 'ao' },
    Doctor: { inSignature: 'sb', outSignature: 's' },
  },
  signals: {
    ReservationChanged: { signature: 'osu' },
    Fenced: { signature: 'ott' },
  },
});

export interface DeviceController {
  snapshot(devicePath: string): DeviceSnapshot;
  register(devicePath: string, key: bigint): Promise<void>;
  reserve(devicePath: string, key: bigint, type: number): Promise<void>;
  release(devicePath: string, key: bigint, type: number): Promise<void>;
  preempt(devicePath: string, key: bigint, victim: bigint, type: number, abort: boolean): Promise<void>;
  setPathState(devicePath: string, index: number, state: 'failed' | 'active'): Promise<void>;
}

export class Device1Interface extends dbusInterface.Interface {
  constructor(
    private readonly controller: DeviceController,
    readonly devicePath: string,
  ) {
    super(DEVICE_INTERFACE);
  }

  private get values() {
    return deviceProperties(this.controller.snapshot(this.devicePath));
  }

  get Path(): unknown {
    return this.values.Path;
  }
  get Wwid(): unknown {
    return this.values.Wwid;
  }
  get Backend(): unknown {
    return this.values.Backend;
  }
  get Generation(): unknown {
    return this.values.Generation;
  }
  get Keys(): unknown {
    return this.values.Keys;
  }
  get ReservationKey(): unknown {
    return this.values.ReservationKey;
  }
  get ReservationType(): unknown {
    return this.values.ReservationType;
  }
  get Paths(): unknown {
    return this.values.Paths;
  }

  $introspect(): IntrospectionInterface {
    return describeMembers(baseIntrospect.call(this), {
      Register: ['key'],
      Reserve: ['key', 'type'],
      Release: ['key', 'type'],
      Preempt: ['key', 'victimKey', 'type', 'abort'],
      FailPath: ['index'],
      ReinstatePath: ['index'],
    });
  }

  Register(key: bigint): Promise<void> {
    return this.controller.register(this.devicePath, key);
  }
  Reserve(key: bigint, type: number): Promise<void> {
    return this.controller.reserve(this.devicePath, key, type);
  }
  Release(key: bigint, type: number): Promise<void> {
    return this.controller.release(this.devicePath, key, type);
  }
  Preempt(key: bigint, victim: bigint, type: number, abort: boolean): Promise<void> {
    return this.controller.preempt(this.devicePath, key, victim, type, abort);
  }
  FailPath(index: number): Promise<void> {
    return this.controller.setPathState(this.devicePath, index, 'failed');
  }
  ReinstatePath(index: number): Promise<void> {
    return this.controller.setPathState(this.devicePath, index, 'active');
  }
}

Device1Interface.configureMembers({
  properties: {
    Path: { signature: 's', access: READ },
    Wwid: { signature: 's', access: READ },
    Backend: { signature: 's', access: READ },
    Generation: { signature: 'u', access: READ },
    Keys: { signature: 'at', access: READ },
    ReservationKey: { signature: 't', access: READ },
    ReservationType: { signature: 'u', access: READ },
    Paths: { signature: 'a(sss)', access: READ },
  },
  methods: {
    Register: { inSignature: 't', outSignature: '' },
    Reserve: { inSignature: 'tu', outSignature: '' },
    Release: { inSignature: 'tu', outSignature: '' },
    Preempt: { inSignature: 'ttub', outSignature: '' },
    FailPath: { inSignature: 'u', outSignature: '' },
    ReinstatePath: { inSignature: 'u', outSignature: '' },
  },
});
