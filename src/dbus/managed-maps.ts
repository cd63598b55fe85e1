// The keys this daemon registered on dm-multipath maps, and the resync that puts them
// back into multipathd (prkey and prstatus) after multipathd restarts. multipathd forgets
// prstatus on restart and, without `reservation_key file`, never knew our key: a path
// that comes back would then not be re-registered (reference §2.3-2.5).

import type { Logger } from 'pino';
import type { MultipathdClient } from '../multipathd/client';
import { formatKey } from './names';

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
