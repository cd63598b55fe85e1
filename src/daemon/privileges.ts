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
//
// Deciding what to do is pure and lives in ./privilege-plan.ts; this file does it.

import fs from 'node:fs';
import pino, { type Logger } from 'pino';
import * as caps from '../../ffi/capabilities';
import { capabilityName } from '../../ffi/capabilities';
import { resolveIdentity } from './accounts';
import { ConfigError, type BackendSetting } from './config';
import {
  allCapabilities,
  capabilityList,
  capabilityMask,
  describeMask,
  planPrivilegeDrop,
  readCredentials,
  requiredCapabilities,
  type PrivilegePlan,
  type ProcessCredentials,
} from './privilege-plan';

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
