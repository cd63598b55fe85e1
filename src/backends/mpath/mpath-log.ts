// What the mpath backend tells the log beyond each call's own lines: one line per PR OUT it
// carried out on a map's paths, saying which paths took it, which were repaired or rolled
// back and which did not answer. Operators read it to see a map's paths disagree; tests
// read it to see what the backend did on each path.

import type { WorkerLogger } from './mpath-worker-client';

/** The message of the per-command report line; its fields are an MpathCommandReport. */
export const MPATH_REPORT_MESSAGE = 'mpath: what the paths of the map did';

/** What the backend did on the paths, beyond the library call. */
export interface MpathCommandReport {
  readonly map: string;
  /** libmpathpersist's return code, when the library carried the command. */
  readonly rc?: number;
  /** Paths that took a REGISTER / REGISTER AND IGNORE in the fan-out. */
  readonly registeredPaths?: readonly string[];
  /** Paths re-registered (or unregistered) with REGISTER AND IGNORE because the paths disagreed. */
  readonly repairedPaths: readonly string[];
  /** Paths put back to the previous key after another path refused the registration. */
  readonly rolledBackPaths?: readonly string[];
  /** Paths that did not answer (down); registered by multipathd or the returning-path watch when they answer again. */
  readonly unreachablePaths: readonly string[];
  /** RELEASE answered without calling the library because another key holds the reservation. */
  readonly releaseShortCircuited?: boolean;
}

export function logReport(logger: WorkerLogger | undefined, report: MpathCommandReport): void {
  logger?.info({ ...report }, MPATH_REPORT_MESSAGE);
}

/** A reservation key as the mpath log lines show it. */
export function hex(key: bigint): string {
  return `0x${key.toString(16)}`;
}
