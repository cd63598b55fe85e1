// Which backend serves a device, decided from what the fd is (fstat) and what sysfs says
// about its dev_t. Also the one home of the read-only rule every backend applies.
//
// Classification, in order:
//   regular file                                       → emulated
//   block device, /sys/dev/block/M:m/dm/uuid "mpath-…" → mpath, else blkpr (dm pr_ops send
//                                                          REGISTER down every path)
//   other device-mapper block device                   → blkpr (dm pr_ops reach the table's
//                                                          devices; single-target tables only)
//   partition of anything                              → refused: a reservation covers the
//                                                          whole LU, never one partition
//   SCSI block device (…/device is a scsi_device)      → sg, else blkpr
//   NVMe namespace                                     → blkpr (nvme has pr_ops; no SG_IO)
//   sg character device (…/device/scsi_generic)        → sg
//   anything else (loop, md, virtio-blk, /dev/null…)   → refused
//
// A refused device answers CHECK CONDITION, ILLEGAL REQUEST / INVALID OPERATION CODE: the
// device cannot take PERSISTENT RESERVE commands, which is final. qemu-pr-helper would run
// SG_IO, get ENOTTY and answer ABORTED COMMAND / I/O PROCESS TERMINATED, which a guest
// retries; QEMU itself never sends PR commands for a device without SG_IO, so nothing
// depends on that answer.
//
// Sysfs reads are synchronous: sysfs is generated from kernel memory and answers at once.
// Each read is bounded to a few KiB and every failure means "attribute absent".

import * as fs from 'fs';
import * as path from 'path';
import { Opcode } from '../scsi/constants';
import { notPrCapable } from '../scsi/errno-sense';
import { checkCondition, Sense, type ScsiResult } from '../scsi/sense';
import type { BackendName, DeviceHandle, ExecuteOptions, PrBackend } from './backend';
import { refusePrOutOnReadOnly } from './read-only';

export interface Rdev {
  readonly major: number;
  readonly minor: number;
}

// ---------------------------------------------------------------------------------------
// The read-only rule

// ---------------------------------------------------------------------------------------
// dev_t

/** Linux dev_t decoding (glibc gnu_dev_major/minor). */
export function decodeDevT(dev: bigint): Rdev {
  // The (unsigned int) casts of gnu_dev_major/minor become the 32-bit masks here.
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & 0xffffff00n));
  return { major, minor };
}

export type FileKind = 'regular' | 'block' | 'char' | 'other';

export interface FileIdentity {
  readonly kind: FileKind;
  readonly rdev?: Rdev;
}

/** The handle's own `kind` when it carries one, else fstat of its fd (or stat of its path when it has none). Throws what fs throws. */
export function identify(device: DeviceHandle): FileIdentity {
  // The protocol server fstat'ed the fd when it built the handle; an open fd cannot change kind.
  if (device.kind && device.fd >= 0) return device.kind === 'block' || device.kind === 'char' ? { kind: device.kind, rdev: device.rdev } : { kind: device.kind };
  const st = device.fd >= 0 ? fs.fstatSync(device.fd, { bigint: true }) : fs.statSync(device.path, { bigint: true });
  if (st.isFile()) return { kind: 'regular' };
  if (st.isBlockDevice()) return { kind: 'block', rdev: decodeDevT(st.rdev) };
  if (st.isCharacterDevice()) return { kind: 'char', rdev: decodeDevT(st.rdev) };
  return { kind: 'other' };
}

/** The handle's rdev, or the fd's own when the handle does not carry it. */
export function rdevOf(device: DeviceHandle): Rdev | undefined {
  if (device.rdev) return device.rdev;
  try {
    return identify(device).rdev;
  } catch {
    return undefined;
  }
}

/** A per-device key for queues and logs: "M:m", or the path for files. */
export function deviceKey(device: DeviceHandle): string {
  const rdev = rdevOf(device);
  return rdev ? `${rdev.major}:${rdev.minor}` : `path:${device.path}`;
}

// ---------------------------------------------------------------------------------------
// sysfs

const MAX_ATTRIBUTE_BYTES = 4096;
const MAX_DIRECTORY_ENTRIES = 1024;

/**
 * Bounded, never-throwing reads under a sysfs root. The root is /sys; tests pass the root
 * of a fake sysfs tree they build in a temporary directory.
 */
export class Sysfs {
  constructor(readonly root = '/sys') {}

  /** The attribute's text without the trailing newline, or undefined if unreadable. */
  read(relative: string): string | undefined {
    let fd: number | undefined;
    try {
      fd = fs.openSync(path.join(this.root, relative), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      const buf = Buffer.alloc(MAX_ATTRIBUTE_BYTES);
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      return buf.subarray(0, n).toString('utf8').replace(/\n$/, '');
    } catch {
      return undefined;
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }

  exists(relative: string): boolean {
    try {
      fs.statSync(path.join(this.root, relative));
      return true;
    } catch {
      return false;
    }
  }

  /** The absolute resolved path (following sysfs symlinks), or undefined. */
  realpath(relative: string): string | undefined {
    try {
      return fs.realpathSync(path.join(this.root, relative));
    } catch {
      return undefined;
    }
  }

  list(relative: string): string[] {
    try {
      return fs.readdirSync(path.join(this.root, relative)).slice(0, MAX_DIRECTORY_ENTRIES).sort();
    } catch {
      return [];
    }
  }

  /** The block devices under a dm map (/sys/dev/block/M:m/slaves), e.g. ['sdb', 'sdc']. */
  slavesOf(rdev: Rdev): string[] {
    return this.list(`dev/block/${rdev.major}:${rdev.minor}/slaves`);
  }

  /** "M:m" of a block device by kernel name, from /sys/class/block/<name>/dev. */
  blockRdev(name: string): Rdev | undefined {
    const text = this.read(`class/block/${name}/dev`);
    const match = text ? /^(\d+):(\d+)$/.exec(text.trim()) : null;
    return match ? { major: Number(match[1]), minor: Number(match[2]) } : undefined;
  }

  /** The SCSI device state ('running', 'offline', 'blocked', …) of a block device, if it is SCSI. */
  scsiState(name: string): string | undefined {
    return this.read(`class/block/${name}/device/state`)?.trim();
  }
}

export const hostSysfs = new Sysfs();

// ---------------------------------------------------------------------------------------
// Classification

export type DeviceClass =
  | 'regular-file'
  | 'dm-multipath'
  | 'dm'
  | 'partition'
  | 'scsi-block'
  | 'nvme'
  | 'block-without-pr'
  | 'scsi-generic'
  | 'char-device'
  | 'not-a-device'
  | 'unknown';

export interface DeviceInfo {
  readonly class: DeviceClass;
  readonly rdev?: Rdev;
  /** What decided the class, for logs and refusal messages. */
  readonly detail: string;
}

function classifyBlock(rdev: Rdev, sysfs: Sysfs): DeviceInfo {
  const base = `dev/block/${rdev.major}:${rdev.minor}`;
  if (!sysfs.exists(base)) return { class: 'unknown', rdev, detail: `no ${base} in sysfs` };
  const dmUuid = sysfs.read(`${base}/dm/uuid`);
  if (dmUuid !== undefined) {
    if (dmUuid.startsWith('mpath-')) return { class: 'dm-multipath', rdev, detail: `dm uuid ${dmUuid}` };
    return { class: 'dm', rdev, detail: `dm uuid ${dmUuid || '(none)'}` };
  }
  if (sysfs.exists(`${base}/partition`)) return { class: 'partition', rdev, detail: 'a partition; reservations apply to the whole logical unit' };
  if (sysfs.exists(`${base}/device/scsi_disk`) || sysfs.exists(`${base}/device/scsi_device`)) {
    return { class: 'scsi-block', rdev, detail: 'SCSI block device' };
  }
  const devicePath = sysfs.realpath(`${base}/device`) ?? '';
  // …/hostH/[rport-…/ | session…/]targetH:C:T/H:C:T:L, as FC, iSCSI, SAS and tcm_loop lay it out.
  if (/\/host\d+\/(?:[^/]+\/)*target\d+:\d+:\d+\//.test(devicePath)) return { class: 'scsi-block', rdev, detail: 'block device on a SCSI host' };
  const name = path.basename(sysfs.realpath(base) ?? '');
  if (/^nvme\d+n\d+$/.test(name) || /\/nvme\//.test(devicePath)) return { class: 'nvme', rdev, detail: `NVMe namespace ${name}` };
  return { class: 'block-without-pr', rdev, detail: `block device ${name || base} has no persistent-reservation support` };
}

function classifyChar(rdev: Rdev, sysfs: Sysfs): DeviceInfo {
  const base = `dev/char/${rdev.major}:${rdev.minor}`;
  if (sysfs.exists(`${base}/device/scsi_generic`)) return { class: 'scsi-generic', rdev, detail: 'SCSI generic (sg) device' };
  return { class: 'char-device', rdev, detail: `character device ${rdev.major}:${rdev.minor} is not a SCSI device` };
}

/** What the handle's fd is. Never throws. */
export function classifyDevice(device: DeviceHandle, sysfs: Sysfs = hostSysfs): DeviceInfo {
  let identity: FileIdentity;
  try {
    identity = identify(device);
  } catch (err) {
    return { class: 'unknown', rdev: device.rdev, detail: `cannot stat: ${(err as Error).message}` };
  }
  return classifyIdentity(identity, device.path, sysfs);
}

/** The classification step after fstat, separate so tests can feed a fake sysfs any dev_t. Never throws. */
export function classifyIdentity(identity: FileIdentity, displayPath: string, sysfs: Sysfs = hostSysfs): DeviceInfo {
  try {
    switch (identity.kind) {
      case 'regular':
        return { class: 'regular-file', detail: `regular file ${displayPath}` };
      case 'block':
        return identity.rdev ? classifyBlock(identity.rdev, sysfs) : { class: 'unknown', detail: 'block device without rdev' };
      case 'char':
        return identity.rdev ? classifyChar(identity.rdev, sysfs) : { class: 'unknown', detail: 'character device without rdev' };
      default:
        return { class: 'not-a-device', detail: `${displayPath} is neither a file nor a device` };
    }
  } catch (err) {
    return { class: 'unknown', rdev: identity.rdev, detail: `classification failed: ${(err as Error).message}` };
  }
}

export type ConcreteBackendName = Exclude<BackendName, 'auto'>;

/** Backends that can serve each class, best first. */
export const BACKEND_PREFERENCE: Record<DeviceClass, readonly ConcreteBackendName[]> = {
  'regular-file': ['emulated'],
  'dm-multipath': ['mpath', 'blkpr'],
  dm: ['blkpr'],
  partition: [],
  'scsi-block': ['sg', 'blkpr'],
  nvme: ['blkpr'],
  'block-without-pr': [],
  'scsi-generic': ['sg'],
  'char-device': [],
  'not-a-device': [],
  unknown: [],
};

export type BackendChoice =
  | { readonly ok: true; readonly backend: ConcreteBackendName; readonly info: DeviceInfo; readonly forced: boolean }
  | { readonly ok: false; readonly result: ScsiResult; readonly info: DeviceInfo; readonly reason: string };

/** Picks the backend for a classified device from those available; `forced` overrides the table. */
export function chooseBackend(info: DeviceInfo, available: ReadonlySet<ConcreteBackendName>, forced?: ConcreteBackendName): BackendChoice {
  if (forced) {
    if (available.has(forced)) return { ok: true, backend: forced, info, forced: true };
    return { ok: false, result: notPrCapable(), info, reason: `forced backend ${forced} is not available` };
  }
  const candidates = BACKEND_PREFERENCE[info.class];
  const backend = candidates.find((name) => available.has(name));
  if (backend) return { ok: true, backend, info, forced: false };
  const reason = candidates.length === 0 ? `not a PR-capable device: ${info.detail}` : `${info.detail}: needs the ${candidates.join(' or ')} backend, which is not available`;
  return { ok: false, result: notPrCapable(), info, reason };
}

// ---------------------------------------------------------------------------------------
// The resolver as a backend

export interface BackendResolverOptions {
  readonly backends: Partial<Record<ConcreteBackendName, PrBackend>>;
  /** --backend: use this one for every device. */
  readonly forced?: ConcreteBackendName;
  /** Tests only: the root of a fake sysfs tree. */
  readonly sysfs?: Sysfs;
  /** Told about every decision (for logging and the D-Bus device list). */
  readonly onDecision?: (device: DeviceHandle, choice: BackendChoice) => void;
  /** Why a backend is missing from `backends` (libmpathpersist did not load: the reason), for status views. */
  readonly unavailable?: Partial<Record<ConcreteBackendName, string>>;
}

/** A PrBackend that hands each command to the backend that fits the device. */
export class BackendResolver implements PrBackend {
  readonly name = 'auto' as const;
  private readonly backends: Partial<Record<ConcreteBackendName, PrBackend>>;
  /** The backends commands can be handed to. */
  readonly available: ReadonlySet<ConcreteBackendName>;
  private readonly sysfs: Sysfs;

  constructor(private readonly options: BackendResolverOptions) {
    this.backends = { ...options.backends };
    this.available = new Set(Object.keys(this.backends) as ConcreteBackendName[]);
    if (options.forced && !this.available.has(options.forced)) {
      throw new Error(`--backend ${options.forced} was requested but that backend is not available (have: ${[...this.available].join(', ') || 'none'})`);
    }
    this.sysfs = options.sysfs ?? hostSysfs;
  }

  /** Why a backend is not available, as its creator said; undefined when it is, or nobody said. */
  unavailableReason(name: ConcreteBackendName): string | undefined {
    return this.available.has(name) ? undefined : this.options.unavailable?.[name];
  }

  /** The decision for a device, without running anything. Never throws. */
  resolve(device: DeviceHandle): BackendChoice {
    return chooseBackend(classifyDevice(device, this.sysfs), this.available, this.options.forced);
  }

  async execute(device: DeviceHandle, cdb: Uint8Array, dataOut: Uint8Array, options?: ExecuteOptions): Promise<ScsiResult> {
    const refusal = refusePrOutOnReadOnly(device, cdb);
    if (refusal) return refusal;
    const choice = this.resolve(device);
    this.options.onDecision?.(device, choice);
    if (!choice.ok) return choice.result;
    return this.backends[choice.backend]!.execute(device, cdb, dataOut, options);
  }

  async close(): Promise<void> {
    const distinct = new Set(Object.values(this.backends).filter((b): b is PrBackend => b !== undefined));
    await Promise.all([...distinct].map((b) => b.close()));
  }
}
