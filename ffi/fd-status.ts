// What an fd is and how it is set: fcntl flags (access mode, O_NONBLOCK, FD_CLOEXEC) and
// statx. Layouts are those of Linux LP64 (x86-64, aarch64).

import { libcHandle } from './libc-handle';
import { check } from './system-call';

export const F_GETFL = 3;
export const F_SETFL = 4;
export const O_ACCMODE = 0o3;
export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const AT_FDCWD = -100;
const AT_EMPTY_PATH = 0x1000;
const STATX_BASIC_STATS = 0x7ff;
const S_IFMT = 0o170000;
const S_IFBLK = 0o060000;
const S_IFCHR = 0o020000;
const S_IFREG = 0o100000;
const S_IFSOCK = 0o140000;

const c_fcntl = libcHandle.func('int fcntl(int fd, int cmd, ...)');
const c_statx = libcHandle.func('int statx(int dirfd, const char *path, int flags, uint32_t mask, _Out_ uint8_t *buf)');

// ---------------------------------------------------------------------------------------
// fcntl

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

/** Clears FD_CLOEXEC so the fd survives execve. */
export function keepAcrossExec(fd: number): void {
  const flags = check('fcntl', () => c_fcntl(fd, F_GETFD), `F_GETFD fd ${fd}`);
  if (flags & FD_CLOEXEC) check('fcntl', () => c_fcntl(fd, F_SETFD, 'int', flags & ~FD_CLOEXEC), `F_SETFD fd ${fd}`);
}

// ---------------------------------------------------------------------------------------
// statx

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
