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

export class FdConnection {
  readonly fd: number;
  private readonly watcher: libc.FdWatcher;
  private waiter: Waiter | undefined;
  private onDisconnect: (() => void) | undefined;
  private closedFlag = false;

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
      const sent = libc.sendmsg(this.fd, bytes.subarray(offset), pendingFds);
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
    if (!this.waiter) this.watcher.update(callback ? { disconnect: true } : {});
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

  private wait(kind: 'readable' | 'writable'): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiter = { kind, resolve, reject };
      this.watcher.update({ [kind]: true });
    });
  }

  private onReady(error: libc.SystemCallError | null, events: libc.ReadinessEvents): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      this.watcher.update(this.onDisconnect ? { disconnect: true } : {});
      // A poll error (or hang-up) is left for the next recvmsg/sendmsg to report precisely.
      if (error) waiter.reject(error);
      else waiter.resolve();
      return;
    }
    if (events.disconnect || error) {
      const callback = this.onDisconnect;
      this.onDisconnect = undefined;
      this.watcher.update({});
      callback?.();
    }
  }
}
