// A connected nonblocking AF_UNIX stream socket, owned exclusively: promise-based reads
// (with the fds that came along) and writes (optionally carrying fds), driven by one
// libuv poll watcher. Node's net.Socket cannot be used because it drops SCM_RIGHTS.

import * as libc from '../../ffi/libc';

export class ConnectionClosedError extends Error {
  constructor(message = 'connection closed') {
    super(message);
    this.name = 'ConnectionClosedError';
  }
}

type Waiter = { kind: 'readable' | 'writable'; resolve: () => void; reject: (error: Error) => void };

// Interest as a bitmask, so comparing and combining what the watcher is armed for is cheap.
const READABLE = 1;
const WRITABLE = 2;
const DISCONNECT = 4;
const INTERESTS: readonly libc.ReadinessInterest[] = Array.from({ length: 8 }, (_, mask) =>
  Object.freeze({ readable: (mask & READABLE) !== 0, writable: (mask & WRITABLE) !== 0, disconnect: (mask & DISCONNECT) !== 0 }),
);
/** What a readable wait arms; also enough to notice a hang-up while a command runs. */
const READ_INTEREST = READABLE | DISCONNECT;

export class FdConnection {
  readonly fd: number;
  private readonly watcher: libc.FdWatcher;
  private waiter: Waiter | undefined;
  private onDisconnect: (() => void) | undefined;
  private closedFlag = false;
  /**
   * What the watcher is armed for. Every change costs an epoll_ctl (and libuv adds a failing
   * EPOLL_CTL_DEL on each stop), so interest is dropped lazily: a read wait leaves
   * readable+disconnect armed, which also serves the disconnect watch of the next command,
   * and only an event nobody wants narrows it to what is wanted.
   */
  private armed = 0;

  /** Takes ownership of `fd`, which must be a nonblocking connected stream socket. */
  constructor(fd: number) {
    this.fd = fd;
    this.watcher = libc.watchFd(fd, {}, (error, events) => this.onReady(error, events));
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /**
   * Reads at most `maxBytes`, waiting until something arrives. End of stream is a message
   * with no bytes and no fds. Any fds received belong to the caller.
   */
  async read(maxBytes: number): Promise<libc.ReceivedMessage> {
    for (;;) {
      this.assertOpen();
      const message = libc.recvmsg(this.fd, maxBytes);
      if (message) return message;
      await this.wait('readable');
    }
  }

  /** Writes every byte; `fds` travel with the first byte (SCM_RIGHTS). */
  async write(bytes: Buffer, fds: readonly number[] = []): Promise<void> {
    let offset = 0;
    let pendingFds = fds;
    while (offset < bytes.length || pendingFds.length > 0) {
      this.assertOpen();
      const sent = libc.sendmsg(this.fd, offset === 0 ? bytes : bytes.subarray(offset), pendingFds);
      if (sent === null) {
        await this.wait('writable');
        continue;
      }
      if (sent > 0 || bytes.length === 0) pendingFds = [];
      offset += sent;
    }
  }

  /** Resolves when the socket is writable (e.g. a nonblocking connect has finished). */
  async waitWritable(): Promise<void> {
    this.assertOpen();
    await this.wait('writable');
  }

  /**
   * Calls `callback` once if the peer hangs up while nothing else is being waited for
   * (e.g. while a command executes). Pass undefined to stop watching.
   */
  watchDisconnect(callback: (() => void) | undefined): void {
    if (this.closedFlag) return;
    this.onDisconnect = callback;
    // Stopping is lazy (see `armed`); a leftover readable/disconnect event is narrowed in onReady.
    if (callback && !this.waiter && (this.armed & DISCONNECT) === 0) this.arm(this.armed | DISCONNECT);
  }

  /** Closes the socket; a pending read or write rejects with ConnectionClosedError. Idempotent. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.onDisconnect = undefined;
    // The watcher must be gone before the fd number can be reused.
    this.watcher.close();
    libc.close(this.fd);
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(new ConnectionClosedError());
  }

  private assertOpen(): void {
    if (this.closedFlag) throw new ConnectionClosedError();
  }

  private arm(mask: number): void {
    if (mask === this.armed) return;
    this.armed = mask;
    this.watcher.update(INTERESTS[mask]);
  }

  /** What is wanted when nothing waits: only the disconnect watch, if any. */
  private idleInterest(): number {
    return this.onDisconnect ? DISCONNECT : 0;
  }

  private wait(kind: 'readable' | 'writable'): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiter = { kind, resolve, reject };
      // A writable wait arms writable alone: a half-closed peer must not wake it over and over.
      this.arm(kind === 'readable' ? READ_INTEREST : WRITABLE);
    });
  }

  private onReady(error: libc.SystemCallError | null, events: libc.ReadinessEvents): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      // After a read wait the caller consumes the data, so readable stays armed for the next
      // one; writable is nearly always true and would wake us for nothing, so it goes at once.
      if (waiter.kind === 'writable' || error) this.arm(this.idleInterest());
      // A poll error (or hang-up) is left for the next recvmsg/sendmsg to report precisely.
      if (error) waiter.reject(error);
      else waiter.resolve();
      return;
    }
    if (events.disconnect || error) {
      const callback = this.onDisconnect;
      this.onDisconnect = undefined;
      this.arm(0);
      callback?.();
      return;
    }
    // Readiness nobody waits for (level-triggered, so it would repeat): narrow the interest.
    this.arm(this.idleInterest());
  }
}

/** Closes a raw fd the server owns, ignoring errors: a reply or a cleanup must still go on. */
export function closeQuietly(fd: number): void {
  try {
    libc.close(fd);
  } catch {
    // EBADF here would be our bug, but a reply must still go out.
  }
}

export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) closeQuietly(fd);
}
