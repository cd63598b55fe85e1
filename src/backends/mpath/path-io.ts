// PERSISTENT RESERVE commands on the individual paths (I_T nexuses) of a multipath map,
// over SG_IO. The mpath backend uses these for what libmpathpersist 0.9.4 gets wrong or
// does slowly: the REGISTER fan-out, the per-path check after it, and the repairs.

import * as fs from 'fs';
import { PrInAction, SenseKey, Status } from '../../scsi/constants';
import type { PrCommand, PrInCommand } from '../../scsi/pr-command';
import { prInCommand, prOutCommand } from '../pr-commands';
import { decodeReadFullStatus, decodeReadKeys, decodeReadReservation, type InDataDecodeResult, type ReadKeysData } from '../../scsi/pr-in-data';
import { checkCondition, isUnitAttention, Sense, senseKeyOf, type ScsiResult } from '../../scsi/sense';
import { passThroughPr } from '../sg/pass-through';
import { hostDeviceTree, pathNode, type MapPath, type DeviceTree } from '../../device';

const READ_ALL = 8192;

export type KeysRead = { ok: true; keys: bigint[] } | { ok: false; result: ScsiResult };

/** One path of the map, opened for SG_IO, or the reason it could not be. */
export type OpenedPath = { readonly path: MapPath; readonly fd: number } | { readonly path: MapPath; readonly fd?: undefined; readonly openError: string };

function readAll(action: number): PrInCommand {
  return prInCommand(action, READ_ALL);
}

/**
 * A PR IN answer decoded, or why not: the device's own status when it did not say GOOD,
 * LUN COMMUNICATION FAILURE when no path answered or the data does not decode.
 */
function decodedIn<T>(result: ScsiResult | undefined, decode: (data: Buffer) => InDataDecodeResult<T>): { ok: true; value: T } | { ok: false; result: ScsiResult } {
  if (!result) return { ok: false, result: checkCondition(Sense.LUN_COMMUNICATION_FAILURE) };
  if (result.status !== Status.GOOD) return { ok: false, result };
  const decoded = decode(result.dataIn);
  return decoded.ok ? { ok: true, value: decoded.value } : { ok: false, result: checkCondition(Sense.LUN_COMMUNICATION_FAILURE) };
}

function keysOf(read: { ok: true; value: ReadKeysData } | { ok: false; result: ScsiResult }): KeysRead {
  return read.ok ? { ok: true, keys: read.value.keys } : read;
}

/**
 * Results that mean "this path is gone", not "the device refused": errno and host-status
 * failures, which resultFromSgIo turns into ABORTED COMMAND, BUSY or TASK SET FULL (a
 * device's own refusal is ILLEGAL REQUEST or RESERVATION CONFLICT), and CHECK CONDITION
 * without sense that decodes.
 */
export function isTransportFailure(result: ScsiResult): boolean {
  if (result.status === Status.BUSY || result.status === Status.TASK_SET_FULL) return true;
  if (result.status !== Status.CHECK_CONDITION) return false;
  const key = senseKeyOf(result);
  return key === undefined || key === SenseKey.ABORTED_COMMAND;
}

/** How a command reaches one path: SG_IO on the path's node, or a fake in tests. */
export interface PathTransport {
  /** Opens the path's node; throws when it cannot (a path that is offline or gone). */
  open(path: MapPath, deviceTree: DeviceTree): number;
  close(fd: number): void;
  send(fd: number, command: PrCommand, timeoutMs: number): Promise<ScsiResult>;
}

export const sgIoPathTransport: PathTransport = {
  // Root (CAP_SYS_RAWIO) may send PR IN/OUT over SG_IO on a read-only fd; O_NONBLOCK keeps
  // the open from waiting on a path that is going away.
  open: (path, deviceTree) => fs.openSync(pathNode(path, deviceTree), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK),
  close: (fd) => fs.closeSync(fd),
  send: async (fd, command, timeoutMs) => (await passThroughPr(fd, command, timeoutMs)).result,
};

export interface PathIoOptions {
  readonly timeoutMs: number;
  /** Where the path nodes and their VPD pages are; default the host's. */
  readonly deviceTree?: DeviceTree;
  readonly transport?: PathTransport;
}

export class PathIo {
  private readonly timeoutMs: number;
  private readonly deviceTree: DeviceTree;
  private readonly transport: PathTransport;

  constructor(options: PathIoOptions) {
    this.timeoutMs = options.timeoutMs;
    this.deviceTree = options.deviceTree ?? hostDeviceTree;
    this.transport = options.transport ?? sgIoPathTransport;
  }

  /** Sends one PR CDB; a unit attention (reported once per nexus, e.g. "registrations preempted") is retried once. */
  async send(fd: number, command: PrCommand): Promise<ScsiResult> {
    const result = await this.transport.send(fd, command, this.timeoutMs);
    return isUnitAttention(result) ? this.transport.send(fd, command, this.timeoutMs) : result;
  }

  async readKeys(fd: number): Promise<KeysRead> {
    return keysOf(decodedIn(await this.send(fd, readAll(PrInAction.READ_KEYS)), decodeReadKeys));
  }

  /** READ KEYS on the first path of the map that answers (see prInOnAnyPath). */
  async readKeysOnAnyPath(mapPaths: readonly MapPath[]): Promise<KeysRead> {
    return keysOf(decodedIn((await this.prInOnAnyPath(mapPaths, readAll(PrInAction.READ_KEYS)))?.result, decodeReadKeys));
  }

  /** READ RESERVATION on the first path of the map that answers: the holder's key and type, if any. */
  async readReservationOnAnyPath(mapPaths: readonly MapPath[]): Promise<{ ok: true; holder?: { key: bigint; type: number } } | { ok: false; result: ScsiResult }> {
    const read = decodedIn((await this.prInOnAnyPath(mapPaths, readAll(PrInAction.READ_RESERVATION)))?.result, decodeReadReservation);
    if (!read.ok) return read;
    const r = read.value.reservation;
    return { ok: true, holder: r ? { key: r.key, type: r.type } : undefined };
  }

  /** REGISTER AND IGNORE EXISTING KEY with `key` (0 unregisters) on one nexus. */
  registerIgnore(fd: number, key: bigint, flags: { aptpl: boolean; allTgPt: boolean }): Promise<ScsiResult> {
    return this.send(fd, prOutCommand({ action: 'register-ignore', serviceActionKey: key, allTgPt: flags.allTgPt, aptpl: flags.aptpl }));
  }

  /** Opens every path of the map and runs `task` with them, closing them after. */
  async withOpenPaths<T>(mapPaths: readonly MapPath[], task: (paths: readonly OpenedPath[]) => Promise<T>): Promise<T> {
    const opened: OpenedPath[] = mapPaths.map((path) => {
      try {
        return { path, fd: this.transport.open(path, this.deviceTree) };
      } catch (err) {
        return { path, openError: (err as Error).message };
      }
    });
    try {
      return await task(opened);
    } finally {
      for (const p of opened) if (p.fd !== undefined) this.transport.close(p.fd);
    }
  }

  /**
   * One PR IN on the first path that answers; the data describes the logical unit, so any
   * path gives the whole answer. Not SG_IO on the map: with queue_if_no_path and every path
   * down, the kernel retries a dm ioctl forever (dm_prepare_ioctl on -ENOTCONN), holding a
   * threadpool thread, while a command on a path has a SCSI timeout. Paths the SCSI layer
   * calls running go first. Undefined when no path answers.
   */
  async prInOnAnyPath(mapPaths: readonly MapPath[], command: PrInCommand): Promise<{ path: string; result: ScsiResult } | undefined> {
    return this.withOpenPaths(mapPaths, async (paths) => {
      const ordered = [...paths.filter((p) => p.path.scsiState === 'running'), ...paths.filter((p) => p.path.scsiState !== 'running')];
      for (const p of ordered) {
        if (p.fd === undefined) continue;
        const result = await this.send(p.fd, command);
        if (!isTransportFailure(result)) return { path: p.path.name, result };
      }
      return undefined;
    });
  }

  /**
   * The registrations one path sees: READ FULL STATUS, which names each registration's
   * target port, or READ KEYS on a device that does not support it (no target ports then).
   */
  async readRegistrations(fd: number): Promise<{ ok: true; registrations: SeenRegistration[] } | { ok: false; result: ScsiResult }> {
    const result = await this.send(fd, readAll(PrInAction.READ_FULL_STATUS));
    if (result.status === Status.GOOD) {
      const decoded = decodeReadFullStatus(result.dataIn);
      if (decoded.ok && !decoded.truncated) {
        return { ok: true, registrations: decoded.value.descriptors.map((d) => ({ key: d.key, relativeTargetPort: d.relativeTargetPort, allTgPt: d.allTgPt })) };
      }
    } else if (senseKeyOf(result) !== SenseKey.ILLEGAL_REQUEST) {
      return { ok: false, result };
    }
    const keys = await this.readKeys(fd);
    return keys.ok ? { ok: true, registrations: keys.keys.map((key) => ({ key, allTgPt: false })) } : keys;
  }

  /** The registrations every opened path sees, read in parallel, with each path's target port; and the paths that did not answer. */
  async registrationsOnPaths(paths: readonly OpenedPath[]): Promise<{ answering: AnsweringPath[]; unreachable: string[]; firstFailure?: ScsiResult }> {
    const reads = await Promise.all(paths.map(async (p) => ({ p, read: p.fd === undefined ? undefined : await this.readRegistrations(p.fd) })));
    const answering: AnsweringPath[] = [];
    const unreachable: string[] = [];
    let firstFailure: ScsiResult | undefined;
    for (const { p, read } of reads) {
      if (read?.ok) answering.push({ path: p.path, relativeTargetPort: this.deviceTree.relativeTargetPort(p.path.name), registrations: read.registrations });
      else {
        unreachable.push(p.path.name);
        if (read && !read.ok) firstFailure ??= read.result;
      }
    }
    return { answering, unreachable, firstFailure };
  }
}

/** A registration as a path reports it; READ KEYS gives no target port. */
export interface SeenRegistration {
  readonly key: bigint;
  readonly relativeTargetPort?: number;
  readonly allTgPt: boolean;
}

export interface AnsweringPath {
  readonly path: MapPath;
  /** The target port this path goes through (VPD page 83h), if the device reports it. */
  readonly relativeTargetPort?: number;
  readonly registrations: readonly SeenRegistration[];
}

/** How many registrations hold `key`, as the answering paths see the LU (the smallest count is trusted). */
export function registrationsWithKey(answering: readonly AnsweringPath[], key: bigint): number {
  if (answering.length === 0) return 0;
  return Math.min(...answering.map((a) => a.registrations.filter((r) => r.key === key).length));
}

/**
 * The answering paths whose nexus does not hold `key`. When every path knows its target port
 * and READ FULL STATUS names them, each target port must carry at least as many registrations
 * with the key as our paths go through it (an ALL_TG_PT registration counts on every port):
 * that names the paths, and a registration on another port cannot hide a missing one. Without
 * target ports, the count over the whole LU decides, and a shortfall names every answering
 * path (which cannot be told apart then; registering an already registered nexus again is
 * harmless).
 */
export function pathsMissingKey(answering: readonly AnsweringPath[], key: bigint): { missing: string[]; byTargetPort: boolean } {
  const byTargetPort = answering.length > 0 && answering.every((a) => a.relativeTargetPort !== undefined && a.registrations.every((r) => r.relativeTargetPort !== undefined));
  if (!byTargetPort) {
    const missing = registrationsWithKey(answering, key) >= answering.length ? [] : answering.map((a) => a.path.name);
    return { missing, byTargetPort };
  }
  const missing: string[] = [];
  const byPort = new Map<number, AnsweringPath[]>();
  for (const a of answering) byPort.set(a.relativeTargetPort!, [...(byPort.get(a.relativeTargetPort!) ?? []), a]);
  for (const [port, group] of byPort) {
    // Every path of the group sees the same LU; the first one's view is as good as any.
    const holding = group[0].registrations.filter((r) => r.key === key && (r.allTgPt || r.relativeTargetPort === port)).length;
    if (holding < group.length) missing.push(...group.map((a) => a.path.name));
  }
  return { missing, byTargetPort };
}
