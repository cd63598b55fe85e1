// Credentials and capabilities: the native half of the privilege drop
// (src/daemon/privileges.ts decides what to do; this file only does it).
//
// Thread scope matters here, and is the reason for execve below:
// - setgroups/setresgid/setresuid go through glibc, which applies them to EVERY thread
//   of the process (its SIGSETXID broadcast), so no thread stays root.
// - capset, prctl(PR_SET_KEEPCAPS), prctl(PR_CAPBSET_DROP), ambient capabilities and
//   prctl(PR_SET_NO_NEW_PRIVS) are PER THREAD in Linux. Node's libuv pool threads (where
//   koffi's async ioctls, hence SG_IO, run) and V8's worker threads would keep whatever
//   they had. The caller therefore sets the calling thread up and then execve()s: the new
//   image starts single-threaded with exactly these credentials, and every thread Node
//   creates afterwards inherits them.
//
// Raw capget/capset (version 3, two 32-bit words) instead of libcap-ng: four calls, no
// extra library, and the state is read back from /proc/self/status anyway.

import koffi from 'koffi';
import { libcHandle } from './libc-handle';
import { check, SystemCallError } from './system-call';

const c_capget = libcHandle.func('int capget(void *hdrp, void *datap)');
const c_capset = libcHandle.func('int capset(void *hdrp, const void *datap)');
const c_prctl = libcHandle.func('int prctl(int option, ...)');
const c_setgroups = libcHandle.func('int setgroups(size_t size, const uint32_t *list)');
const c_setresgid = libcHandle.func('int setresgid(uint32_t rgid, uint32_t egid, uint32_t sgid)');
const c_setresuid = libcHandle.func('int setresuid(uint32_t ruid, uint32_t euid, uint32_t suid)');
const c_dup3 = libcHandle.func('int dup3(int oldfd, int newfd, int flags)');
const c_execve = libcHandle.func('int execve(const char *path, const char **argv, const char **envp)');

/** Linux capability numbers (linux/capability.h) used by name in this project. */
export const Cap = {
  CHOWN: 0,
  DAC_OVERRIDE: 1,
  DAC_READ_SEARCH: 2,
  FOWNER: 3,
  KILL: 5,
  SETGID: 6,
  SETUID: 7,
  SETPCAP: 8,
  NET_ADMIN: 12,
  SYS_MODULE: 16,
  SYS_RAWIO: 17,
  SYS_PTRACE: 19,
  SYS_ADMIN: 21,
  SYS_RESOURCE: 24,
  MKNOD: 27,
  SETFCAP: 31,
} as const;

const CAP_NAMES = [
  'chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'kill', 'setgid', 'setuid', 'setpcap', 'linux_immutable',
  'net_bind_service', 'net_broadcast', 'net_admin', 'net_raw', 'ipc_lock', 'ipc_owner', 'sys_module', 'sys_rawio', 'sys_chroot',
  'sys_ptrace', 'sys_pacct', 'sys_admin', 'sys_boot', 'sys_nice', 'sys_resource', 'sys_time', 'sys_tty_config', 'mknod', 'lease',
  'audit_write', 'audit_control', 'setfcap', 'mac_override', 'mac_admin', 'syslog', 'wake_alarm', 'block_suspend', 'audit_read',
  'perfmon', 'bpf', 'checkpoint_restore',
];

/** "CAP_SYS_RAWIO" for 17; "CAP_63" for numbers this table does not know. */
export function capabilityName(cap: number): string {
  return `CAP_${(CAP_NAMES[cap] ?? String(cap)).toUpperCase()}`;
}

const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
/** The prctl(2) options used here (linux/prctl.h), by the name errors report. */
const PrctlOption = {
  PR_SET_KEEPCAPS: 8,
  PR_CAPBSET_READ: 23,
  PR_CAPBSET_DROP: 24,
  PR_SET_NO_NEW_PRIVS: 38,
  PR_GET_NO_NEW_PRIVS: 39,
  PR_CAP_AMBIENT: 47,
} as const;
const PR_CAP_AMBIENT_RAISE = 2;
const PR_CAP_AMBIENT_CLEAR_ALL = 4;

/** The calling thread's capability sets, as 64-bit masks (bit n = capability n). */
export interface CapabilitySets {
  readonly effective: bigint;
  readonly permitted: bigint;
  readonly inheritable: bigint;
}

function header(): Buffer {
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0);
  hdr.writeInt32LE(0, 4); // 0 = the calling thread
  return hdr;
}

export function getCapabilities(): CapabilitySets {
  const data = Buffer.alloc(24);
  check('capget', () => c_capget(header(), data));
  const word = (offset: number) => BigInt(data.readUInt32LE(offset)) | (BigInt(data.readUInt32LE(offset + 12)) << 32n);
  return { effective: word(0), permitted: word(4), inheritable: word(8) };
}

/** capset(2) for the calling thread. Permitted can only shrink; effective and inheritable must stay within it. */
export function setCapabilities(sets: CapabilitySets): void {
  const data = Buffer.alloc(24);
  const low = (mask: bigint) => Number(mask & 0xffffffffn);
  const high = (mask: bigint) => Number((mask >> 32n) & 0xffffffffn);
  data.writeUInt32LE(low(sets.effective), 0);
  data.writeUInt32LE(low(sets.permitted), 4);
  data.writeUInt32LE(low(sets.inheritable), 8);
  data.writeUInt32LE(high(sets.effective), 12);
  data.writeUInt32LE(high(sets.permitted), 16);
  data.writeUInt32LE(high(sets.inheritable), 20);
  check('capset', () => c_capset(header(), data));
}

/** prctl(2), its arguments passed as the unsigned longs the kernel reads; errors name the option, or `detail`. */
function prctl(option: keyof typeof PrctlOption, args: readonly number[], detail: string = option): number {
  const variadic = args.flatMap((arg) => ['unsigned long', arg]);
  return check('prctl', () => c_prctl(PrctlOption[option], ...variadic), detail);
}

/** Whether the capability is in the calling thread's bounding set. */
export function boundingSetHas(cap: number): boolean {
  return prctl('PR_CAPBSET_READ', [cap]) === 1;
}

/** Removes a capability from the calling thread's bounding set (needs CAP_SETPCAP). */
export function dropFromBoundingSet(cap: number): void {
  prctl('PR_CAPBSET_DROP', [cap], `PR_CAPBSET_DROP ${capabilityName(cap)}`);
}

export function setKeepCapabilities(keep: boolean): void {
  prctl('PR_SET_KEEPCAPS', [keep ? 1 : 0]);
}

export function clearAmbientCapabilities(): void {
  prctl('PR_CAP_AMBIENT', [PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0], 'PR_CAP_AMBIENT_CLEAR_ALL');
}

/** Raises an ambient capability (it must be permitted and inheritable), so it survives execve as a non-root user. */
export function raiseAmbientCapability(cap: number): void {
  prctl('PR_CAP_AMBIENT', [PR_CAP_AMBIENT_RAISE, cap, 0, 0], `PR_CAP_AMBIENT_RAISE ${capabilityName(cap)}`);
}

export function setNoNewPrivileges(): void {
  prctl('PR_SET_NO_NEW_PRIVS', [1, 0, 0, 0]);
}

export function getNoNewPrivileges(): boolean {
  return prctl('PR_GET_NO_NEW_PRIVS', [0, 0, 0, 0]) === 1;
}

/** /proc/sys/kernel/cap_last_cap is read by the caller; this is the compile-time floor. */
export const KNOWN_LAST_CAP = CAP_NAMES.length - 1;

// ---------------------------------------------------------------------------------------
// Identity (process-wide through glibc)

/** Replaces the supplementary groups; [] drops them all. */
export function setGroups(gids: readonly number[]): void {
  check('setgroups', () => c_setgroups(gids.length, gids.length ? Uint32Array.from(gids) : null));
}

export function setResGid(gid: number): void {
  check('setresgid', () => c_setresgid(gid, gid, gid), String(gid));
}

export function setResUid(uid: number): void {
  check('setresuid', () => c_setresuid(uid, uid, uid), String(uid));
}

// ---------------------------------------------------------------------------------------
// Re-executing with the new credentials

export { keepAcrossExec } from './fd-status';

/** dup3 without O_CLOEXEC: newFd replaces whatever was there and survives execve. */
export function duplicateTo(oldFd: number, newFd: number): void {
  check('dup3', () => c_dup3(oldFd, newFd, 0), `${oldFd} -> ${newFd}`);
}

/** Replaces the process image. Returns only by throwing. */
export function execve(file: string, argv: readonly string[], env: Readonly<Record<string, string | undefined>>): never {
  const envp = Object.entries(env)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([name, value]) => `${name}=${value}`);
  c_execve(file, [...argv, null], [...envp, null]);
  throw new SystemCallError('execve', koffi.errno(), file);
}
