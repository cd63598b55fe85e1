// Who may use the helper socket, for which devices, and how much of it.
//
// qemu-pr-helper's only protection is the socket file's mode: whoever can connect can send
// PR commands for any fd it holds, and the helper runs them with CAP_SYS_RAWIO (and, for
// multipath, CAP_SYS_ADMIN and uid 0). mpath-pr keeps that default (everything allowed, the
// socket is 0600) and adds, all optional:
//
// - peer allow-lists (--allow-uid/--allow-gid) checked against SO_PEERCRED when a connection
//   is accepted; a refused connection is closed before the features word, so the client
//   sees EOF and no reply. uid 0 is always allowed: root can send SG_IO itself.
// - a device allow-list (--allow-device): a path glob or a WWID pattern. A command for any
//   other device is answered CHECK CONDITION, ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED
//   (05/25/00) before any SCSI command reaches it. QEMU copies that sense to the guest as
//   is; ILLEGAL REQUEST is final (Linux's scsi_check_sense does not retry it and dm-multipath
//   does not fail the path for it), and 25/00 says "this LU is not reachable for this
//   command" rather than 20/00 INVALID COMMAND OPERATION CODE, which the resolver uses for
//   devices that cannot do PR at all, so an operator reading guest logs can tell a policy
//   refusal from a device limitation.
// - per-peer limits, a peer being a uid: connections (beyond the limit a new one is refused
//   like a disallowed peer) and commands in flight. Commands beyond the in-flight limit WAIT
//   in FIFO order instead of being answered BUSY or TASK SET FULL: QEMU passes the status
//   to the guest, and a guest's sg_persist/mpathpersist (SG_IO pass-through) gets no retry
//   from the SCSI midlayer, so a BUSY would surface as a failed reservation command. The
//   queue is bounded anyway: one command per connection, so at most the connection limit.

import fs from 'node:fs';
import type { Logger } from 'pino';
import type { DeviceHandle, PeerIdentity } from '../backends/backend';
import { describeHandle, hostDeviceTree, type DeviceTree } from '../device';
import { checkCondition, Sense, type ScsiResult } from '../scsi/sense';

export const DEFAULT_MAX_CONNECTIONS_PER_PEER = 256;
export const DEFAULT_MAX_IN_FLIGHT_PER_PEER = 32;

export interface AccessSettings {
  /** Empty (with allowGids empty) means every peer is allowed. */
  readonly allowUids: readonly number[];
  readonly allowGids: readonly number[];
  /** Empty means every device is allowed. Patterns starting with '/' are path globs, the others WWID patterns. */
  readonly allowDevices: readonly string[];
  readonly maxConnectionsPerPeer: number;
  readonly maxInFlightPerPeer: number;
}

export const OPEN_ACCESS: AccessSettings = {
  allowUids: [],
  allowGids: [],
  allowDevices: [],
  maxConnectionsPerPeer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
  maxInFlightPerPeer: DEFAULT_MAX_IN_FLIGHT_PER_PEER,
};

// ---------------------------------------------------------------------------------------
// Pure matching

const GLOB_CHARS = /[*?[]/;

/**
 * A shell-style glob as an anchored RegExp: `*` and `?` stay within one path component,
 * `**` crosses them, `[abc]`, `[a-z]` and `[!x]` are character classes. An unterminated
 * `[` is a literal.
 */
export function globToRegExp(glob: string, options: { caseInsensitive?: boolean } = {}): RegExp {
  let source = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') {
      if (glob[i + 1] === '*') {
        source += '.*';
        i++;
      } else {
        source += '[^/]*';
      }
    } else if (c === '?') {
      source += '[^/]';
    } else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) {
        source += '\\[';
        continue;
      }
      let body = glob.slice(i + 1, end);
      const negate = body.startsWith('!') || body.startsWith('^');
      if (negate) body = body.slice(1);
      source += `[${negate ? '^' : ''}${body.replace(/[\\\]^]/g, '\\$&')}]`;
      i = end;
    } else {
      source += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
    }
  }
  return new RegExp(`^${source}$`, options.caseInsensitive ? 'i' : '');
}

export function isPathPattern(pattern: string): boolean {
  return pattern.startsWith('/');
}

/**
 * The identifiers a multipath.conf or an operator would use for a WWID read from sysfs:
 * the text itself and, for the kernel's "naa."/"eui." forms, the udev/multipath form
 * ("3…"/"2…" followed by the hex digits).
 */
export function wwidForms(raw: string): string[] {
  const text = raw.trim();
  if (!text) return [];
  const forms = [text];
  const match = /^(naa|eui)\.([0-9a-f]+)$/i.exec(text);
  if (match) forms.push(`${match[1].toLowerCase() === 'naa' ? '3' : '2'}${match[2].toLowerCase()}`);
  return forms;
}

export interface DeviceIdentity {
  /** Path names the device is known by: the fd's realpath, and /dev/mapper/<name> for dm maps. */
  readonly paths: readonly string[];
  readonly wwids: readonly string[];
}

/** What the allow-list is matched against, from the handle's description. Never throws. */
export function deviceIdentity(handle: DeviceHandle, deviceTree: DeviceTree = hostDeviceTree): DeviceIdentity {
  const description = describeHandle(handle, deviceTree);
  const paths = [handle.path];
  if (description.mapName) paths.push(`/dev/mapper/${description.mapName}`);
  return { paths, wwids: description.wwid ? wwidForms(description.wwid) : [] };
}

/**
 * Whether a device may be used. Path globs match any of the device's path names; a pattern
 * without glob characters also matches when it resolves (symlinks followed, e.g.
 * /dev/disk/by-id/…) to the fd's realpath. WWID patterns match case-insensitively.
 */
export function deviceAllowed(
  identity: DeviceIdentity,
  patterns: readonly string[],
  realpath: (path: string) => string | undefined = realpathOrUndefined,
): { allowed: boolean; matched?: string } {
  if (patterns.length === 0) return { allowed: true };
  for (const pattern of patterns) {
    if (isPathPattern(pattern)) {
      const re = globToRegExp(pattern);
      if (identity.paths.some((p) => re.test(p))) return { allowed: true, matched: pattern };
      if (!GLOB_CHARS.test(pattern) && identity.paths.includes(realpath(pattern) ?? '\0')) return { allowed: true, matched: pattern };
    } else {
      const re = globToRegExp(pattern, { caseInsensitive: true });
      if (identity.wwids.some((w) => re.test(w))) return { allowed: true, matched: pattern };
    }
  }
  return { allowed: false };
}

function realpathOrUndefined(path: string): string | undefined {
  try {
    return fs.realpathSync(path);
  } catch {
    return undefined;
  }
}

export function peerAllowed(peer: PeerIdentity, settings: Pick<AccessSettings, 'allowUids' | 'allowGids'>): boolean {
  if (settings.allowUids.length === 0 && settings.allowGids.length === 0) return true;
  return peer.uid === 0 || settings.allowUids.includes(peer.uid) || settings.allowGids.includes(peer.gid);
}

// ---------------------------------------------------------------------------------------
// FIFO slots per peer

/** A counting semaphore whose waiters are served strictly in arrival order. */
export class FifoSlots {
  private used = 0;
  private readonly waiters: { grant: () => void; reject: (error: unknown) => void }[] = [];

  constructor(readonly limit: number) {}

  get inUse(): number {
    return this.used;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** Resolves with a release function once a slot is free; rejects if the signal aborts first. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.used < this.limit && this.waiters.length === 0) {
      this.used++;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          this.used++;
          resolve(this.releaser());
        },
        reject,
      };
      const onAbort = () => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used--;
      while (this.used < this.limit && this.waiters.length > 0) this.waiters.shift()!.grant();
    };
  }
}

// ---------------------------------------------------------------------------------------
// The policy, as the daemon uses it

export interface AccessControlStats {
  readonly peersRefused: number;
  readonly devicesRefused: number;
  /** Commands that had to wait for an in-flight slot. */
  readonly commandsQueued: number;
}

export class AccessControl {
  private readonly connections = new Map<number, number>();
  private readonly slots = new Map<number, FifoSlots>();
  private readonly counters = { peersRefused: 0, devicesRefused: 0, commandsQueued: 0 };

  constructor(
    readonly settings: AccessSettings,
    private readonly logger: Logger,
    private readonly deviceTree: DeviceTree = hostDeviceTree,
  ) {}

  get stats(): AccessControlStats {
    return { ...this.counters };
  }

  /** Open connections per uid, for status output. */
  get connectionsByUid(): ReadonlyMap<number, number> {
    return this.connections;
  }

  /** The server's authorize hook: counts the connection when it says yes. */
  authorize(peer: PeerIdentity): boolean {
    if (!peerAllowed(peer, this.settings)) {
      this.counters.peersRefused++;
      this.logger.warn({ peer, reason: 'not-allowed' }, `refused connection from pid ${peer.pid} uid ${peer.uid} gid ${peer.gid}: not in --allow-uid/--allow-gid`);
      return false;
    }
    const open = this.connections.get(peer.uid) ?? 0;
    if (open >= this.settings.maxConnectionsPerPeer) {
      this.counters.peersRefused++;
      this.logger.warn(
        { peer, reason: 'connection-limit', limit: this.settings.maxConnectionsPerPeer },
        `refused connection from pid ${peer.pid} uid ${peer.uid} gid ${peer.gid}: uid already has ${open} connections`,
      );
      return false;
    }
    this.connections.set(peer.uid, open + 1);
    return true;
  }

  /** Call for every connection that authorize() admitted, when it closes. */
  connectionClosed(peer: PeerIdentity): void {
    const open = (this.connections.get(peer.uid) ?? 0) - 1;
    if (open > 0) this.connections.set(peer.uid, open);
    else this.connections.delete(peer.uid);
  }

  /** The refusal for a device outside --allow-device, or undefined when it may be used. */
  checkDevice(handle: DeviceHandle, peer: PeerIdentity): ScsiResult | undefined {
    if (this.settings.allowDevices.length === 0) return undefined;
    const identity = deviceIdentity(handle, this.deviceTree);
    if (deviceAllowed(identity, this.settings.allowDevices).allowed) return undefined;
    this.counters.devicesRefused++;
    this.logger.warn(
      { peer, device: handle.path, names: identity.paths, wwids: identity.wwids },
      `refused command for ${handle.path} from pid ${peer.pid} uid ${peer.uid} gid ${peer.gid}: device not in --allow-device; answering LOGICAL UNIT NOT SUPPORTED`,
    );
    return checkCondition(Sense.LOGICAL_UNIT_NOT_SUPPORTED);
  }

  /**
   * Runs `run` once the peer has an in-flight slot. A command whose client leaves while it
   * waits never runs; its answer goes nowhere, so it is LUN COMMUNICATION FAILURE.
   */
  async withSlot(peer: PeerIdentity, signal: AbortSignal | undefined, run: () => Promise<ScsiResult>, device?: string): Promise<ScsiResult> {
    let slots = this.slots.get(peer.uid);
    if (!slots) {
      slots = new FifoSlots(this.settings.maxInFlightPerPeer);
      this.slots.set(peer.uid, slots);
    }
    if (slots.inUse >= slots.limit || slots.waiting > 0) {
      this.counters.commandsQueued++;
      this.logger.debug({ peer, device, inFlight: slots.inUse, waiting: slots.waiting }, 'in-flight limit reached; command waits its turn');
    }
    let release: () => void;
    try {
      release = await slots.acquire(signal);
    } catch {
      this.logger.debug({ peer, device }, 'client left while its command waited for a slot');
      return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    }
    if (this.logger.isLevelEnabled('trace')) this.logger.trace({ peer, device, inFlight: slots.inUse }, 'command admitted');
    try {
      return await run();
    } finally {
      release();
      if (slots.inUse === 0 && slots.waiting === 0) this.slots.delete(peer.uid);
    }
  }
}
