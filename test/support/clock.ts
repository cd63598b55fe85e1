// A clock the test moves by hand, for code that schedules with the global setTimeout and
// offers no other hook (the mpath backend's returning-path watch). While installed it stands
// in for setTimeout and clearTimeout. `advance(ms)` runs every timer that falls due, in the
// order real timers would run, and lets the promises each one starts settle before the next;
// `pending` counts what is still scheduled. "Nothing happens, however long we wait" is then
// something a test checks, instead of a sleep it hopes is long enough.
//
// Only code that calls setTimeout while the clock is installed sees it: install it at the
// start of a test and uninstall it at the end (mocha keeps its own timers).

import { settle } from './wait';

interface ManualTimer {
  readonly id: number;
  readonly at: number;
  readonly run: () => void;
}

const TIMER_ID = Symbol('manual timer id');

type TimerHandle = NodeJS.Timeout & { [TIMER_ID]?: number };

export class ManualClock {
  private time = 0;
  private nextId = 1;
  private readonly timers = new Map<number, ManualTimer>();
  private saved?: { setTimeout: typeof setTimeout; clearTimeout: typeof clearTimeout };

  install(): this {
    if (this.saved) throw new Error('the manual clock is already installed');
    this.saved = { setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout };
    globalThis.setTimeout = ((callback: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) =>
      this.schedule(() => callback(...args), ms ?? 0)) as unknown as typeof setTimeout;
    globalThis.clearTimeout = ((handle: TimerHandle | string | number | undefined) => this.clear(handle)) as typeof clearTimeout;
    return this;
  }

  /** Puts the real timers back; timers still pending on this clock never run. */
  uninstall(): void {
    if (!this.saved) return;
    globalThis.setTimeout = this.saved.setTimeout;
    globalThis.clearTimeout = this.saved.clearTimeout;
    this.saved = undefined;
    this.timers.clear();
  }

  /** Milliseconds since the clock was made. */
  now(): number {
    return this.time;
  }

  /** Timers scheduled and neither run nor cleared. */
  get pending(): number {
    return this.timers.size;
  }

  /** Moves time on by `ms`, running each timer that falls due (earliest first, then in the order set). */
  async advance(ms: number): Promise<void> {
    const until = this.time + ms;
    for (let next = this.nextDue(until); next; next = this.nextDue(until)) {
      this.timers.delete(next.id);
      this.time = next.at;
      next.run();
      await settle();
    }
    this.time = until;
  }

  private nextDue(until: number): ManualTimer | undefined {
    let first: ManualTimer | undefined;
    for (const timer of this.timers.values()) {
      if (timer.at <= until && (!first || timer.at < first.at)) first = timer;
    }
    return first;
  }

  private schedule(run: () => void, ms: number): NodeJS.Timeout {
    const id = this.nextId++;
    this.timers.set(id, { id, at: this.time + Math.max(0, ms), run });
    const handle = {
      [TIMER_ID]: id,
      ref: () => handle,
      unref: () => handle,
      hasRef: () => false,
      refresh: () => handle,
      [Symbol.toPrimitive]: () => id,
    };
    return handle as unknown as NodeJS.Timeout;
  }

  private clear(handle: TimerHandle | string | number | undefined): void {
    if (handle === undefined) return;
    const id = typeof handle === 'object' ? handle[TIMER_ID] : Number(handle);
    if (id !== undefined && this.timers.delete(id)) return;
    // A real timer set before the clock was installed.
    this.saved?.clearTimeout(handle as NodeJS.Timeout);
  }
}
