// Bytes in and out of a nonblocking fd: pipe, read, write and close. "Would block" is
// answered as null, not thrown (see checkNonBlocking).

import koffi from 'koffi';
import { LinuxErrno } from './errno';
import { O_NONBLOCK } from './fd-status';
import { libcHandle } from './libc-handle';
import { check, checkNonBlocking, SystemCallError } from './system-call';

const O_CLOEXEC = 0o2000000;
/** What read() asks for when the caller names no size. */
const DEFAULT_READ_BYTES = 64 * 1024;

const c_pipe2 = libcHandle.func('int pipe2(_Out_ int *fds, int flags)');
const c_read = libcHandle.func('intptr_t read(int fd, _Out_ uint8_t *buf, size_t count)');
const c_write = libcHandle.func('intptr_t write(int fd, const uint8_t *buf, size_t count)');
const c_close = libcHandle.func('int close(int fd)');

/** A pipe, close-on-exec, nonblocking by default: [readEnd, writeEnd]. */
export function pipe(options: { nonBlocking?: boolean } = {}): [number, number] {
  const flags = O_CLOEXEC | (options.nonBlocking === false ? 0 : O_NONBLOCK);
  const fds = [-1, -1];
  check('pipe2', () => c_pipe2(fds, flags));
  return [fds[0], fds[1]];
}

/** read(2) on a nonblocking fd: the bytes (empty at end of file), or null on EAGAIN. */
export function read(fd: number, maxBytes = DEFAULT_READ_BYTES): Buffer | null {
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
    if (errno !== LinuxErrno.EINTR) throw new SystemCallError('close', errno, `fd ${fd}`);
  }
}
