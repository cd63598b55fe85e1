// A registration that could not reach every path of a map leaves the unreachable paths
// without the key. multipathd registers a path when its checker sees it come back, but only
// if the checker saw it go down: a path offline for less than one checker interval (a
// REGISTER that met a path in a short outage) never looks reinstated to multipathd and stays
// unregistered, so I/O through it fails with RESERVATION CONFLICT once a reservation is held.
//
// This watch closes that gap: for each map it keeps the key last registered, and until every
// path of the map answers, it asks the backend to check again with a growing interval. The
// backend's check (run in the map's command queue, so it never races the guest's own
// commands) registers the key on the paths that answer again, and ends the watch once every
// path answers or once the key is registered nowhere (another node preempted it, or it was
// unregistered), so a fenced host is never registered again.

import { formatDevNumber, type DevNumber } from '../../device';

export interface WatchedRegistration {
  readonly key: bigint;
  readonly aptpl: boolean;
}

/** A map is named by its dev_t. */
export type ReturningPathCheck = (map: DevNumber, registration: WatchedRegistration) => Promise<'done' | 'waiting'>;

export interface ReturningPathWatchOptions {
  /** First recheck after this long; doubles up to maxIntervalMs. */
  readonly intervalMs?: number;
  readonly maxIntervalMs?: number;
  readonly onError?: (map: DevNumber, err: unknown) => void;
}

interface Watch {
  readonly map: DevNumber;
  readonly registration: WatchedRegistration;
  timer?: NodeJS.Timeout;
  intervalMs: number;
}

export class ReturningPathWatch {
  private readonly watches = new Map<string, Watch>();
  private readonly intervalMs: number;
  private readonly maxIntervalMs: number;
  private closed = false;

  constructor(
    private readonly check: ReturningPathCheck,
    private readonly options: ReturningPathWatchOptions = {},
  ) {
    this.intervalMs = options.intervalMs ?? 500;
    this.maxIntervalMs = options.maxIntervalMs ?? 10_000;
  }

  /** Starts (or restarts, with a new key) watching the map's unreachable paths. */
  watch(map: DevNumber, registration: WatchedRegistration): void {
    if (this.closed) return;
    this.cancel(map);
    const mapId = formatDevNumber(map);
    const entry: Watch = { map, registration, intervalMs: this.intervalMs };
    this.watches.set(mapId, entry);
    this.schedule(mapId, entry);
  }

  /** Stops watching: a later command changed the map's registration. */
  cancel(map: DevNumber): void {
    this.stop(formatDevNumber(map));
  }

  watching(map: DevNumber): WatchedRegistration | undefined {
    return this.watches.get(formatDevNumber(map))?.registration;
  }

  close(): void {
    this.closed = true;
    for (const mapId of [...this.watches.keys()]) this.stop(mapId);
  }

  private stop(mapId: string): void {
    const entry = this.watches.get(mapId);
    if (entry?.timer) clearTimeout(entry.timer);
    this.watches.delete(mapId);
  }

  private schedule(mapId: string, entry: Watch): void {
    entry.timer = setTimeout(() => void this.recheck(mapId, entry), entry.intervalMs);
    // A watch never keeps the daemon alive on its own.
    entry.timer.unref();
  }

  private async recheck(mapId: string, entry: Watch): Promise<void> {
    entry.timer = undefined;
    let outcome: 'done' | 'waiting' = 'waiting';
    try {
      outcome = await this.check(entry.map, entry.registration);
    } catch (err) {
      this.options.onError?.(entry.map, err);
    }
    // The map may have been cancelled or re-watched while the check ran.
    if (this.watches.get(mapId) !== entry) return;
    if (outcome === 'done') {
      this.watches.delete(mapId);
      return;
    }
    entry.intervalMs = Math.min(entry.intervalMs * 2, this.maxIntervalMs);
    this.schedule(mapId, entry);
  }
}
