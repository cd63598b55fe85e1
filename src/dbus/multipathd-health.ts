// multipathd as Manager1 shows it: its health in the Backends property (probed at start,
// on a timer and on unit changes), and Degraded while systemd knows multipathd.service
// and it is not running.

import type { Logger } from 'pino';
import type { MultipathdPrApi } from './managed-maps';
import type { BackendStatus } from './manager1';
import { isUnitUp, type UnitChange, type UnitWatchState } from './systemd-unit-watcher';

/** Degraded: systemd knows multipathd.service, and it is not running. */
export function isDegradedState(state: UnitWatchState): boolean {
  return state.known && state.unit.loadState === 'loaded' && !isUnitUp(state);
}

export class MultipathdHealth {
  private current: BackendStatus = ['multipathd', false, 'not probed yet'];
  private isDegraded = false;

  constructor(
    /** null: never talk to multipathd. */
    private readonly client: MultipathdPrApi | null,
    private readonly logger: Logger,
    private readonly isStopped: () => boolean,
    /** Told when a Manager1 property this reads changed value. */
    private readonly changed: (property: 'Backends' | 'Degraded') => void,
    /** The unit watched, for logs. */
    private readonly unit?: string,
  ) {}

  /** multipathd's row of the Backends property. */
  get status(): BackendStatus {
    return this.current;
  }

  get degraded(): boolean {
    return this.isDegraded;
  }

  /** Re-reads multipathd's health for the Backends property. Never throws. */
  async probe(): Promise<void> {
    const status = await this.ask();
    const before = this.current;
    this.current = status;
    if (!this.isStopped() && (before[1] !== status[1] || before[2] !== status[2])) this.changed('Backends');
  }

  /** Follows multipathd.service into Degraded and out of it, with one log line each way. */
  followUnit({ current }: UnitChange): void {
    const degraded = isDegradedState(current);
    if (degraded === this.isDegraded) return;
    this.isDegraded = degraded;
    if (degraded) {
      const state = current.known ? `${current.unit.activeState} (${current.unit.subState})` : '';
      this.logger.warn({ unit: this.unit, state }, `multipathd.service is ${state}: Degraded; PR commands keep being answered, keys resync when it is back`);
    } else {
      this.logger.info({ unit: this.unit }, 'multipathd.service is active again: no longer degraded');
    }
    this.changed('Degraded');
  }

  private async ask(): Promise<BackendStatus> {
    if (!this.client) return ['multipathd', false, 'not probed (no multipathd client configured)'];
    try {
      const daemon = await this.client.showDaemon();
      const version = await this.client.version().catch(() => null);
      return ['multipathd', true, `${version ? version.text : 'multipath-tools (version unknown)'}, pid ${daemon.pid}, ${daemon.state}`];
    } catch (error) {
      return ['multipathd', false, `unreachable: ${(error as Error).message}`];
    }
  }
}
