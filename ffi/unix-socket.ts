// AF_UNIX sockets, which Node cannot create from an fd it is handed: creating, binding,
// listening, accepting, connecting, shutting down, and the socket options the server reads
// (peer credentials, pending error, listening state). The fd passing itself (SCM_RIGHTS)
// is in scm-rights.ts.

import koffi from 'koffi';
import { LinuxErrno } from './errno';
import { libcHandle } from './libc-handle';
import { check, checkNonBlocking, SystemCallError } from './system-call';

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_ERROR = 4;
export const SO_PEERCRED = 17;
export const SO_ACCEPTCONN = 30;
export const SCM_RIGHTS = 1;
export const MSG_CTRUNC = 0x8;
export const MSG_TRUNC = 0x20;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;
export const SOMAXCONN = 4096;
const SUN_PATH_MAX = 108;

const c_socket = libcHandle.func('int socket(int domain, int type, int protocol)');
const c_socketpair = libcHandle.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)');
const c_bind = libcHandle.func('int bind(int fd, const void *addr, uint32_t addrlen)');
const c_listen = libcHandle.func('int listen(int fd, int backlog)');
const c_accept4 = libcHandle.func('int accept4(int fd, void *addr, void *addrlen, int flags)');
const c_connect = libcHandle.func('int connect(int fd, const void *addr, uint32_t addrlen)');
const c_shutdown = libcHandle.func('int shutdown(int fd, int how)');
const c_getsockopt = libcHandle.func('int getsockopt(int fd, int level, int optname, _Out_ uint8_t *optval, _Inout_ uint32_t *optlen)');

function socketFlags(options: { nonBlocking?: boolean }): number {
  return SOCK_CLOEXEC | (options.nonBlocking === false ? 0 : SOCK_NONBLOCK);
}

/** An AF_UNIX SOCK_STREAM socket, nonblocking and close-on-exec unless told otherwise. */
export function unixStreamSocket(options: { nonBlocking?: boolean } = {}): number {
  return check('socket', () => c_socket(AF_UNIX, SOCK_STREAM | socketFlags(options), 0));
}

/** An AF_UNIX SOCK_DGRAM socket, nonblocking and close-on-exec unless told otherwise. */
export function unixDatagramSocket(options: { nonBlocking?: boolean } = {}): number {
  return check('socket', () => c_socket(AF_UNIX, SOCK_DGRAM | socketFlags(options), 0));
}

/** A connected AF_UNIX SOCK_STREAM pair (close-on-exec, nonblocking by default). For tests. */
export function socketpair(options: { nonBlocking?: boolean } = {}): [number, number] {
  const sv = [-1, -1];
  check('socketpair', () => c_socketpair(AF_UNIX, SOCK_STREAM | socketFlags(options), 0, sv));
  return [sv[0], sv[1]];
}

function sockaddrUn(syscall: string, path: string): Buffer {
  const encoded = Buffer.from(path, 'utf8');
  // sun_path must hold the path and its NUL terminator.
  if (encoded.length === 0 || encoded.length >= SUN_PATH_MAX || encoded.includes(0)) {
    throw new SystemCallError(syscall, encoded.length === 0 || encoded.includes(0) ? LinuxErrno.EINVAL : LinuxErrno.ENAMETOOLONG, path);
  }
  const addr = Buffer.alloc(2 + SUN_PATH_MAX);
  addr.writeUInt16LE(AF_UNIX, 0);
  encoded.copy(addr, 2);
  return addr;
}

export function bind(fd: number, path: string): void {
  const addr = sockaddrUn('bind', path);
  check('bind', () => c_bind(fd, addr, addr.length), path);
}

export function listen(fd: number, backlog = SOMAXCONN): void {
  check('listen', () => c_listen(fd, backlog));
}

/** Accepts one connection (nonblocking, close-on-exec), or null when none is pending. */
export function accept4(fd: number): number | null {
  return checkNonBlocking('accept4', () => c_accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

/**
 * Connects to a pathname socket. 'connected' on success; 'again' when the listener's backlog
 * is full (AF_UNIX answers EAGAIN then, and readiness polling does not help: retry later);
 * 'in-progress' if the kernel reports EINPROGRESS (wait for writable, then socketError()).
 */
export function connect(fd: number, path: string): 'connected' | 'again' | 'in-progress' {
  const addr = sockaddrUn('connect', path);
  for (;;) {
    if (c_connect(fd, addr, addr.length) === 0) return 'connected';
    const errno = koffi.errno();
    if (errno === LinuxErrno.EINTR) continue;
    if (errno === LinuxErrno.EAGAIN) return 'again';
    if (errno === LinuxErrno.EINPROGRESS) return 'in-progress';
    throw new SystemCallError('connect', errno, path);
  }
}

export function shutdown(fd: number, how: number = SHUT_RDWR): void {
  check('shutdown', () => c_shutdown(fd, how));
}

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** getsockopt(SOL_SOCKET, option) into a buffer of the option's size. */
function getSocketOption(fd: number, option: number, size: number, name: string): Buffer {
  const value = Buffer.alloc(size);
  const length = [value.length];
  check('getsockopt', () => c_getsockopt(fd, SOL_SOCKET, option, value, length), name);
  return value;
}

/** SO_PEERCRED: who is on the other end of a connected AF_UNIX socket (as of connect()). */
export function getPeerCredentials(fd: number): PeerCredentials {
  const cred = getSocketOption(fd, SO_PEERCRED, 12, 'SO_PEERCRED');
  return { pid: cred.readInt32LE(0), uid: cred.readUInt32LE(4), gid: cred.readUInt32LE(8) };
}

/** SO_ERROR: the pending socket error (0 when none), which reading clears. */
export function getSocketError(fd: number): number {
  return getSocketOption(fd, SO_ERROR, 4, 'SO_ERROR').readInt32LE(0);
}

/** SO_ACCEPTCONN: whether the socket is listening (used to vet an inherited fd). */
export function isListening(fd: number): boolean {
  return getSocketOption(fd, SO_ACCEPTCONN, 4, 'SO_ACCEPTCONN').readInt32LE(0) !== 0;
}
