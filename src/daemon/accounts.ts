// Users and groups by name or number, as qemu-pr-helper's -u/-g take them: a name is
// looked up first (/etc, then NSS), then a decimal number is taken as is. Used for the
// privilege drop's target and for the --allow-uid/--allow-gid/--dbus-admin-uid lists.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { ConfigError } from './config';

type AccountDatabase = 'passwd' | 'group';

interface AccountEntry {
  readonly id: number;
  /** passwd only: the user's primary group, when the entry names one. */
  readonly primaryGid?: number;
}

const MAX_ID = 0xfffffffe; // (uid_t)-1 means "unchanged" to the kernel

const WHAT: Record<AccountDatabase, string> = { passwd: 'user', group: 'group' };

function parseAccountLine(database: AccountDatabase, line: string): (AccountEntry & { name: string }) | undefined {
  const fields = line.split(':');
  if (fields.length < 3 || !/^\d+$/.test(fields[2])) return undefined;
  const primaryGid = database === 'passwd' && /^\d+$/.test(fields[3] ?? '') ? Number(fields[3]) : undefined;
  return { name: fields[0], id: Number(fields[2]), primaryGid };
}

/** By name in /etc/<database>, then through NSS (getent answers names and numbers: LDAP, sssd…). */
function lookupAccount(database: AccountDatabase, key: string): AccountEntry | undefined {
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

/** A name or a number; a number nobody's entry names has no primary group. */
function resolveAccount(database: AccountDatabase, spec: string): AccountEntry {
  const entry = lookupAccount(database, spec);
  if (entry) return entry;
  if (/^\d+$/.test(spec) && Number(spec) <= MAX_ID) return { id: Number(spec) };
  throw new ConfigError(`invalid ${WHAT[database]} ${JSON.stringify(spec)}: no such ${WHAT[database]}`);
}

/** --allow-uid: a user name or a number. */
export function resolveUserId(spec: string): number {
  return resolveAccount('passwd', spec).id;
}

/** --allow-gid: a group name or a number. */
export function resolveGroupId(spec: string): number {
  return resolveAccount('group', spec).id;
}

export interface TargetIdentity {
  readonly uid?: number;
  readonly gid?: number;
}

/**
 * -u/-g to numbers. With only -u, the group is the user's primary group: staying in group
 * root after leaving user root would keep root's group file access.
 */
export function resolveIdentity(spec: { user?: string; group?: string }): TargetIdentity {
  const user = spec.user === undefined ? undefined : resolveAccount('passwd', spec.user);
  let gid: number | undefined;
  if (spec.group !== undefined) {
    gid = resolveGroupId(spec.group);
  } else if (user !== undefined) {
    if (user.primaryGid === undefined) throw new ConfigError(`user ${spec.user} has no passwd entry to take a primary group from; give -g/--group too`);
    gid = user.primaryGid;
  }
  return { uid: user?.id, gid };
}
