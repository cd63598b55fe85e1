// -u/-g as in qemu-pr-helper: after the socket is bound, switch to an unprivileged
// user and group. Names or numbers are accepted.
//
// Limit of this version: the switch uses Node's setgroups/setgid/setuid, which clears
// every capability. The emulated backend needs none; SG_IO with PR opcodes needs
// CAP_SYS_RAWIO, so with -u the sg, blkpr and mpath backends fail per command. Keeping
// CAP_SYS_RAWIO (and CAP_SYS_ADMIN for mpath) across the switch is the capset work of
// the privileges issue.

import fs from 'node:fs';
import type { Logger } from 'pino';
import { ConfigError } from './config';

function lookup(file: string, name: string, what: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const fields = line.split(':');
    if (fields[0] === name && fields.length >= 3) return Number(fields[2]);
  }
  throw new ConfigError(`unknown ${what} ${JSON.stringify(name)}`);
}

export function dropPrivileges(target: { user?: string; group?: string }, logger: Logger): void {
  const uid = target.user !== undefined ? lookup('/etc/passwd', target.user, 'user') : undefined;
  let gid = target.group !== undefined ? lookup('/etc/group', target.group, 'group') : undefined;
  if (gid === undefined && uid !== undefined && target.user !== undefined && !/^\d+$/.test(target.user)) {
    // Like qemu-pr-helper with only -u: take the user's primary group.
    const entry = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.split(':')[0] === target.user);
    if (entry) gid = Number(entry.split(':')[3]);
  }
  if (gid !== undefined) {
    process.setgroups?.([]);
    process.setgid?.(gid);
  }
  if (uid !== undefined) process.setuid?.(uid);
  logger.warn(
    { uid: process.getuid?.(), gid: process.getgid?.() },
    'dropped to an unprivileged user: capabilities are cleared, so only the emulated backend can serve commands',
  );
}
