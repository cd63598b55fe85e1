// One command in flight per device. A native PR command occupies a libuv threadpool
// thread until the device answers, and nothing can cancel it; serializing per device means
// a hung device pins at most one thread, while other devices keep going. It also gives
// commands for one LU a defined order, as the target would see them on a single nexus.

export class DeviceQueue {
  private readonly lanes = new Map<string, Lane>();
  private readonly idleWaiters: Array<() => void> = [];

  /**
   * Runs `task` once every earlier task for `key` has settled. If `signal` aborts while the
   * task is still waiting, it leaves the queue and the promise rejects with the abort
   * reason; once started, a task always runs to completion.
   */
  run<T>(key: string, task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = { running: false, waiting: [] };
      this.lanes.set(key, lane);
    }
    return new Promise<T>((resolve, reject) => {
      const entry: Entry = {
        start: () => {
          signal?.removeEventListener('abort', onAbort);
          let promise: Promise<T>;
          try {
            promise = task();
          } catch (err) {
            promise = Promise.reject(err);
          }
          // Free the lane before the caller hears back, so the caller sees the queue as it is next.
          promise.then(
            (value) => {
              this.finish(key);
              resolve(value);
            },
            (err: unknown) => {
              this.finish(key);
              reject(err);
            },
          );
        },
      };
      const onAbort = (): void => {
        const waiting = this.lanes.get(key)?.waiting;
        const index = waiting ? waiting.indexOf(entry) : -1;
        if (index < 0) return; // already started
        waiting!.splice(index, 1);
        this.dropIfEmpty(key);
        reject(abortReason(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      lane!.waiting.push(entry);
      this.pump(key);
    });
  }

  /** Commands running or waiting, over all devices. */
  get size(): number {
    let n = 0;
    for (const lane of this.lanes.values()) n += lane.waiting.length + (lane.running ? 1 : 0);
    return n;
  }

  /** Resolves once nothing is running or waiting. */
  idle(): Promise<void> {
    if (this.lanes.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(key: string): void {
    const lane = this.lanes.get(key);
    if (!lane || lane.running) return;
    const next = lane.waiting.shift();
    if (!next) {
      this.dropIfEmpty(key);
      return;
    }
    lane.running = true;
    next.start();
  }

  private finish(key: string): void {
    const lane = this.lanes.get(key);
    if (lane) lane.running = false;
    this.pump(key);
  }

  private dropIfEmpty(key: string): void {
    const lane = this.lanes.get(key);
    if (lane && !lane.running && lane.waiting.length === 0) this.lanes.delete(key);
    if (this.lanes.size === 0) for (const wake of this.idleWaiters.splice(0)) wake();
  }
}

interface Entry {
  start(): void;
}

interface Lane {
  running: boolean;
  waiting: Entry[];
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted', 'AbortError');
}
