// The privilege drop's pure half: what the process holds (read from /proc, so tests read a
// daemon the same way), what each backend needs, and the plan that takes one to the other.
// ./privileges.ts carries the plan out; its header says why each capability is kept.

import fs from 'node:fs';
import { Cap, capabilityName, type CapabilitySets } from '../../ffi/capabilities';
import type { TargetIdentity } from './accounts';
import type { BackendSetting } from './config';

// ---------------------------------------------------------------------------------------
// What the process has

/** A thread's identity and capabilities; the effective, permitted and inheritable masks as capget(2) has them. */
export interface ProcessCredentials extends CapabilitySets {
  /** real, effective, saved, filesystem */
  readonly uids: readonly number[];
  readonly gids: readonly number[];
  readonly groups: readonly number[];
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
