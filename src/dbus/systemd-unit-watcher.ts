// Watches one systemd unit (multipathd.service) through systemd's D-Bus API: Unit
// ActiveState/SubState/LoadState and Service StatusText, kept current from
// org.freedesktop.DBus.Properties.PropertiesChanged on the unit's object. Works on any
// bus where something owns org.freedesktop.systemd1, which lets tests use a fake.

import { EventEmitter } from 'node:events';
import { Message, MessageType, Variant, type MessageBus } from 'dbus-next';
import { escapePathElement } from './names';

export const SYSTEMD_NAME = 'org.freedesktop.systemd1';
export const SYSTEMD_PATH = '/org/freedesktop/systemd1';
export const SYSTEMD_MANAGER_INTERFACE = 'org.freedesktop.systemd1.Manager';
export const SYSTEMD_UNIT_INTERFACE = 'org.freedesktop.systemd1.Unit';
export const SYSTEMD_SERVICE_INTERFACE = 'org.freedesktop.systemd1.Service';
const PROPERTIES_INTERFACE = 'org.freedesktop.DBus.Properties';
const DBUS_NAME = 'org.freedesktop.DBus';
const DBUS_PATH = '/org/freedesktop/DBus';

/** systemd's object path for a unit name (bus_label_escape: the same rule as escapePathElement). */
export function unitObjectPath(unit: string): string {
  return `${SYSTEMD_PATH}/unit/${escapePathElement(unit)}`;
}

export interface UnitState {
  /** 'loaded', 'not-found', 'masked', … */
  readonly loadState: string;
  /** 'active', 'reloading', 'inactive', 'failed', 'activating', 'deactivating'. */
  readonly activeState: string;
  readonly subState: string;
  /** What the service last sent with STATUS= (multipathd: init, startup, configure, up, shutdown). */
  readonly statusText: string;
}

export type UnitWatchState =
  | { readonly known: false; readonly reason: string }
  | { readonly known: true; readonly unit: UnitState };

export function isUnitUp(state: UnitWatchState): boolean {
  return state.known && (state.unit.activeState === 'active' || state.unit.activeState === 'reloading');
}

export interface UnitChange {
  readonly previous: UnitWatchState;
  readonly current: UnitWatchState;
}

export declare interface SystemdUnitWatcher {
  on(event: 'change', listener: (change: UnitChange) => void): this;
}

/**
 * Emits 'change' whenever what is known about the unit changes, including systemd
 * itself leaving or joining the bus. Never throws out of start(); failures become a
 * `known: false` state with a reason.
 */
export class SystemdUnitWatcher extends EventEmitter {
  readonly unit: string;
  private unitPath: string;
  private owner: string | undefined;
  private current: UnitWatchState = { known: false, reason: 'not started' };
  private readonly onMessage = (msg: Message) => this.handleMessage(msg);
  private closed = false;
  /** Serialises refreshes, so a late answer never overwrites a newer one. */
  private refreshing: Promise<void> = Promise.resolve();

  constructor(
    private readonly bus: MessageBus,
    unit = 'multipathd.service',
  ) {
    super();
    this.unit = unit;
    this.unitPath = unitObjectPath(unit);
  }

  get state(): UnitWatchState {
    return this.current;
  }

  async start(): Promise<void> {
    this.bus.on('message', this.onMessage);
    await Promise.all([
      this.addMatch(`type='signal',sender='${DBUS_NAME}',interface='${DBUS_NAME}',member='NameOwnerChanged',arg0='${SYSTEMD_NAME}'`),
      this.addMatch(`type='signal',sender='${SYSTEMD_NAME}',interface='${PROPERTIES_INTERFACE}',member='PropertiesChanged',path='${this.unitPath}'`),
    ]).catch(() => undefined);
    const owner = await this.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, 'GetNameOwner', 's', [SYSTEMD_NAME]).then(
      (reply) => reply.body[0] as string,
      () => undefined,
    );
    await this.attach(owner);
  }

  close(): void {
    this.closed = true;
    this.bus.removeListener('message', this.onMessage);
  }

  /** Re-reads the unit's properties now (also done on every change signal). */
  refresh(): Promise<void> {
    const run = this.refreshing.then(() => this.readUnit());
    this.refreshing = run.catch(() => undefined);
    return run;
  }

  private async attach(owner: string | undefined): Promise<void> {
    this.owner = owner;
    if (!owner) {
      this.set({ known: false, reason: `${SYSTEMD_NAME} is not on this bus` });
      return;
    }
    // systemd sends unit signals only while some client is subscribed.
    await this.call(SYSTEMD_NAME, SYSTEMD_PATH, SYSTEMD_MANAGER_INTERFACE, 'Subscribe', '', []).catch(() => undefined);
    const loaded = await this.call(SYSTEMD_NAME, SYSTEMD_PATH, SYSTEMD_MANAGER_INTERFACE, 'LoadUnit', 's', [this.unit]).then(
      (reply) => reply.body[0] as string,
      () => undefined,
    );
    if (loaded && loaded !== this.unitPath) {
      this.unitPath = loaded;
      await this.addMatch(`type='signal',sender='${SYSTEMD_NAME}',interface='${PROPERTIES_INTERFACE}',member='PropertiesChanged',path='${loaded}'`).catch(() => undefined);
    }
    await this.refresh();
  }

  private async readUnit(): Promise<void> {
    if (this.closed || !this.owner) return;
    try {
      const unit = await this.getAll(SYSTEMD_UNIT_INTERFACE);
      // A unit that is not a service (or a fake without it) simply has no StatusText.
      const service = await this.getAll(SYSTEMD_SERVICE_INTERFACE).catch(() => ({}) as Record<string, unknown>);
      this.set({
        known: true,
        unit: {
          loadState: text(unit.LoadState),
          activeState: text(unit.ActiveState),
          subState: text(unit.SubState),
          statusText: text(service.StatusText),
        },
      });
    } catch (error) {
      this.set({ known: false, reason: `cannot read ${this.unit} from systemd: ${(error as Error).message}` });
    }
  }

  private handleMessage(msg: Message): void {
    if (this.closed || msg.type !== MessageType.SIGNAL) return;
    if (msg.interface === DBUS_NAME && msg.member === 'NameOwnerChanged' && msg.body[0] === SYSTEMD_NAME) {
      const newOwner = msg.body[2] as string;
      void this.attach(newOwner || undefined);
      return;
    }
    if (msg.interface !== PROPERTIES_INTERFACE || msg.member !== 'PropertiesChanged' || msg.path !== this.unitPath) return;
    // Only systemd's own connection speaks for the unit; anyone may send a signal with this path.
    if (!this.owner || msg.sender !== this.owner) return;
    const [iface, changed, invalidated] = msg.body as [string, Record<string, Variant>, string[]];
    if (iface !== SYSTEMD_UNIT_INTERFACE && iface !== SYSTEMD_SERVICE_INTERFACE) return;
    if (invalidated.length > 0 || !this.current.known) {
      void this.refresh();
      return;
    }
    const unit = { ...this.current.unit };
    if (changed.ActiveState) unit.activeState = text(changed.ActiveState.value);
    if (changed.SubState) unit.subState = text(changed.SubState.value);
    if (changed.LoadState) unit.loadState = text(changed.LoadState.value);
    if (changed.StatusText) unit.statusText = text(changed.StatusText.value);
    this.set({ known: true, unit });
  }

  private set(next: UnitWatchState): void {
    if (this.closed) return;
    const previous = this.current;
    if (sameState(previous, next)) return;
    this.current = next;
    this.emit('change', { previous, current: next } satisfies UnitChange);
  }

  private async getAll(iface: string): Promise<Record<string, unknown>> {
    const reply = await this.call(SYSTEMD_NAME, this.unitPath, PROPERTIES_INTERFACE, 'GetAll', 's', [iface]);
    const values: Record<string, unknown> = {};
    for (const [name, variant] of Object.entries(reply.body[0] as Record<string, Variant>)) values[name] = variant.value;
    return values;
  }

  private addMatch(rule: string): Promise<unknown> {
    return this.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, 'AddMatch', 's', [rule]);
  }

  private async call(destination: string, path: string, iface: string, member: string, signature: string, body: unknown[]): Promise<Message> {
    const reply = await this.bus.call(new Message({ destination, path, interface: iface, member, signature, body }));
    if (!reply) throw new Error(`${member}: no reply`);
    return reply;
  }
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function sameState(a: UnitWatchState, b: UnitWatchState): boolean {
  if (!a.known || !b.known) return a.known === b.known && (a as { reason?: string }).reason === (b as { reason?: string }).reason;
  return (
    a.unit.activeState === b.unit.activeState &&
    a.unit.subState === b.unit.subState &&
    a.unit.loadState === b.unit.loadState &&
    a.unit.statusText === b.unit.statusText
  );
}
