// How a failed libc call is reported: one error class carrying errno and its name, and the
// checks that throw it. errno is read immediately after the native call, before any other
// koffi call can overwrite it.

import koffi from 'koffi';
import { errnoName, LinuxErrno } from './errno';
import { libcHandle } from './libc-handle';

const c_strerror = libcHandle.func('const char *strerror(int errnum)');

export class SystemCallError extends Error {
  readonly syscall: string;
  readonly errno: number;
  /** Symbolic name such as 'EAGAIN', or 'E<number>' when unknown. */
  readonly code: string;

  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall}${detail ? ` ${detail}` : ''}: ${String(c_strerror(errno))} (${code})`);
    this.name = 'SystemCallError';
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
  }
}

/** Runs a native call and turns a negative return into a SystemCallError, retrying on EINTR. */
export function check(syscall: string, call: () => number, detail?: string): number {
  for (;;) {
    const ret = call();
    if (ret >= 0) return ret;
    const errno = koffi.errno();
    if (errno === LinuxErrno.EINTR) continue;
    throw new SystemCallError(syscall, errno, detail);
  }
}

/** Like check(), but "would block" (EAGAIN, an expected answer on nonblocking fds) becomes null. */
export function checkNonBlocking(syscall: string, call: () => number): number | null {
  for (;;) {
    const ret = call();
    if (ret >= 0) return ret;
    const errno = koffi.errno();
    if (errno === LinuxErrno.EINTR) continue;
    if (errno === LinuxErrno.EAGAIN) return null;
    throw new SystemCallError(syscall, errno);
  }
}
