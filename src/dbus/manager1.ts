// org.mpathpr.Manager1 at /org/mpathpr/Manager1: the daemon's health, its counters, the
// devices it knows, Doctor, and the ReservationChanged and Fenced signals. Properties
// are read live from the controller; methods defer to it.

import { SpecifiedInterface, type InterfaceSpec } from './interface-spec';
import type { BusCaller } from './method-calls';
import { MANAGER_INTERFACE } from './names';

/** The Backends property: one (name, healthy, detail) per backend and for multipathd. */
export type BackendStatus = readonly [name: string, healthy: boolean, detail: string];

export interface ManagerCounters {
  readonly connections: number;
  readonly commands: bigint;
  readonly prIn: bigint;
  readonly prOut: bigint;
  readonly errors: bigint;
}

export interface ManagerController {
  readonly version: string;
  backends(): BackendStatus[];
  counters(): ManagerCounters;
  readonly degraded: boolean;
  listDevices(): string[];
  doctor(device: string, repair: boolean, caller: BusCaller | undefined): Promise<string>;
}

export const MANAGER1: InterfaceSpec = {
  name: MANAGER_INTERFACE,
  properties: {
    Version: 's',
    Backends: 'a(sbs)',
    Connections: 'u',
    Commands: 't',
    PrIn: 't',
    PrOut: 't',
    Errors: 't',
    Degraded: 'b',
  },
  // Counters change with every command; read them when needed.
  silentProperties: ['Connections', 'Commands', 'PrIn', 'PrOut', 'Errors'],
  methods: {
    ListDevices: { in: '', out: 'ao', args: ['devices'] },
    Doctor: { in: 'sb', out: 's', args: ['device', 'repair', 'report'] },
  },
  signals: {
    ReservationChanged: { signature: 'osu', args: ['device', 'holderKey', 'type'] },
    Fenced: { signature: 'ott', args: ['device', 'preemptedKey', 'byKey'] },
  },
};

export class Manager1Interface extends SpecifiedInterface {
  static {
    this.declare(MANAGER1);
  }

  constructor(private readonly controller: ManagerController) {
    super(MANAGER1);
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

  ListDevices(): string[] {
    return this.controller.listDevices();
  }

  Doctor(device: string, repair: boolean, caller?: BusCaller): Promise<string> {
    return this.controller.doctor(device, repair, caller);
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
