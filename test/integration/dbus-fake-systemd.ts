// A FAKE org.freedesktop.systemd1 for tests: real systemd cannot run here. It exports
// the Manager methods the watcher calls (Subscribe, LoadUnit) and one unit object with
// the Unit and Service properties it reads, and emits PropertiesChanged the way systemd
// does when the test flips the unit's state.

import { interface as dbusInterface, type MessageBus } from 'dbus-next';
import { unitObjectPath } from '../../src/dbus/systemd-unit-watcher';

class FakeSystemdManager extends dbusInterface.Interface {
  subscribed = 0;
  constructor(private readonly unitPaths: Map<string, string>) {
    super('org.freedesktop.systemd1.Manager');
  }
  Subscribe(): void {
    this.subscribed++;
  }
  LoadUnit(name: string): string {
    return this.unitPaths.get(name) ?? unitObjectPath(name);
  }
}
FakeSystemdManager.configureMembers({
  methods: {
    Subscribe: { inSignature: '', outSignature: '' },
    LoadUnit: { inSignature: 's', outSignature: 'o' },
  },
});

class FakeUnit extends dbusInterface.Interface {
  LoadState = 'loaded';
  ActiveState = 'active';
  SubState = 'running';
  constructor() {
    super('org.freedesktop.systemd1.Unit');
  }
}
FakeUnit.configureMembers({
  properties: {
    LoadState: { signature: 's', access: 'read' },
    ActiveState: { signature: 's', access: 'read' },
    SubState: { signature: 's', access: 'read' },
  },
});

class FakeService extends dbusInterface.Interface {
  StatusText = 'up';
  constructor() {
    super('org.freedesktop.systemd1.Service');
  }
}
FakeService.configureMembers({ properties: { StatusText: { signature: 's', access: 'read' } } });

export interface FakeUnitState {
  activeState?: string;
  subState?: string;
  statusText?: string;
  loadState?: string;
}

/** The fake systemd, on its own bus connection (as the real one would be). */
export class FakeSystemd {
  readonly manager: FakeSystemdManager;
  private readonly unit = new FakeUnit();
  private readonly service = new FakeService();

  private constructor(
    readonly bus: MessageBus,
    readonly unitName: string,
  ) {
    this.manager = new FakeSystemdManager(new Map([[unitName, unitObjectPath(unitName)]]));
  }

  static async start(bus: MessageBus, unitName = 'multipathd.service', initial: FakeUnitState = {}): Promise<FakeSystemd> {
    const fake = new FakeSystemd(bus, unitName);
    fake.assign(initial);
    bus.export('/org/freedesktop/systemd1', fake.manager);
    bus.export(unitObjectPath(unitName), fake.unit);
    bus.export(unitObjectPath(unitName), fake.service);
    await bus.requestName('org.freedesktop.systemd1', 0);
    return fake;
  }

  private assign(state: FakeUnitState): void {
    if (state.activeState !== undefined) this.unit.ActiveState = state.activeState;
    if (state.subState !== undefined) this.unit.SubState = state.subState;
    if (state.loadState !== undefined) this.unit.LoadState = state.loadState;
    if (state.statusText !== undefined) this.service.StatusText = state.statusText;
  }

  /** Changes the unit and emits PropertiesChanged on the interfaces that changed. */
  set(state: FakeUnitState): void {
    this.assign(state);
    const unitChanges: Record<string, string> = {};
    if (state.activeState !== undefined) unitChanges.ActiveState = state.activeState;
    if (state.subState !== undefined) unitChanges.SubState = state.subState;
    if (state.loadState !== undefined) unitChanges.LoadState = state.loadState;
    if (Object.keys(unitChanges).length > 0) dbusInterface.Interface.emitPropertiesChanged(this.unit, unitChanges, []);
    if (state.statusText !== undefined) dbusInterface.Interface.emitPropertiesChanged(this.service, { StatusText: state.statusText }, []);
  }
}
