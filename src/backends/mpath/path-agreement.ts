// Bringing the paths of a map to agree on a registration. Each path is its own I_T nexus, so
// a command that reached only some of them (a library call sent on one path, a device that
// said GOOD without registering, a path that missed an earlier registration) leaves the LU
// with some nexuses registered and some not. REGISTER AND IGNORE EXISTING KEY is idempotent
// per nexus, so the paths that disagree are simply registered again.

import type { MultipathdPrSync } from '../../multipathd/pr-sync';
import { Status } from '../../scsi/constants';
import { checkCondition, Sense, type ScsiResult } from '../../scsi/sense';
import { hex } from './mpath-log';
import type { WorkerLogger } from './mpath-worker-client';
import { isTransportFailure, pathsMissingKey, registrationsWithKey, type OpenedPath, type PathIo } from './path-io';
import type { ReturningPathWatch } from './returning-paths';

/** What the pieces of the backend that act on a map's paths share (one of each per backend). */
export interface PathServices {
  readonly paths: PathIo;
  readonly agreement: PathAgreement;
  readonly multipathd: MultipathdPrSync;
  readonly returningPaths: ReturningPathWatch;
  readonly logger?: WorkerLogger;
}

/** The APTPL and ALL_TG_PT bits a registration is sent with. */
export interface RegistrationFlags {
  readonly aptpl: boolean;
  readonly allTgPt: boolean;
}

/** What a repair did: the paths re-registered, the paths that did not answer, and the device's refusal if one refused. */
export type PathRepair =
  | { readonly ok: true; readonly repaired: string[]; readonly unreachable: string[] }
  | { readonly ok: false; readonly result: ScsiResult; readonly repaired: string[]; readonly unreachable: string[] };

/** The repair when the paths need none. */
export function nothingRepaired(): PathRepair {
  return { ok: true, repaired: [], unreachable: [] };
}

export class PathAgreement {
  constructor(
    private readonly paths: PathIo,
    private readonly logger?: WorkerLogger,
  ) {}

  /**
   * After a registration: the nexus of every path that answers must hold `key` (or, when
   * unregistering, no nexus may hold `oldKey`). The paths that do not are registered again
   * with REGISTER AND IGNORE (every answering path when unregistering).
   */
  async makePathsAgree(paths: readonly OpenedPath[], key: bigint, flags: RegistrationFlags, oldKey?: bigint): Promise<PathRepair> {
    const { answering, unreachable, firstFailure } = await this.paths.registrationsOnPaths(paths);
    if (answering.length === 0) {
      this.logger?.error({ paths: unreachable }, 'mpath: no path of the map answers after the registration');
      return { ok: false, result: firstFailure ?? checkCondition(Sense.LUN_COMMUNICATION_FAILURE), repaired: [], unreachable };
    }
    if (oldKey !== undefined) {
      if (registrationsWithKey(answering, oldKey) === 0) return { ok: true, repaired: [], unreachable };
      this.logger?.warn({ key: hex(oldKey), answeringPaths: answering.map((a) => a.path.name) }, 'mpath: the old key is still registered; unregistering each path');
      return this.reRegisterEveryPath(paths, key, flags);
    }
    const { missing, byTargetPort } = pathsMissingKey(answering, key);
    if (missing.length === 0) return { ok: true, repaired: [], unreachable };
    this.logger?.warn({ key: hex(key), missing, byTargetPort }, 'mpath: not every answering path is registered after GOOD; registering those paths');
    const repair = await this.reRegisterEveryPath(paths.filter((p) => missing.includes(p.path.name)), key, flags);
    return { ...repair, unreachable: [...new Set([...unreachable, ...repair.unreachable])] };
  }

  /** REGISTER AND IGNORE EXISTING KEY with `key` (0 = unregister) on every path that answers. */
  async reRegisterEveryPath(paths: readonly OpenedPath[], key: bigint, flags: RegistrationFlags): Promise<PathRepair> {
    const results = await Promise.all(
      paths.map(async (p) => ({ path: p.path, result: p.fd === undefined ? undefined : await this.paths.registerIgnore(p.fd, key, flags) })),
    );
    const repaired: string[] = [];
    const unreachable: string[] = [];
    let failure: ScsiResult | undefined;
    for (const r of results) {
      if (!r.result || isTransportFailure(r.result)) unreachable.push(r.path.name);
      else if (r.result.status === Status.GOOD) repaired.push(r.path.name);
      else {
        failure ??= r.result;
        this.logger?.error({ path: r.path.name, status: r.result.status }, 'mpath: REGISTER AND IGNORE on a path failed');
      }
    }
    if (repaired.length === 0 && !failure) failure = checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    if (failure) return { ok: false, result: failure, repaired, unreachable };
    this.logger?.info({ key: hex(key), paths: repaired, unreachable }, 'mpath: REGISTER AND IGNORE sent on every answering path');
    return { ok: true, repaired, unreachable };
  }
}
