// Thin typed wrappers over the libc calls Node does not expose: AF_UNIX sockets with
// SCM_RIGHTS fd passing, peer credentials, fcntl access modes, statx, and fd readiness.
// Every wrapper returns plain JS values. errno is read immediately after the native call
// (before any other koffi call can overwrite it) and thrown as a SystemCallError.
// "Would block" (EAGAIN) is an expected answer on nonblocking fds, so it is returned as
// `null` instead of being thrown. Layouts are those of Linux LP64 (x86-64, aarch64).

import koffi from 'koffi';
import * as os from 'os';

const libc = koffi.load('libc.so.6');

// ---------------------------------------------------------------------------------------
// Errors

export class SystemCallError extends Error {
  readonly syscall: string;
  readonly errno: number;
  /** Symbolic name such as 'EAGAIN', or 'E<number>' when unknown. */
  readonly code: string;

  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall}${detail ? ` ${detail}` : ''}: ${describeErrno(errno)} (${code})`);
    this.name = 'SystemCallError';
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
  }
}

const ERRNO_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(os.constants.errno)) if (!ERRNO_NAMES.has(value)) ERRNO_NAMES.set(value, name);

export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

const strerror = libc.func('const char *strerror(int errnum)');
function describeErrno(errno: number): string {
  return String(strerror(errno));
}

export const Errno = {
  EINTR: os.constants.errno.EINTR,
  EAGAIN: os.constants.errno.EAGAIN,
  EBADF: os.constants.errno.EBADF,
  EINPROGRESS: os.constants.errno.EINPROGRESS,
  ENAMETOOLONG: os.constants.errno.ENAMETOOLONG,
  ECONNREFUSED: os.constants.errno.ECONNREFUSED,
  ENOENT: os.constants.errno.ENOENT,
  EPIPE: os.constants.errno.EPIPE,
  ECONNRESET: os.constants.errno.ECONNRESET,
  EINVAL: os.constants.errno.EINVAL,
} as const;

/** Runs a native call and turns a -1 return into a SystemCallError, retrying on EINTR. */
function check(syscall: string, call: () => number, detail?: string): number {
  for (;;) {
    const ret = call();
    if (ret >= 0) return ret;
    const errno = koffi.errno();
    if (errno === Errno.EINTR) continue;
    throw new SystemCallError(syscall, errno, detail);
  }
}

/** Like check(), but EAGAIN/EWOULDBLOCK becomes null. */
function checkNonBlocking(syscall: string, call: () => number): number | null {
  for (;;) {
    const ret = call();
    if (ret >= 0) return ret;
    const errno = koffi.errno();
    if (errno === Errno.EINTR) continue;
    if (errno === Errno.EAGAIN) return null;
    throw new SystemCallError(syscall, errno);
  }
}

// ---------------------------------------------------------------------------------------
// Constants (Linux)

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
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
export const F_GETFL = 3;
export const F_SETFL = 4;
export const O_ACCMODE = 0o3;
export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const SOMAXCONN = 4096;
const AT_FDCWD = -100;
const AT_EMPTY_PATH = 0x1000;
const STATX_BASIC_STATS = 0x7ff;
const S_IFMT = 0o170000;
const S_IFBLK = 0o060000;
const S_IFCHR = 0o020000;
const S_IFREG = 0o100000;
const S_IFSOCK = 0o140000;

/** How many fds one recvmsg can carry back. A request carries exactly one; room for a few
 * more lets us see (and close) what a misbehaving client sent instead of losing it to MSG_CTRUNC. */
export const RECV_MAX_FDS = 8;
const SUN_PATH_MAX = 108;

// ---------------------------------------------------------------------------------------
// Declarations

const c_socket = libc.func('int socket(int domain, int type, int protocol)');
const c_socketpair = libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)');
const c_bind = libc.func('int bind(int fd, const void *addr, uint32_t addrlen)');
const c_listen = libc.func('int listen(int fd, int backlog)');
const c_accept4 = libc.func('int accept4(int fd, void *addr, void *addrlen, int flags)');
const c_connect = libc.func('int connect(int fd, const void *addr, uint32_t addrlen)');
const c_recvmsg = libc.func('intptr_t recvmsg(int fd, void *msg, int flags)');
const c_sendmsg = libc.func('intptr_t sendmsg(int fd, void *msg, int flags)');
const c_read = libc.func('intptr_t read(int fd, _Out_ uint8_t *buf, size_t count)');
const c_write = libc.func('intptr_t write(int fd, const uint8_t *buf, size_t count)');
const c_close = libc.func('int close(int fd)');
const c_shutdown = libc.func('int shutdown(int fd, int how)');
const c_getsockopt = libc.func('int getsockopt(int fd, int level, int optname, _Out_ uint8_t *optval, _Inout_ uint32_t *optlen)');
const c_fcntl = libc.func('int fcntl(int fd, int cmd, ...)');
const c_statx = libc.func('int statx(int dirfd, const char *path, int flags, uint32_t mask, _Out_ uint8_t *buf)');
const c_pipe2 = libc.func('int pipe2(_Out_ int *fds, int flags)');

// struct msghdr / iovec / cmsghdr, declared so koffi computes the LP64 offsets for us.
const Iovec = koffi.struct('mpr_iovec', { iov_base: 'void *', iov_len: 'size_t' });
const MsgHdr = koffi.struct('mpr_msghdr', {
  msg_name: 'void *',
  msg_namelen: 'uint32_t',
  msg_iov: 'void *',
  msg_iovlen: 'size_t',
  msg_control: 'void *',
  msg_controllen: 'size_t',
  msg_flags: 'int',
});
const CMSG_HDR_SIZE = 16; // size_t cmsg_len; int cmsg_level; int cmsg_type
const CMSG_ALIGN = (n: number): number => (n + 7) & ~7;
const CMSG_SPACE = (n: number): number => CMSG_HDR_SIZE + CMSG_ALIGN(n);
const CMSG_LEN = (n: number): number => CMSG_HDR_SIZE + n;

// Native scratch memory for recvmsg/sendmsg. JS is single-threaded and these calls are
// synchronous, so one set is enough; the kernel writes the received bytes and control
// data here and we copy them out before returning.
const SCRATCH_DATA_SIZE = 64 * 1024;
const CONTROL_SIZE = CMSG_SPACE(RECV_MAX_FDS * 4);
/** sendmsg may carry more fds than we accept, so tests can provoke MSG_CTRUNC. */
export const SEND_MAX_FDS = 32;
const SEND_CONTROL_SIZE = CMSG_SPACE(SEND_MAX_FDS * 4);
const scratchControl: bigint = koffi.alloc('uint8_t', CONTROL_SIZE);
const scratchSendControl: bigint = koffi.alloc('uint8_t', SEND_CONTROL_SIZE);
const scratchData: bigint = koffi.alloc('uint8_t', SCRATCH_DATA_SIZE);
const controlView = Buffer.from(koffi.view(scratchControl, CONTROL_SIZE));
const sendControlView = Buffer.from(koffi.view(scratchSendControl, SEND_CONTROL_SIZE));
const dataView = Buffer.from(koffi.view(scratchData, SCRATCH_DATA_SIZE));

// One msghdr+iovec per direction, encoded once: only the lengths (and, for recvmsg, the
// fields the kernel overwrites) change per call, and they are patched through a Buffer
// view, which costs far less than koffi.encode/decode of the whole struct every time.
const MSGHDR_SIZE = koffi.sizeof(MsgHdr);
const IOVEC_SIZE = koffi.sizeof(Iovec);
const MSG_CONTROLLEN_OFFSET = koffi.offsetof(MsgHdr, 'msg_controllen');
const MSG_FLAGS_OFFSET = koffi.offsetof(MsgHdr, 'msg_flags');
const IOV_LEN_OFFSET = koffi.offsetof(Iovec, 'iov_len');

interface PreparedMessage {
  readonly msg: bigint;
  readonly msgView: Buffer;
  readonly iovView: Buffer;
}

function prepareMessage(control: bigint): PreparedMessage {
  const msg: bigint = koffi.alloc('uint8_t', MSGHDR_SIZE);
  const iov: bigint = koffi.alloc('uint8_t', IOVEC_SIZE);
  koffi.encode(iov, Iovec, { iov_base: scratchData, iov_len: 0 });
  koffi.encode(msg, MsgHdr, { msg_name: null, msg_namelen: 0, msg_iov: iov, msg_iovlen: 1, msg_control: control, msg_controllen: 0, msg_flags: 0 });
  return { msg, msgView: Buffer.from(koffi.view(msg, MSGHDR_SIZE)), iovView: Buffer.from(koffi.view(iov, IOVEC_SIZE)) };
}

const recvMessage = prepareMessage(scratchControl);
// The kernel ignores msg_control when msg_controllen is 0, so sends without fds keep the pointer.
const sendMessage = prepareMessage(scratchSendControl);

// ---------------------------------------------------------------------------------------
// Sockets

/** An AF_UNIX SOCK_STREAM socket, nonblocking and close-on-exec unless told otherwise. */
export function unixStreamSocket(options: { nonBlocking?: boolean } = {}): number {
  const flags = SOCK_CLOEXEC | (options.nonBlocking === false ? 0 : SOCK_NONBLOCK);
  return check('socket', () => c_socket(AF_UNIX, SOCK_STREAM | flags, 0));
}

/** A connected AF_UNIX SOCK_STREAM pair (close-on-exec, nonblocking by default). For tests. */
export function socketpair(options: { nonBlocking?: boolean } = {}): [number, number] {
  const flags = SOCK_CLOEXEC | (options.nonBlocking === false ? 0 : SOCK_NONBLOCK);
  const sv = [-1, -1];
  check('socketpair', () => c_socketpair(AF_UNIX, SOCK_STREAM | flags, 0, sv));
  return [sv[0], sv[1]];
}

/** A pipe, close-on-exec, nonblocking by default: [readEnd, writeEnd]. */
export function pipe(options: { nonBlocking?: boolean } = {}): [number, number] {
  const flags = 0o2000000 | (options.nonBlocking === false ? 0 : O_NONBLOCK);
  const fds = [-1, -1];
  check('pipe2', () => c_pipe2(fds, flags));
  return [fds[0], fds[1]];
}

function sockaddrUn(syscall: string, path: string): Buffer {
  const encoded = Buffer.from(path, 'utf8');
  // sun_path must hold the path and its NUL terminator.
  if (encoded.length === 0 || encoded.length >= SUN_PATH_MAX || encoded.includes(0)) {
    throw new SystemCallError(syscall, encoded.length === 0 || encoded.includes(0) ? Errno.EINVAL : Errno.ENAMETOOLONG, path);
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
    if (errno === Errno.EINTR) continue;
    if (errno === Errno.EAGAIN) return 'again';
    if (errno === Errno.EINPROGRESS) return 'in-progress';
    throw new SystemCallError('connect', errno, path);
  }
}

export interface ReceivedMessage {
  /** The bytes read; empty with no fds means end of stream. */
  readonly bytes: Buffer;
  /** Every fd that arrived with these bytes. The caller owns them and must close them. */
  readonly fds: number[];
  /** MSG_CTRUNC: more fds were sent than fit; the kernel closed the ones that did not fit. */
  readonly controlTruncated: boolean;
}

/**
 * recvmsg with one SCM_RIGHTS control buffer (room for RECV_MAX_FDS fds) and MSG_CMSG_CLOEXEC.
 * Returns null when nothing is available (EAGAIN).
 */
export function recvmsg(fd: number, maxBytes = SCRATCH_DATA_SIZE): ReceivedMessage | null {
  const length = Math.max(1, Math.min(maxBytes, SCRATCH_DATA_SIZE));
  const { msg, msgView, iovView } = recvMessage;
  controlView.fill(0);
  iovView.writeBigUInt64LE(BigInt(length), IOV_LEN_OFFSET);
  msgView.writeBigUInt64LE(BigInt(CONTROL_SIZE), MSG_CONTROLLEN_OFFSET);
  msgView.writeInt32LE(0, MSG_FLAGS_OFFSET);
  let received: number;
  for (;;) {
    received = Number(c_recvmsg(fd, msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT));
    if (received >= 0) break;
    const errno = koffi.errno();
    if (errno === Errno.EINTR) continue;
    if (errno === Errno.EAGAIN) return null;
    throw new SystemCallError('recvmsg', errno);
  }
  const controlLength = Math.min(Number(msgView.readBigUInt64LE(MSG_CONTROLLEN_OFFSET)), CONTROL_SIZE);
  const flags = msgView.readInt32LE(MSG_FLAGS_OFFSET);
  const fds = controlLength >= CMSG_HDR_SIZE ? parseRights(controlView.subarray(0, controlLength)) : [];
  return {
    bytes: Buffer.from(dataView.subarray(0, received)),
    fds,
    controlTruncated: (flags & MSG_CTRUNC) !== 0,
  };
}

/** Walks the cmsg chain (CMSG_FIRSTHDR/CMSG_NXTHDR) collecting every SCM_RIGHTS fd. */
function parseRights(control: Buffer): number[] {
  const fds: number[] = [];
  let offset = 0;
  while (offset + CMSG_HDR_SIZE <= control.length) {
    const cmsgLen = Number(control.readBigUInt64LE(offset));
    if (cmsgLen < CMSG_HDR_SIZE || offset + cmsgLen > control.length) break;
    const level = control.readInt32LE(offset + 8);
    const type = control.readInt32LE(offset + 12);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let at = offset + CMSG_HDR_SIZE; at + 4 <= offset + cmsgLen; at += 4) fds.push(control.readInt32LE(at));
    }
    offset += CMSG_ALIGN(cmsgLen);
  }
  return fds;
}

/**
 * sendmsg of `bytes` with optional SCM_RIGHTS fds, MSG_NOSIGNAL (a vanished peer is EPIPE,
 * not SIGPIPE). Returns the number of bytes sent (possibly partial), or null on EAGAIN.
 * When fds are given and any byte was sent, the fds were sent too.
 */
export function sendmsg(fd: number, bytes: Uint8Array, fds: readonly number[] = []): number | null {
  const length = Math.min(bytes.length, SCRATCH_DATA_SIZE);
  if (length === 0 && fds.length === 0) return 0;
  dataView.set(bytes.subarray(0, length), 0);
  let controlLength = 0;
  if (fds.length > 0) {
    if (fds.length > SEND_MAX_FDS) throw new SystemCallError('sendmsg', Errno.EINVAL, `too many fds (${fds.length})`);
    controlLength = CMSG_SPACE(fds.length * 4);
    sendControlView.fill(0, 0, controlLength);
    sendControlView.writeBigUInt64LE(BigInt(CMSG_LEN(fds.length * 4)), 0);
    sendControlView.writeInt32LE(SOL_SOCKET, 8);
    sendControlView.writeInt32LE(SCM_RIGHTS, 12);
    fds.forEach((sent, i) => sendControlView.writeInt32LE(sent, CMSG_HDR_SIZE + 4 * i));
  }
  const { msg, msgView, iovView } = sendMessage;
  iovView.writeBigUInt64LE(BigInt(length), IOV_LEN_OFFSET);
  msgView.writeBigUInt64LE(BigInt(controlLength), MSG_CONTROLLEN_OFFSET);
  for (;;) {
    const sent = Number(c_sendmsg(fd, msg, MSG_NOSIGNAL | MSG_DONTWAIT));
    if (sent >= 0) return sent;
    const errno = koffi.errno();
    if (errno === Errno.EINTR) continue;
    if (errno === Errno.EAGAIN) return null;
    throw new SystemCallError('sendmsg', errno);
  }
}

/** read(2) on a nonblocking fd: the bytes (empty at end of file), or null on EAGAIN. */
export function read(fd: number, maxBytes = SCRATCH_DATA_SIZE): Buffer | null {
  const buffer = Buffer.alloc(Math.max(1, maxBytes));
  const count = checkNonBlocking('read', () => Number(c_read(fd, buffer, buffer.length)));
  return count === null ? null : buffer.subarray(0, count);
}

/** write(2) on a nonblocking fd: bytes written (possibly partial), or null on EAGAIN. */
export function write(fd: number, bytes: Uint8Array): number | null {
  if (bytes.length === 0) return 0;
  return checkNonBlocking('write', () => Number(c_write(fd, bytes, bytes.length)));
}

export function close(fd: number): void {
  // No EINTR retry: on Linux the fd is released even when close() reports EINTR.
  if (c_close(fd) !== 0) {
    const errno = koffi.errno();
    if (errno !== Errno.EINTR) throw new SystemCallError('close', errno, `fd ${fd}`);
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

/** SO_PEERCRED: who is on the other end of a connected AF_UNIX socket (as of connect()). */
export function getPeerCredentials(fd: number): PeerCredentials {
  const cred = Buffer.alloc(12);
  const length = [cred.length];
  check('getsockopt', () => c_getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, length), 'SO_PEERCRED');
  return { pid: cred.readInt32LE(0), uid: cred.readUInt32LE(4), gid: cred.readUInt32LE(8) };
}

/** SO_ERROR: the pending socket error (0 when none), which reading clears. */
export function getSocketError(fd: number): number {
  const value = Buffer.alloc(4);
  const length = [value.length];
  check('getsockopt', () => c_getsockopt(fd, SOL_SOCKET, SO_ERROR, value, length), 'SO_ERROR');
  return value.readInt32LE(0);
}

/** SO_ACCEPTCONN: whether the socket is listening (used to vet an inherited fd). */
export function isListening(fd: number): boolean {
  const value = Buffer.alloc(4);
  const length = [value.length];
  check('getsockopt', () => c_getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, value, length), 'SO_ACCEPTCONN');
  return value.readInt32LE(0) !== 0;
}

// ---------------------------------------------------------------------------------------
// fcntl / statx

/** F_GETFL: the file status flags (access mode in the O_ACCMODE bits). */
export function getFileStatusFlags(fd: number): number {
  return check('fcntl', () => c_fcntl(fd, F_GETFL));
}

export type AccessMode = 'read-only' | 'write-only' | 'read-write';

export function getAccessMode(fd: number): AccessMode {
  const mode = getFileStatusFlags(fd) & O_ACCMODE;
  if (mode === O_WRONLY) return 'write-only';
  if (mode === O_RDWR) return 'read-write';
  return 'read-only';
}

/** Sets O_NONBLOCK on an fd we did not create ourselves (e.g. an inherited listening socket). */
export function setNonBlocking(fd: number): void {
  const flags = getFileStatusFlags(fd);
  if ((flags & O_NONBLOCK) === 0) check('fcntl', () => c_fcntl(fd, F_SETFL, 'int', flags | O_NONBLOCK));
}

/**
 * A Linux device number (dev_t) as its major and minor halves. The one declaration in the
 * project: src/device re-exports it.
 */
export interface DevNumber {
  readonly major: number;
  readonly minor: number;
}

export interface FileStatus {
  readonly mode: number;
  readonly ino: bigint;
  readonly dev: DevNumber;
  /** Meaningful for block and character devices only. */
  readonly rdev: DevNumber;
  readonly size: bigint;
  readonly isBlock: boolean;
  readonly isChar: boolean;
  readonly isRegular: boolean;
  readonly isSocket: boolean;
}

// struct statx offsets (include/uapi/linux/stat.h); the layout is the same on every arch,
// which is why statx is used instead of struct stat.
const STATX_SIZE = 256;
const STX_MODE = 0x1c;
const STX_INO = 0x20;
const STX_SIZE = 0x28;
const STX_RDEV_MAJOR = 0x80;
const STX_RDEV_MINOR = 0x84;
const STX_DEV_MAJOR = 0x88;
const STX_DEV_MINOR = 0x8c;

// Reused: the call is synchronous and every field is copied out before returning.
const statxBuffer = Buffer.alloc(STATX_SIZE);

/** fstat via statx(fd, "", AT_EMPTY_PATH). */
export function fstat(fd: number): FileStatus {
  check('statx', () => c_statx(fd, '', AT_EMPTY_PATH, STATX_BASIC_STATS, statxBuffer), `fd ${fd}`);
  return fileStatusOf(statxBuffer);
}

/** stat(2) of a path, symlinks followed, via statx(AT_FDCWD, path, 0). */
export function stat(path: string): FileStatus {
  check('statx', () => c_statx(AT_FDCWD, path, 0, STATX_BASIC_STATS, statxBuffer), path);
  return fileStatusOf(statxBuffer);
}

function fileStatusOf(buffer: Buffer): FileStatus {
  const mode = buffer.readUInt16LE(STX_MODE);
  const type = mode & S_IFMT;
  return {
    mode,
    ino: buffer.readBigUInt64LE(STX_INO),
    size: buffer.readBigUInt64LE(STX_SIZE),
    dev: { major: buffer.readUInt32LE(STX_DEV_MAJOR), minor: buffer.readUInt32LE(STX_DEV_MINOR) },
    rdev: { major: buffer.readUInt32LE(STX_RDEV_MAJOR), minor: buffer.readUInt32LE(STX_RDEV_MINOR) },
    isBlock: type === S_IFBLK,
    isChar: type === S_IFCHR,
    isRegular: type === S_IFREG,
    isSocket: type === S_IFSOCK,
  };
}

// ---------------------------------------------------------------------------------------
// Readiness

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
  const optionsOf = (wanted: ReadinessInterest) => ({
    readable: Boolean(wanted.readable),
    writable: Boolean(wanted.writable),
    disconnect: Boolean(wanted.disconnect),
  });
  const wantsAny = (wanted: ReadinessInterest): boolean => Boolean(wanted.readable || wanted.writable || wanted.disconnect);
  let active = wantsAny(interest);
  const pollOptions = optionsOf(interest);
  // koffi.node.poll starts at once; with nothing to watch we start then stop, which keeps
  // one handle (and so one libuv watcher) per fd for the watcher's whole life.
  const handle = (koffi.node.poll as unknown as (fd: number, opts: ReadinessInterest, cb: typeof callback) => KoffiPollHandle | null)(
    fd,
    active ? pollOptions : { readable: true },
    callback,
  );
  if (!handle) throw new SystemCallError('poll', Errno.EBADF, `fd ${fd}`);
  if (!active) handle.stop();
  return {
    update(next: ReadinessInterest): void {
      if (closed) return;
      const wantActive = wantsAny(next);
      if (wantActive) handle.start(optionsOf(next), callback);
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
