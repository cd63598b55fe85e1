// What /proc says about a process: its open fds and the credentials of each of its threads.

import * as fs from 'fs';
import { parseProcStatus, type ProcessCredentials } from '../../src/daemon/privilege-plan';

/** Number of open fds of a process. */
export function openFdCount(pid: number | 'self' = 'self'): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * How many fds of process `pid` refer to the same open object as our `fd` (same
 * /proc/.../fd link target, e.g. "pipe:[1234]"). Our own fd counts when pid is 'self'.
 */
export function holdersOf(fd: number, pid: number | 'self' = 'self'): number {
  const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
  let count = 0;
  for (const entry of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${entry}`) === target) count++;
    } catch {
      // Closed while we looked (e.g. the readdir fd itself).
    }
  }
  return count;
}

/** The credentials of every thread of a process (capabilities and no_new_privs are per thread). */
export function threadCredentials(pid: number): { tid: number; credentials: ProcessCredentials }[] {
  return fs
    .readdirSync(`/proc/${pid}/task`)
    .map((tid) => ({ tid: Number(tid), credentials: parseProcStatus(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8')) }));
}
