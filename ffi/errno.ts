// Linux errno values and their names: the one table of them in the project. Plain data,
// with no koffi and nothing native, so the pure SCSI code (src/scsi/errno-sense.ts) uses it
// as well as every ffi wrapper that reports an errno.

import * as os from 'os';

/**
 * Linux errno values (asm-generic/errno*.h, as on x86-64 and aarch64) that the project
 * names in code. Spelled out because Node's os.constants.errno lacks EBADE, EREMOTEIO and
 * ENOMEDIUM.
 */
export const LinuxErrno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  ENODEV: 19,
  EINVAL: 22,
  ENOTTY: 25,
  ENOSPC: 28,
  EPIPE: 32,
  EDOM: 33,
  ENAMETOOLONG: 36,
  EBADE: 52,
  ENODATA: 61,
  EOPNOTSUPP: 95,
  ECONNRESET: 104,
  ENOTCONN: 107,
  ECONNREFUSED: 111,
  EINPROGRESS: 115,
  EREMOTEIO: 121,
  ENOMEDIUM: 123,
} as const;

// Node's names first, so aliases keep the name Node lists first (11 is EAGAIN, 95 ENOTSUP);
// LinuxErrno then names what Node does not know.
const ERRNO_NAMES = new Map<number, string>();
for (const [name, value] of [...Object.entries(os.constants.errno), ...Object.entries(LinuxErrno)]) {
  if (!ERRNO_NAMES.has(value)) ERRNO_NAMES.set(value, name);
}

/** The symbolic name of an errno value, such as 'EAGAIN', or 'E<number>' when unknown. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}
