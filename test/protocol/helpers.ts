// Shared test utilities for the protocol suites: fd accounting and small waits that
// resolve on events (never on elapsed time).

import * as fs from 'fs';

/** Number of open fds of this process. */
export function openFdCount(pid: number | 'self' = 'self'): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** The set of open fd numbers of this process. */
export function openFds(pid: number | 'self' = 'self'): Set<number> {
  return new Set(fs.readdirSync(`/proc/${pid}/fd`).map(Number));
}
