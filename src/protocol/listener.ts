// The server's listening socket: bound to a path or adopted (socket activation, re-exec),
// accepting connections until closed, and pausing accepts while the process is out of fds.

import * as fs from 'fs';
import type { Logger } from 'pino';
import * as libc from '../../ffi/libc';

export type ListenTarget =
  /** Bind a pathname socket. `mode` defaults to 0600, like qemu-pr-helper's shipped unit. */
  | { readonly path: string; readonly mode?: number }
  /** Adopt an already-listening socket, e.g. fd 3 from systemd socket activation. */
  | { readonly fd: number };

export const DEFAULT_SOCKET_MODE = 0o600;
/** How long accepting pauses when the process is out of fds (EMFILE/ENFILE). */
const ACCEPT_BACKOFF_MS = 100;

export class Listener {
  private listenFd = -1;
  private watcher: libc.FdWatcher | undefined;
  private boundPath: { path: string; ino: number } | undefined;
  private acceptBackoff: NodeJS.Timeout | undefined;

  /** `accepted` takes ownership of each new connection's fd. */
  constructor(
    private readonly logger: Logger,
    private readonly accepted: (fd: number) => void,
  ) {}

  /** The listening fd (-1 before listen and after close). */
  get fd(): number {
    return this.listenFd;
  }

  /**
   * Starts listening. For a path: an existing socket file nobody answers on is removed
   * first (left over from a crash); a live socket or a non-socket file is an error, never
   * deleted. The mode is applied between bind and listen, so no client can connect while
   * the socket still has umask permissions.
   */
  listen(target: ListenTarget): void {
    if ('fd' in target) {
      const status = libc.fstat(target.fd);
      if (!status.isSocket || !libc.isListening(target.fd)) throw new Error(`fd ${target.fd} is not a listening socket`);
      libc.setNonBlocking(target.fd);
      this.listenFd = target.fd;
      this.logger.info({ fd: target.fd }, 'listening on an inherited socket');
    } else {
      this.listenFd = this.bind(target.path, target.mode ?? DEFAULT_SOCKET_MODE);
      this.logger.info({ path: target.path, mode: (target.mode ?? DEFAULT_SOCKET_MODE).toString(8) }, 'listening');
    }
    this.watcher = libc.watchFd(this.listenFd, { readable: true }, (error) => {
      if (error) this.logger.error({ err: error }, 'poll error on the listening socket');
      this.acceptPending();
    });
  }

  /** Stops accepting and removes the socket file this listener bound, if it is still ours. Idempotent. */
  close(): void {
    if (this.acceptBackoff) clearTimeout(this.acceptBackoff);
    this.watcher?.close();
    this.watcher = undefined;
    if (this.listenFd >= 0) libc.close(this.listenFd);
    this.listenFd = -1;
    if (this.boundPath) {
      // Only remove the file if it is still ours (another instance may have replaced it).
      try {
        if (fs.statSync(this.boundPath.path).ino === this.boundPath.ino) fs.unlinkSync(this.boundPath.path);
      } catch {
        // Already gone.
      }
      this.boundPath = undefined;
    }
  }

  private bind(path: string, mode: number): number {
    removeStaleSocket(path);
    const fd = libc.unixStreamSocket();
    try {
      libc.bind(fd, path);
      fs.chmodSync(path, mode);
      this.boundPath = { path, ino: fs.statSync(path).ino };
      libc.listen(fd);
    } catch (error) {
      libc.close(fd);
      if (this.boundPath) fs.rmSync(path, { force: true });
      this.boundPath = undefined;
      throw error;
    }
    return fd;
  }

  private acceptPending(): void {
    while (this.listenFd >= 0) {
      let fd: number | null;
      try {
        fd = libc.accept4(this.listenFd);
      } catch (error) {
        const code = error instanceof libc.SystemCallError ? error.code : '';
        if (code === 'ECONNABORTED' || code === 'EPROTO') continue;
        // Out of fds or memory: readiness stays level-triggered, so pause instead of spinning.
        this.logger.error({ err: error }, 'accept failed; pausing accepts');
        this.watcher?.update({});
        this.acceptBackoff = setTimeout(() => {
          this.acceptBackoff = undefined;
          this.watcher?.update({ readable: true });
        }, ACCEPT_BACKOFF_MS);
        return;
      }
      if (fd === null) return;
      this.accepted(fd);
    }
  }
}

/**
 * Removes a socket file left by a dead server: only a socket, and only when a connect is
 * refused. A live socket or any other kind of file is an error.
 */
export function removeStaleSocket(path: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!stat.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  const probe = libc.unixStreamSocket();
  try {
    const outcome = libc.connect(probe, path);
    // Connected, or a full backlog: somebody is serving there.
    throw Object.assign(new Error(`${path} is in use by a running server (${outcome})`), { code: 'EADDRINUSE' });
  } catch (error) {
    if (error instanceof libc.SystemCallError && error.code === 'ECONNREFUSED') {
      fs.unlinkSync(path);
      return;
    }
    if (error instanceof libc.SystemCallError && error.code === 'ENOENT') return;
    throw error;
  } finally {
    libc.close(probe);
  }
}
