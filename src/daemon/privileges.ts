// The privilege drop, after the socket is bound and the pidfile written (qemu-pr-helper's
// order). What is kept depends on the backends that may run:
//
//   CAP_SYS_RAWIO  SG_IO with PERSISTENT RESERVE IN/OUT on an sd, sg or dm node: the kernel's
//                  SCSI command filter lets PR opcodes through only with this capability
//                  (sg, blkpr's PR IN, mpath's path commands).
//   CAP_SYS_ADMIN  IOC_PR_* ioctls on kernels before 6.5 (blkpr), and device-mapper and
//                  libmpathpersist's work on dm-multipath maps (mpath).
//   nothing        the emulated backend (regular files only).
//
// Like qemu-pr-helper's libcap-ng drop, this runs even without -u/-g: every capability not
// listed is removed from the effective, permitted, inheritable and bounding sets, and
// no_new_privs is set. With -u/-g the process switches user and group (supplementary groups
// dropped) while keeping the listed capabilities through PR_SET_KEEPCAPS.
//
// Capabilities, the bounding set, keepcaps and no_new_privs are per-thread in Linux, and a
// Node process has many threads (SG_IO runs on libuv's pool). So after setting up the main
// thread the daemon re-executes itself (same pid, same argv): the new image starts with
// exactly these credentials in its only thread, and every thread it creates inherits them.
// The listening socket crosses the execve as an inherited fd named in MPATH_PR_REEXEC.
// Kept capabilities are also raised as ambient capabilities, which is how a non-root image
// keeps them across execve (and how a libmpathpersist child process would).

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import pino, { type Logger } from 'pino';
import * as caps from '../../ffi/capabilities';
import { Cap, capabilityName } from '../../ffi/capabilities';
import { ConfigError, type BackendSetting } from './config';

// ---------------------------------------------------------------------------------------
// What the process has (read from /proc, so tests read the daemon the same way)

export interface ProcessCredentials {
  /** real, effective, saved, filesystem */
  readonly uids: readonly number[];
  readonly gids: readonly number[];
  readonly groups: readonly number[];
  readonly inheritable: bigint;
  readonly permitted: bigint;
  readonly effective: bigint;
  readonly bounding: bigint;
  readonly ambient: bigint;
  readonly noNewPrivs: boolean;
}

/** Parses /proc/<pid>/status (or /proc/<pid>/task/<tid>/status). Throws on a missing field. */
export function parseProcStatus(text: string): ProcessCredentials {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  const need = (name: string) => {
    const value = fields.get(name);
    if (value === undefined) throw new Error(`/proc status has no ${name} line`);
    return value;
  };
  const numbers = (name: string) => need(name).split(/\s+/).filter(Boolean).map(Number);
  const mask = (name: string) => BigInt(`0x${need(name)}`);
  return {
    uids: numbers('Uid'),
    gids: numbers('Gid'),
    groups: fields.get('Groups') ? numbers('Groups') : [],
    inheritable: mask('CapInh'),
    permitted: mask('CapPrm'),
    effective: mask('CapEff'),
    bounding: mask('CapBnd'),
    ambient: fields.has('CapAmb') ? mask('CapAmb') : 0n,
    noNewPrivs: fields.get('NoNewPrivs') === '1',
  };
}

export function readCredentials(pid: number | 'self' = 'self'): ProcessCredentials {
  return parseProcStatus(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
}

export function capabilityMask(list: readonly number[]): bigint {
  return list.reduce((mask, cap) => mask | (1n << BigInt(cap)), 0n);
}

export function capabilityList(mask: bigint): number[] {
  const list: number[] = [];
  for (let cap = 0; cap < 64; cap++) if (mask & (1n << BigInt(cap))) list.push(cap);
  return list;
}

export function describeMask(mask: bigint): string {
  const list = capabilityList(mask);
  return list.length ? list.map(capabilityName).join(' ') : '(none)';
}

// ---------------------------------------------------------------------------------------
// What the daemon needs

export interface CapabilityNeed {
  readonly cap: number;
  readonly why: string;
}

/** The capabilities kept for a backend setting, with the reason for each. */
export function requiredCapabilities(backend: BackendSetting): CapabilityNeed[] {
  const rawio = { cap: Cap.SYS_RAWIO, why: 'SG_IO with PR opcodes on SCSI disks, sg nodes and dm-multipath maps' };
  const admin = { cap: Cap.SYS_ADMIN, why: 'IOC_PR_* ioctls (kernels before 6.5), device-mapper and libmpathpersist' };
  switch (backend) {
    case 'emulated':
      return [];
    case 'sg':
      return [rawio];
    case 'blkpr':
    case 'mpath':
    case 'auto':
      return [rawio, admin];
  }
}

// ---------------------------------------------------------------------------------------
// User and group lookup (names first, then numbers, as qemu-pr-helper's -u/-g)

interface AccountEntry {
  readonly name: string;
  readonly id: number;
  readonly primaryGid?: number;
}

function parseAccountLine(database: 'passwd' | 'group', line: string): AccountEntry | undefined {
  const fields = line.split(':');
  if (fields.length < 3 || !/^\d+$/.test(fields[2])) return undefined;
  const primaryGid = database === 'passwd' && /^\d+$/.test(fields[3] ?? '') ? Number(fields[3]) : undefined;
  return { name: fields[0], id: Number(fields[2]), primaryGid };
}

/** By name in /etc/<database>, then through NSS (getent answers names and numbers: LDAP, sssd…). */
function lookupAccount(database: 'passwd' | 'group', key: string): AccountEntry | undefined {
  try {
    for (const line of fs.readFileSync(`/etc/${database}`, 'utf8').split('\n')) {
      const entry = parseAccountLine(database, line);
      if (entry?.name === key) return entry;
    }
  } catch {
    // No file: NSS below.
  }
  const result = spawnSync('getent', [database, key], { encoding: 'utf8', timeout: 5000 });
  return result.status === 0 && result.stdout ? parseAccountLine(database, result.stdout.split('\n')[0]) : undefined;
}

export interface TargetIdentity {
  readonly uid?: number;
  readonly gid?: number;
}

const MAX_ID = 0xfffffffe; // (uid_t)-1 means "unchanged" to the kernel

/**
 * -u/-g to numbers. A name is looked up first, then a decimal number is taken as is (as
 * qemu-pr-helper does). With only -u, the group is the user's primary group: staying in
 * group root after leaving user root would keep root's group file access.
 */
export function resolveIdentity(spec: { user?: string; group?: string }): TargetIdentity {
  let uid: number | undefined;
  let primaryGid: number | undefined;
  if (spec.user !== undefined) {
    const entry = lookupAccount('passwd', spec.user);
    if (entry) {
      uid = entry.id;
      primaryGid = entry.primaryGid;
    } else if (/^\d+$/.test(spec.user) && Number(spec.user) <= MAX_ID) {
      uid = Number(spec.user);
    } else {
      throw new ConfigError(`invalid user ${JSON.stringify(spec.user)}: no such user`);
    }
  }
  let gid: number | undefined;
  if (spec.group !== undefined) {
    const entry = lookupAccount('group', spec.group);
    if (entry) gid = entry.id;
    else if (/^\d+$/.test(spec.group) && Number(spec.group) <= MAX_ID) gid = Number(spec.group);
    else throw new ConfigError(`invalid group ${JSON.stringify(spec.group)}: no such group`);
  } else if (uid !== undefined) {
    if (primaryGid === undefined) throw new ConfigError(`user ${spec.user} has no passwd entry to take a primary group from; give -g/--group too`);
    gid = primaryGid;
  }
  return { uid, gid };
}

/** --allow-uid: a user name or a number. */
export function resolveUserId(spec: string): number {
  const entry = lookupAccount('passwd', spec);
  if (entry) return entry.id;
  if (/^\d+$/.test(spec) && Number(spec) <= MAX_ID) return Number(spec);
  throw new ConfigError(`invalid user ${JSON.stringify(spec)}: no such user`);
}

/** --allow-gid: a group name or a number. */
export function resolveGroupId(spec: string): number {
  const entry = lookupAccount('group', spec);
  if (entry) return entry.id;
  if (/^\d+$/.test(spec) && Number(spec) <= MAX_ID) return Number(spec);
  throw new ConfigError(`invalid group ${JSON.stringify(spec)}: no such group`);
}

// ---------------------------------------------------------------------------------------
// The plan: a pure function of what we have and what we want

export type PrivilegePlan =
  | {
      readonly kind: 'none';
      /** Why nothing is done. */
      readonly reason: string;
      /** Wanted capabilities the process does not have (features that will fail per command). */
      readonly missing: bigint;
    }
  | {
      readonly kind: 'drop';
      readonly uid?: number;
      readonly gid?: number;
      /** Kept in effective, permitted, inheritable, ambient and bounding. */
      readonly keep: bigint;
      readonly missing: bigint;
      /** False when the process lacks CAP_SETPCAP: the bounding set is then left as is. */
      readonly clearBounding: boolean;
    };

export function allCapabilities(lastCap: number): bigint {
  return (1n << BigInt(lastCap + 1)) - 1n;
}

/**
 * Decides whether a drop is needed. 'none' when the process already holds no more than
 * `want` and already has the target identity: that is the state right after the re-exec,
 * and the state of an unprivileged user running the daemon.
 */
export function planPrivilegeDrop(current: ProcessCredentials, target: TargetIdentity & { want: bigint }, lastCap: number): PrivilegePlan {
  const all = allCapabilities(lastCap);
  const keep = target.want & current.permitted;
  const missing = target.want & ~current.permitted;
  const identityChange =
    (target.uid !== undefined && current.uids.some((id) => id !== target.uid)) ||
    (target.gid !== undefined && (current.gids.some((id) => id !== target.gid) || current.groups.length > 0));
  const held = current.permitted | current.effective | current.inheritable | current.ambient;
  const excess = held & ~target.want;
  const canClearBounding = (current.effective & (1n << BigInt(Cap.SETPCAP))) !== 0n;
  const boundingExcess = current.bounding & all & ~target.want;
  if (!identityChange && excess === 0n && (boundingExcess === 0n || !canClearBounding)) {
    const reason =
      current.permitted === 0n
        ? 'the process has no capabilities to drop'
        : boundingExcess === 0n
          ? 'already holds only the capabilities it needs'
          : 'holds only the capabilities it needs; the bounding set cannot be narrowed without CAP_SETPCAP';
    return { kind: 'none', reason, missing };
  }
  return { kind: 'drop', uid: target.uid, gid: target.gid, keep, missing, clearBounding: canClearBounding };
}

// ---------------------------------------------------------------------------------------
// Doing it

/** Names the inherited listening socket to the re-executed image. */
export const REEXEC_ENV = 'MPATH_PR_REEXEC';

export interface ReexecHandoff {
  /** The pid that set it; ignored by any other process (as LISTEN_PID). */
  readonly pid: number;
  readonly listenFd: number;
  /** The pathname the socket is bound to, and its inode, so close() can remove it. */
  readonly socketPath?: string;
  readonly socketIno?: number;
  /** What `listening` said before the re-exec. */
  readonly listening: string;
}

/** The handoff for this process, removed from the environment so children never see it. */
export function takeReexecHandoff(env: NodeJS.ProcessEnv = process.env, pid = process.pid): ReexecHandoff | undefined {
  const text = env[REEXEC_ENV];
  delete env[REEXEC_ENV];
  if (text === undefined) return undefined;
  let handoff: ReexecHandoff;
  try {
    handoff = JSON.parse(text) as ReexecHandoff;
  } catch {
    throw new ConfigError(`${REEXEC_ENV} is not valid JSON`);
  }
  if (handoff.pid !== pid) return undefined;
  if (!Number.isInteger(handoff.listenFd) || handoff.listenFd < 0) throw new ConfigError(`${REEXEC_ENV} names no listening fd`);
  return handoff;
}

export class PrivilegeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PrivilegeError';
  }
}

function lastCapability(): number {
  try {
    const value = Number(fs.readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim());
    if (Number.isInteger(value) && value > 0 && value < 64) return value;
  } catch {
    // Old kernels: fall back to what we know.
  }
  return caps.KNOWN_LAST_CAP;
}

export interface PrivilegeSettings {
  readonly user?: string;
  readonly group?: string;
  readonly backend: BackendSetting;
}

export interface PrivilegeOutcome {
  readonly plan: PrivilegePlan;
  readonly credentials: ProcessCredentials;
}

/**
 * Brings the process to its target credentials. Either returns (nothing to do, or this is
 * the re-executed image and the state is verified), or re-executes the process and never
 * returns. Any failure is a PrivilegeError or ConfigError: fatal at startup.
 *
 * `handoff` is present in the re-executed image; `listen` describes the socket to pass on.
 */
export function establishPrivileges(
  settings: PrivilegeSettings,
  context: { handoff?: ReexecHandoff; listen: Omit<ReexecHandoff, 'pid'> },
  logger: Logger,
): PrivilegeOutcome {
  const target = resolveIdentity(settings);
  const needs = requiredCapabilities(settings.backend);
  const want = capabilityMask(needs.map((n) => n.cap));
  const lastCap = lastCapability();
  const current = readCredentials();
  const plan = planPrivilegeDrop(current, { ...target, want }, lastCap);
  if (plan.kind === 'none') {
    if (context.handoff && !current.noNewPrivs) {
      throw new PrivilegeError('re-executed image has no_new_privs unset; refusing to run');
    }
    if (plan.missing !== 0n) {
      logger.warn(
        { missing: describeMask(plan.missing), needs: needs.filter((n) => plan.missing & (1n << BigInt(n.cap))) },
        `running without ${describeMask(plan.missing)}: commands needing it fail with the device's EPERM sense`,
      );
    }
    logger.info(
      { uid: current.uids[1], gid: current.gids[1], effective: describeMask(current.effective), bounding: describeMask(current.bounding & allCapabilities(lastCap)), noNewPrivs: current.noNewPrivs },
      context.handoff ? 'privileges dropped' : `no privilege drop: ${plan.reason}`,
    );
    return { plan, credentials: current };
  }
  if (context.handoff) {
    // The re-executed image should need nothing more; a second exec would loop.
    throw new PrivilegeError(
      `privileges after re-exec are not as planned (uid ${current.uids.join('/')}, permitted ${describeMask(current.permitted)}, bounding ${describeMask(current.bounding)})`,
    );
  }
  applyDrop(plan, lastCap, logger);
  reexec(context.listen, logger);
}

/** The main thread's part; see the file comment for why execve must follow. */
function applyDrop(plan: Extract<PrivilegePlan, { kind: 'drop' }>, lastCap: number, logger: Logger): void {
  const step = <T>(what: string, action: () => T): T => {
    try {
      return action();
    } catch (error) {
      const hint = (error as { code?: string }).code === 'EPERM' ? ' (mpath-pr must start as root, or with CAP_SETUID/CAP_SETGID/CAP_SETPCAP, to drop privileges)' : '';
      throw new PrivilegeError(`privilege drop failed at ${what}: ${(error as Error).message}${hint}`);
    }
  };
  // Bounding set first: PR_CAPBSET_DROP needs CAP_SETPCAP, which the user switch below clears.
  if (plan.clearBounding) {
    for (let cap = 0; cap <= lastCap; cap++) {
      if (!(plan.keep & (1n << BigInt(cap))) && caps.boundingSetHas(cap)) step(`dropping ${capabilityName(cap)} from the bounding set`, () => caps.dropFromBoundingSet(cap));
    }
  }
  if (plan.uid !== undefined || plan.gid !== undefined) {
    step('PR_SET_KEEPCAPS', () => caps.setKeepCapabilities(true));
    step('setgroups', () => caps.setGroups([]));
    if (plan.gid !== undefined) step(`setresgid(${plan.gid})`, () => caps.setResGid(plan.gid!));
    if (plan.uid !== undefined) step(`setresuid(${plan.uid})`, () => caps.setResUid(plan.uid!));
    step('clearing PR_SET_KEEPCAPS', () => caps.setKeepCapabilities(false));
  }
  // Leaving uid 0 cleared the effective set; this raises exactly the kept ones again.
  step('capset', () => caps.setCapabilities({ effective: plan.keep, permitted: plan.keep, inheritable: plan.keep }));
  step('clearing ambient capabilities', () => caps.clearAmbientCapabilities());
  for (const cap of capabilityList(plan.keep)) step(`raising ambient ${capabilityName(cap)}`, () => caps.raiseAmbientCapability(cap));
  step('PR_SET_NO_NEW_PRIVS', () => caps.setNoNewPrivileges());
  logger.info(
    { keep: describeMask(plan.keep), uid: plan.uid, gid: plan.gid, bounding: plan.clearBounding ? 'cleared' : 'unchanged (no CAP_SETPCAP)' },
    'dropping privileges: credentials set on the main thread; re-executing so every thread has them',
  );
}

function reexec(listen: Omit<ReexecHandoff, 'pid'>, logger: Logger): never {
  const handoff: ReexecHandoff = { pid: process.pid, ...listen };
  const env: Record<string, string | undefined> = { ...process.env, [REEXEC_ENV]: JSON.stringify(handoff) };
  try {
    // Node marks stdio close-on-exec; the new image must write to the same log.
    for (const fd of [0, 1, 2, listen.listenFd]) caps.keepAcrossExec(fd);
    // `mpath-pr-helper -d` reports readiness to its parent over Node's IPC channel.
    const channelFd = (process as unknown as { channel?: { fd?: number } }).channel?.fd;
    if (typeof channelFd === 'number' && channelFd >= 0) {
      caps.keepAcrossExec(channelFd);
      env.NODE_CHANNEL_FD = String(channelFd);
      env.NODE_CHANNEL_SERIALIZATION_MODE = 'json';
    }
  } catch (error) {
    throw new PrivilegeError(`cannot pass the listening socket to the re-executed daemon: ${(error as Error).message}`);
  }
  // pino writes asynchronously; what is buffered now would die with this image.
  const stream = (logger as unknown as Record<symbol, { flushSync?: () => void } | undefined>)[pino.symbols.streamSym];
  try {
    stream?.flushSync?.();
  } catch {
    // Nothing buffered, or a destination without flushSync.
  }
  const argv = [process.argv[0], ...process.execArgv, ...process.argv.slice(1)];
  try {
    caps.execve(process.execPath, argv, env);
  } catch (error) {
    throw new PrivilegeError(`re-executing ${process.execPath} with the reduced privileges failed: ${(error as Error).message}`);
  }
}
