// Readiness of an fd through libuv's poll watcher (koffi.node.poll), so the event loop
// learns when a socket Node did not create can be read or written.

import koffi from 'koffi';
import { LinuxErrno } from './errno';
import { SystemCallError } from './system-call';

export interface ReadinessEvents {
  readonly readable: boolean;
  readonly writable: boolean;
  readonly disconnect: boolean;
}

export interface ReadinessInterest {
  readonly readable?: boolean;
  readonly writable?: boolean;
  /** EPOLLRDHUP: the peer closed or shut down its writing side. */
  readonly disconnect?: boolean;
}

/**
 * A libuv poll watcher on one fd (koffi.node.poll). libuv allows one watcher per fd, and
 * the fd must not be closed while watched: call close() first, then close the fd.
 * Level-triggered: the callback repeats while the condition holds.
 */
export interface FdWatcher {
  /** Changes what is watched; an empty interest stops watching without closing. */
  update(interest: ReadinessInterest): void;
  /** Stops for good and releases the libuv handle (synchronously unregisters the fd). */
  close(): void;
  readonly closed: boolean;
}

interface KoffiPollHandle {
  start(opts: ReadinessInterest, callback: (status: number, events: ReadinessEvents) => void): void;
  stop(): void;
  close(): void;
}

function pollOptionsOf(wanted: ReadinessInterest): Required<ReadinessInterest> {
  return { readable: Boolean(wanted.readable), writable: Boolean(wanted.writable), disconnect: Boolean(wanted.disconnect) };
}

function wantsAny(wanted: ReadinessInterest): boolean {
  return Boolean(wanted.readable || wanted.writable || wanted.disconnect);
}

/**
 * Watches `fd`. `onEvent` receives a SystemCallError when libuv reports a poll error
 * (e.g. EBADF), else the ready events. Note koffi 3.3.4's index.d.ts declares the poll
 * callback as (events) but the native code calls it as (status, events).
 */
export function watchFd(fd: number, interest: ReadinessInterest, onEvent: (error: SystemCallError | null, events: ReadinessEvents) => void): FdWatcher {
  const callback = (status: number, events: ReadinessEvents): void => {
    if (closed) return;
    if (status < 0) onEvent(new SystemCallError('poll', -status, `fd ${fd}`), { readable: false, writable: false, disconnect: false });
    else onEvent(null, events);
  };
  let closed = false;
  let active = wantsAny(interest);
  // koffi.node.poll starts at once; with nothing to watch we start then stop, which keeps
  // one handle (and so one libuv watcher) per fd for the watcher's whole life.
  const handle = (koffi.node.poll as unknown as (fd: number, opts: ReadinessInterest, cb: typeof callback) => KoffiPollHandle | null)(
    fd,
    active ? pollOptionsOf(interest) : { readable: true },
    callback,
  );
  if (!handle) throw new SystemCallError('poll', LinuxErrno.EBADF, `fd ${fd}`);
  if (!active) handle.stop();
  return {
    update(next: ReadinessInterest): void {
      if (closed) return;
      const wantActive = wantsAny(next);
      if (wantActive) handle.start(pollOptionsOf(next), callback);
      else if (active) handle.stop();
      active = wantActive;
    },
    close(): void {
      if (closed) return;
      closed = true;
      handle.close();
    },
    get closed() {
      return closed;
    },
  };
}
