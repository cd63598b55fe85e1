// Waiting in tests. A test waits for an event: a promise it resolves itself (deferred), or a
// condition another process or a timer makes true (eventually). The only time limit is a
// deadline that turns "it never happened" into a failure naming what was awaited; no test
// waits a fixed time and then checks.

// Taken when this module loads, so polling keeps real time while a test runs on a ManualClock.
const realSetTimeout = globalThis.setTimeout;

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** A promise with its resolve and reject exposed, for what the test finishes by hand. */
export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export interface EventuallyOptions {
  /** How long before giving up (default 10 s). */
  readonly timeoutMs?: number;
  /** How often to ask again (default 20 ms). */
  readonly intervalMs?: number;
  /** What the failure message shows as the last state seen. */
  readonly describe?: () => string;
  /** Why the condition can no longer come true (the process that would make it true ended), or undefined: fails at once. */
  readonly failWhen?: () => string | undefined;
}

/**
 * Resolves with the first answer of `probe` that is neither false nor undefined, asking again
 * until then. A probe that throws has not succeeded yet; its last error is in the failure.
 * For conditions another process, a timer or the kernel makes true, where no event is offered.
 */
export async function eventually<T>(
  probe: () => T | false | undefined | Promise<T | false | undefined>,
  what: string,
  options: number | EventuallyOptions = {},
): Promise<T> {
  const { timeoutMs = 10_000, intervalMs = 20, describe, failWhen } = typeof options === 'number' ? { timeoutMs: options } : options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== false && value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    const hopeless = failWhen?.();
    if (hopeless !== undefined) throw new Error(`${hopeless} before ${what}${describe ? `: ${describe()}` : ''}`);
    if (Date.now() > deadline) {
      const seen = describe ? `; last state: ${describe()}` : '';
      const failed = lastError !== undefined ? `; last error: ${String(lastError)}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${seen}${failed}`);
    }
    await new Promise((resolve) => realSetTimeout(resolve, intervalMs));
  }
}

/**
 * Lets every promise reaction that can run, run: setImmediate fires only once the microtask
 * queue is empty. For code that only awaits promises (no I/O, no timers).
 */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** What `promise` rejects with; fails when it resolves instead. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}
