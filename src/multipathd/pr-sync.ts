// Keeps multipathd's view of a map's registration in step with what the PR helper did on its
// paths, in the order libmpathpersist keeps it: the map's prkey (the key multipathd registers
// on a path it adds or reinstates) before any path is registered, so a path reinstated
// meanwhile gets the new key, and its prstatus (whether multipathd registers such paths at
// all) after. Failures are logged, never thrown: the registration on the paths stands, and
// the returning-path watch covers what multipathd then misses.

import type { Logger } from 'pino';
import type { MultipathdClient } from './client';
import { formatPrKey } from './commands';
import type { ReservationKeySetting } from './multipath-conf';

export type PrSyncClient = Pick<MultipathdClient, 'getPrKey' | 'setPrKey' | 'unsetPrKey' | 'setPrStatus' | 'unsetPrStatus'>;

export class MultipathdPrSync {
  /**
   * @param client multipathd, or null to leave it alone.
   * @param setting multipath.conf's reservation_key: multipathd takes a new prkey only with `reservation_key file`.
   */
  constructor(
    private readonly client: PrSyncClient | null,
    private readonly setting: ReservationKeySetting,
    private readonly logger?: Pick<Logger, 'info' | 'warn'>,
  ) {}

  /**
   * Points multipathd's prkey for the map at `target` (null: no key) before paths are
   * registered. Returns how to undo it when the registration is refused.
   */
  async pointPrKeyAt(map: string, target: { key: bigint; aptpl: boolean } | null): Promise<() => Promise<void>> {
    const mpd = this.client;
    const nothing = async () => {};
    if (!mpd || this.setting.source !== 'file') return nothing;
    try {
      const current = await mpd.getPrKey(map);
      const same = target === null ? current === null : current !== null && current.key === target.key && current.aptpl === target.aptpl;
      if (same) return nothing;
      this.logger?.info({ map, key: target ? formatPrKey(target.key, false) : null, had: current ? formatPrKey(current.key, false) : null }, 'mpath: telling multipathd the reservation key');
      if (target) await mpd.setPrKey(map, target.key, target.aptpl);
      else await mpd.unsetPrKey(map);
      return async () => {
        try {
          if (current) await mpd.setPrKey(map, current.key, current.aptpl);
          else await mpd.unsetPrKey(map);
        } catch (err) {
          this.logger?.warn({ map, reason: (err as Error).message }, 'mpath: could not give multipathd its previous reservation key back');
        }
      };
    } catch (err) {
      this.logger?.warn({ map, reason: (err as Error).message }, 'mpath: could not tell multipathd the reservation key; reinstated paths may stay unregistered');
      return nothing;
    }
  }

  /**
   * multipathd registers reinstated paths only while the map's prstatus is set. Sent
   * unconditionally: setprstatus/unsetprstatus are idempotent, and one round trip costs less
   * than asking first.
   */
  async setPrStatus(map: string, registered: boolean): Promise<void> {
    const mpd = this.client;
    if (!mpd) return;
    try {
      if (registered) await mpd.setPrStatus(map);
      else await mpd.unsetPrStatus(map);
    } catch (err) {
      this.logger?.warn({ map, reason: (err as Error).message }, 'mpath: could not bring multipathd\'s prstatus in step; reinstated paths may stay unregistered');
    }
  }
}
