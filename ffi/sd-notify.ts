// sd_notify(3) through libsystemd, loaded on first use. Without libsystemd the call is a
// no-op that says why, so the daemon runs the same on systems without systemd.
//
// Also a receiving AF_UNIX datagram socket, which Node cannot create: the tests play
// systemd's part with it (bind a path, point NOTIFY_SOCKET at it, read the datagrams).

import koffi from 'koffi';
import * as os from 'os';

type SdNotify = (unsetEnvironment: number, state: string) => number;

let loaded: { notify: SdNotify } | { error: string } | undefined;

function load(): { notify: SdNotify } | { error: string } {
  if (loaded) return loaded;
  try {
    const lib = koffi.load('libsystemd.so.0');
    loaded = { notify: lib.func('int sd_notify(int unset_environment, const char *state)') as SdNotify };
  } catch (error) {
    loaded = { error: `libsystemd.so.0 not loadable: ${(error as Error).message}` };
  }
  return loaded;
}

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
  const lib = load();
  if ('error' in lib) return { sent: false, reason: lib.error };
  const ret = lib.notify(0, state);
  if (ret > 0) return { sent: true };
  if (ret === 0) return { sent: false, reason: 'libsystemd saw no NOTIFY_SOCKET' };
  return { sent: false, reason: `sd_notify failed: ${errnoName(-ret)}` };
}

function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(os.constants.errno)) if (value === errno) return name;
  return `E${errno}`;
}

// ---------------------------------------------------------------------------------------
// The receiving side (tests)

const libc = koffi.load('libc.so.6');
const c_socket = libc.func('int socket(int domain, int type, int protocol)');
const c_bind = libc.func('int bind(int fd, const void *addr, uint32_t len)');
const c_recv = libc.func('intptr_t recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)');
const c_close = libc.func('int close(int fd)');
const c_setsockopt = libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)');

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;
const SOL_SOCKET = 1;
const SO_PASSCRED = 16;
const EAGAIN = os.constants.errno.EAGAIN;

export class NotifySocketError extends Error {
  constructor(syscall: string, errno: number) {
    super(`${syscall}: ${errnoName(errno)}`);
    this.name = 'NotifySocketError';
  }
}

/** A bound AF_UNIX datagram socket standing in for systemd's notification socket. */
export class NotifyReceiver {
  readonly fd: number;
  private closed = false;

  constructor(readonly path: string) {
    const fd = c_socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new NotifySocketError('socket', koffi.errno());
    const encoded = Buffer.from(path, 'utf8');
    const addr = Buffer.alloc(110);
    addr.writeUInt16LE(AF_UNIX, 0);
    encoded.copy(addr, 2);
    if (encoded.length >= 108 || c_bind(fd, addr, 2 + encoded.length + 1) < 0) {
      const errno = encoded.length >= 108 ? os.constants.errno.ENAMETOOLONG : koffi.errno();
      c_close(fd);
      throw new NotifySocketError('bind', errno);
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
    const buf = Buffer.alloc(4096);
    for (;;) {
      const n = Number(c_recv(this.fd, buf, buf.length, MSG_DONTWAIT));
      if (n < 0) {
        const errno = koffi.errno();
        if (errno === EAGAIN) return messages;
        throw new NotifySocketError('recv', errno);
      }
      messages.push(buf.subarray(0, n).toString('utf8'));
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    c_close(this.fd);
  }
}
