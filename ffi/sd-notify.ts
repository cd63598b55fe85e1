// sd_notify(3) through libsystemd, loaded on first use. Without libsystemd the call is a
// no-op that says why, so the daemon runs the same on systems without systemd.
//
// Also a receiving AF_UNIX datagram socket, which Node cannot create: the tests play
// systemd's part with it (bind a path, point NOTIFY_SOCKET at it, read the datagrams).

import { errnoName } from './errno';
import { close, read } from './fd-io';
import { libcHandle } from './libc-handle';
import { loadOptional, type OptionalLibrarySpec } from './optional-library';
import { bind, SOL_SOCKET, unixDatagramSocket } from './unix-socket';

type SdNotify = (unsetEnvironment: number, state: string) => number;

const LIBSYSTEMD: OptionalLibrarySpec<SdNotify> = {
  soname: 'libsystemd.so.0',
  project: 'systemd',
  debianPackage: 'libsystemd0',
  bind: (library) => library.func<SdNotify>('int sd_notify(int unset_environment, const char *state)'),
};

export type NotifyOutcome =
  /** Delivered to $NOTIFY_SOCKET. */
  | { readonly sent: true }
  /** Not sent: no $NOTIFY_SOCKET, no libsystemd, or the send failed (with errno name). */
  | { readonly sent: false; readonly reason: string };

/**
 * Sends newline-separated assignments ("READY=1\nSTATUS=…") to the service manager.
 * Never throws. The environment is left alone: the re-executed daemon image needs
 * NOTIFY_SOCKET too.
 */
export function sdNotify(state: string): NotifyOutcome {
  if (!process.env.NOTIFY_SOCKET) return { sent: false, reason: 'NOTIFY_SOCKET is not set' };
  const loaded = loadOptional(LIBSYSTEMD);
  if (!loaded.ok) return { sent: false, reason: loaded.reason };
  const ret = loaded.lib(0, state);
  if (ret > 0) return { sent: true };
  if (ret === 0) return { sent: false, reason: 'libsystemd saw no NOTIFY_SOCKET' };
  return { sent: false, reason: `sd_notify failed: ${errnoName(-ret)}` };
}

// ---------------------------------------------------------------------------------------
// The receiving side (tests)

const c_setsockopt = libcHandle.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)');
const SO_PASSCRED = 16;
/** Larger than any notification the daemon sends. */
const MAX_DATAGRAM = 4096;

/** A bound, nonblocking AF_UNIX datagram socket standing in for systemd's notification socket. */
export class NotifyReceiver {
  readonly fd: number;
  private closed = false;

  /** Throws a SystemCallError when the socket cannot be created or bound. */
  constructor(readonly path: string) {
    const fd = unixDatagramSocket();
    try {
      bind(fd, path);
    } catch (error) {
      close(fd);
      throw error;
    }
    // systemd asks for credentials too; harmless here and closer to the real thing.
    const one = Buffer.alloc(4);
    one.writeInt32LE(1, 0);
    c_setsockopt(fd, SOL_SOCKET, SO_PASSCRED, one, 4);
    this.fd = fd;
  }

  /** Every datagram waiting now, as text; [] when none. */
  drain(): string[] {
    const messages: string[] = [];
    for (let datagram = read(this.fd, MAX_DATAGRAM); datagram !== null; datagram = read(this.fd, MAX_DATAGRAM)) {
      messages.push(datagram.toString('utf8'));
    }
    return messages;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }
}
