// The keys this daemon registered on dm-multipath maps, and the resync that puts them
// back into multipathd (prkey and prstatus) after multipathd restarts. multipathd forgets
// prstatus on restart and, without `reservation_key file`, never knew our key: a path
// that comes back would then not be re-registered (reference §2.3-2.5).

import type { Logger } from 'pino';
import type { MultipathdClient } from '../multipathd/client';
import { PrOutAction } from '../scsi/constants';
import type { DecodedPrOut } from './command-observer';
import { formatKey } from './names';
import { isUnitUp, type UnitChange } from './systemd-unit-watcher';

/** What the resync and the health probe need from a multipathd client (the real one, or a test double). */
export type MultipathdPrApi = Pick<MultipathdClient, 'showDaemon' | 'version' | 'setPrKey' | 'setPrStatus'>;

export interface ManagedKey {
  /** The map's name (dm name, e.g. mpatha), as multipathd commands take it. */
  readonly map: string;
  readonly key: bigint;
  readonly aptpl: boolean;
}

/** In memory: after a daemon restart the record starts empty (multipathd's own prkeys file persists). */
export class ManagedMaps {
  private readonly keys = new Map<string, ManagedKey>();

  record(map: string, key: bigint, aptpl: boolean): void {
    if (key === 0n) this.keys.delete(map);
    else this.keys.set(map, { map, key, aptpl });
  }

  forget(map: string): void {
    this.keys.delete(map);
  }

  /** Follows a PR OUT that ended GOOD on the map: REGISTER records the key (0 unregisters), CLEAR forgets it. */
  recordPrOut(map: string, command: DecodedPrOut): void {
    switch (command.action) {
      case PrOutAction.REGISTER:
      case PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY:
        this.record(map, command.serviceActionKey, command.aptpl);
        break;
      case PrOutAction.CLEAR:
        this.forget(map);
        break;
      default:
    }
  }

  list(): ManagedKey[] {
    return [...this.keys.values()].sort((a, b) => a.map.localeCompare(b.map));
  }
}

export interface ResyncOutcome {
  readonly map: string;
  readonly key: string;
  /** setprkey's outcome: 'ok', or why it failed (multipathd answers "fail" without `reservation_key file`). */
  readonly prkey: string;
  readonly prstatus: string;
}

/**
 * Tells multipathd every key we hold: setprkey then setprstatus, map by map, in order.
 * Never throws; each failure is reported and logged, and the next map is still tried.
 */
export async function resyncManagedMaps(client: MultipathdPrApi, maps: readonly ManagedKey[], logger: Logger): Promise<ResyncOutcome[]> {
  const outcomes: ResyncOutcome[] = [];
  for (const { map, key, aptpl } of maps) {
    const prkey = await client.setPrKey(map, key, aptpl).then(
      () => 'ok',
      (error: Error) => error.message,
    );
    const prstatus = await client.setPrStatus(map).then(
      () => 'ok',
      (error: Error) => error.message,
    );
    const outcome = { map, key: formatKey(key), prkey, prstatus };
    if (prkey === 'ok' && prstatus === 'ok') logger.info(outcome, `multipathd resync: ${map} has key ${outcome.key} again`);
    else logger.warn(outcome, `multipathd resync of ${map} incomplete`);
    outcomes.push(outcome);
  }
  return outcomes;
}

/**
 * Resync when the unit becomes active. multipathd may report READY before its socket
 * answers; its later STATUS=up is the second chance for maps that failed the first time.
 */
export function resyncDue({ previous, current }: UnitChange, lastResyncFailed: boolean): boolean {
  const cameUp = !isUnitUp(previous) && isUnitUp(current);
  const reportedUp = isUnitUp(current) && previous.known && current.known && previous.unit.statusText !== 'up' && current.unit.statusText === 'up';
  return cameUp || (reportedUp && lastResyncFailed);
}

/** The resync as a serialised job: one at a time, each followed by `afterResync` with the maps it covered. */
export class MapKeyResync {
  readonly maps = new ManagedMaps();
  private outcomes: ResyncOutcome[] = [];
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    /** null: never talk to multipathd (every resync is empty). */
    private readonly client: MultipathdPrApi | null,
    private readonly logger: Logger,
    private readonly isStopped: () => boolean,
    /** What to re-read once multipathd has the keys again (its health, the maps' devices). */
    private readonly afterResync: (maps: ReadonlySet<string>) => Promise<void>,
  ) {}

  /** The outcome of the last resync: a failed one is retried when multipathd later reports STATUS=up. */
  get last(): readonly ResyncOutcome[] {
    return this.outcomes;
  }

  get lastFailed(): boolean {
    return this.outcomes.some((r) => r.prkey !== 'ok' || r.prstatus !== 'ok');
  }

  /** Puts every key we registered on a map back into multipathd. Serialised; never throws. */
  run(): Promise<readonly ResyncOutcome[]> {
    const client = this.client;
    const run = this.chain.then(async () => {
      if (!client || this.isStopped()) return [];
      const maps = this.maps.list();
      this.logger.info({ maps: maps.map((m) => m.map) }, `multipathd is up: resyncing ${maps.length} map(s)`);
      this.outcomes = await resyncManagedMaps(client, maps, this.logger);
      // multipathd may have re-registered paths while it came back: show what the maps hold now.
      await this.afterResync(new Set(maps.map((m) => m.map)));
      return this.outcomes;
    });
    this.chain = run.catch(() => undefined);
    return run;
  }
}
