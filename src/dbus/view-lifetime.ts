// The D-Bus view runs until the daemon closes it or the bus goes away. Its pieces ask
// here whether it still runs, run their deferred work through safely() (a view's failure
// is logged, never thrown into a command), and register what to undo when it stops.

import type { Logger } from 'pino';

export class ViewLifetime {
  private readonly stopping = new AbortController();
  private readonly cleanups: (() => void)[] = [];

  constructor(private readonly logger: Logger) {}

  get stopped(): boolean {
    return this.stopping.signal.aborted;
  }

  /** Aborts the view's own PR IN refreshes that have not started when it stops. */
  get signal(): AbortSignal {
    return this.stopping.signal;
  }

  /** Runs at stop(), in registration order. */
  onStop(cleanup: () => void): void {
    this.cleanups.push(cleanup);
  }

  /** Calls work every ms (0: never) until the view stops; the timer keeps no process alive. */
  every(ms: number, work: () => unknown): void {
    if (ms <= 0) return;
    const timer = setInterval(work, ms);
    timer.unref();
    this.onStop(() => clearInterval(timer));
  }

  /** Runs view work while the view runs; a failure (thrown or rejected) is logged, never thrown into a caller. */
  safely(what: string, work: () => unknown): void {
    if (this.stopped) return;
    try {
      const result = work();
      if (result instanceof Promise) result.catch((error) => this.logger.warn({ err: error }, `D-Bus ${what} failed`));
    } catch (error) {
      this.logger.warn({ err: error }, `D-Bus ${what} failed`);
    }
  }

  /** Stops every timer, observer and watcher; false when already stopped. */
  stop(): boolean {
    if (this.stopped) return false;
    this.stopping.abort();
    for (const cleanup of this.cleanups.splice(0)) cleanup();
    return true;
  }
}
