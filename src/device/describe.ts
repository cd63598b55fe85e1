// What a device is, asked once per command: the file kind and dev_t (statx), the class the
// resolver picks a backend by, and for block devices the dm map name, the WWID and the map's
// paths. Kind, dev_t and class are found at once; the name, WWID and paths are read on first
// use and kept, so a PR IN on a plain disk never reads a map's paths, and no fact is read
// twice for one command.
//
// Classification, in order:
//   regular file                                       → regular-file
//   block device, /sys/dev/block/M:m/dm/uuid "mpath-…" → dm-multipath
//   other device-mapper block device                   → dm
//   partition of anything                              → partition
//   SCSI block device (…/device is a scsi_device)      → scsi-block
//   NVMe namespace                                     → nvme
//   other block device (loop, md, virtio-blk, …)       → block-without-pr
//   sg character device (…/device/scsi_generic)        → scsi-generic
//   other character device                             → char-device
//   anything else (a directory, a socket)              → not-a-device

import * as path from 'path';
import * as libc from '../../ffi/libc';
import { type DevNumber } from './dev-number';
import { devDirectory, hostDeviceTree, type DeviceTree } from './sysfs';

export type FileKind = 'regular' | 'block' | 'char' | 'other';

export interface FileIdentity {
  readonly kind: FileKind;
  /** st_rdev of a block or character device. */
  readonly rdev?: DevNumber;
}

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

/** The class of a device and what decided it. */
export interface DeviceInfo {
  readonly class: DeviceClass;
  readonly rdev?: DevNumber;
  /** What decided the class, for logs and refusal messages. */
  readonly detail: string;
}

/** One path of a dm map: a block device under it (/sys/dev/block/M:m/slaves). */
export interface MapPath {
  /** Kernel name, e.g. sda. */
  readonly name: string;
  readonly rdev: DevNumber;
  /** SCSI device state ('running', 'offline', 'blocked', …), undefined if not SCSI. */
  readonly scsiState?: string;
  /** The SCSI host (initiator port) number, from the device's H:C:T:L; undefined if not SCSI. */
  readonly scsiHost?: number;
}

export interface DeviceDescription extends DeviceInfo {
  readonly kind: FileKind;
  /** The dm name of a device-mapper device (multipathd's alias for a map). Read on first use. */
  readonly mapName: string | undefined;
  /**
   * The WWID as sysfs gives it: a multipath map's dm uuid without "mpath-", an NVMe
   * namespace's `wwid`, else the SCSI device's `device/wwid`. Read on first use.
   */
  readonly wwid: string | undefined;
  /** The block devices under a dm map, sorted by name; empty for other devices. Read on first use. */
  readonly paths: readonly MapPath[];
}

const MULTIPATH_UUID_PREFIX = 'mpath-';

/** Whether a dm uuid is multipathd's ("mpath-<wwid>"). */
export function isMultipathUuid(uuid: string): boolean {
  return uuid.startsWith(MULTIPATH_UUID_PREFIX);
}

/** What a file is, by fstat of `fd`, or stat of `displayPath` when there is no fd. Throws what statx throws. */
export function identify(fd: number, displayPath: string): FileIdentity {
  const status = fd >= 0 ? libc.fstat(fd) : libc.stat(displayPath);
  if (status.isRegular) return { kind: 'regular' };
  if (status.isBlock) return { kind: 'block', rdev: status.rdev };
  if (status.isChar) return { kind: 'char', rdev: status.rdev };
  return { kind: 'other' };
}

/** A block device's class; the dm uuid comes along because a multipath map's WWID is in it. */
function classifyBlock(rdev: DevNumber, tree: DeviceTree): { info: DeviceInfo; dmUuid?: string } {
  const base = devDirectory('block', rdev);
  if (!tree.exists(base)) return { info: { class: 'unknown', rdev, detail: `no ${base} in sysfs` } };
  const dmUuid = tree.dmUuid(rdev);
  if (dmUuid !== undefined) {
    if (isMultipathUuid(dmUuid)) return { info: { class: 'dm-multipath', rdev, detail: `dm uuid ${dmUuid}` }, dmUuid };
    return { info: { class: 'dm', rdev, detail: `dm uuid ${dmUuid || '(none)'}` }, dmUuid };
  }
  if (tree.exists(`${base}/partition`)) return { info: { class: 'partition', rdev, detail: 'a partition; reservations apply to the whole logical unit' } };
  if (tree.exists(`${base}/device/scsi_disk`) || tree.exists(`${base}/device/scsi_device`)) {
    return { info: { class: 'scsi-block', rdev, detail: 'SCSI block device' } };
  }
  const devicePath = tree.realpath(`${base}/device`) ?? '';
  // …/hostH/[rport-…/ | session…/]targetH:C:T/H:C:T:L, as FC, iSCSI, SAS and tcm_loop lay it out.
  if (/\/host\d+\/(?:[^/]+\/)*target\d+:\d+:\d+\//.test(devicePath)) return { info: { class: 'scsi-block', rdev, detail: 'block device on a SCSI host' } };
  const name = path.basename(tree.realpath(base) ?? '');
  if (/^nvme\d+n\d+$/.test(name) || /\/nvme\//.test(devicePath)) return { info: { class: 'nvme', rdev, detail: `NVMe namespace ${name}` } };
  return { info: { class: 'block-without-pr', rdev, detail: `block device ${name || base} has no persistent-reservation support` } };
}

function classifyChar(rdev: DevNumber, tree: DeviceTree): DeviceInfo {
  if (tree.exists(`${devDirectory('char', rdev)}/device/scsi_generic`)) return { class: 'scsi-generic', rdev, detail: 'SCSI generic (sg) device' };
  return { class: 'char-device', rdev, detail: `character device ${rdev.major}:${rdev.minor} is not a SCSI device` };
}

function classify(identity: FileIdentity, displayPath: string, tree: DeviceTree): { info: DeviceInfo; dmUuid?: string } {
  switch (identity.kind) {
    case 'regular':
      return { info: { class: 'regular-file', detail: `regular file ${displayPath}` } };
    case 'block':
      return identity.rdev ? classifyBlock(identity.rdev, tree) : { info: { class: 'unknown', detail: 'block device without rdev' } };
    case 'char':
      return identity.rdev ? { info: classifyChar(identity.rdev, tree) } : { info: { class: 'unknown', detail: 'character device without rdev' } };
    default:
      return { info: { class: 'not-a-device', detail: `${displayPath} is neither a file nor a device` } };
  }
}

/** The paths of a dm map, each with its dev_t, SCSI state and SCSI host; slaves without a dev_t are left out. */
export function mapPaths(rdev: DevNumber, tree: DeviceTree = hostDeviceTree): MapPath[] {
  const paths: MapPath[] = [];
  for (const name of tree.slavesOf(rdev)) {
    const pathRdev = tree.blockDevNumber(name);
    if (!pathRdev) continue;
    paths.push({ name, rdev: pathRdev, scsiState: tree.scsiState(name), scsiHost: tree.scsiHost(name) });
  }
  return paths;
}

function once<T>(read: () => T): () => T {
  let done = false;
  let value: T;
  return () => {
    if (!done) {
      value = read();
      done = true;
    }
    return value;
  };
}

function wwidOf(identity: FileIdentity, info: DeviceInfo, dmUuid: string | undefined, tree: DeviceTree): string | undefined {
  const { kind, rdev } = identity;
  if (!rdev || (kind !== 'block' && kind !== 'char')) return undefined;
  if (info.class === 'dm-multipath' && dmUuid !== undefined) return dmUuid.slice(MULTIPATH_UUID_PREFIX.length).trim() || undefined;
  if (info.class === 'nvme') return tree.namespaceWwid(rdev);
  return tree.scsiWwid(kind, rdev);
}

/** The description of a file already identified (a dev_t from a fake tree, in tests). Never throws. */
export function describeIdentity(identity: FileIdentity, displayPath: string, tree: DeviceTree = hostDeviceTree): DeviceDescription {
  try {
    return describeClassified(identity, classify(identity, displayPath, tree), tree);
  } catch (err) {
    return describeClassified(identity, { info: { class: 'unknown', rdev: identity.rdev, detail: `classification failed: ${(err as Error).message}` } }, tree);
  }
}

/** The description of an open fd (or, with fd -1, of the path). Never throws: a file that cannot be stat'ed is 'unknown'. */
export function describeFile(fd: number, displayPath: string, tree: DeviceTree = hostDeviceTree): DeviceDescription {
  let identity: FileIdentity;
  try {
    identity = identify(fd, displayPath);
  } catch (err) {
    return describeClassified({ kind: 'other' }, { info: { class: 'unknown', detail: `cannot stat: ${(err as Error).message}` } }, tree);
  }
  return describeIdentity(identity, displayPath, tree);
}

function describeClassified(identity: FileIdentity, classified: { info: DeviceInfo; dmUuid?: string }, tree: DeviceTree): DeviceDescription {
  const { info, dmUuid } = classified;
  const block = identity.kind === 'block' ? identity.rdev : undefined;
  const mapName = once(() => (block ? tree.dmName(block) : undefined));
  const wwid = once(() => wwidOf(identity, info, dmUuid, tree));
  const paths = once((): readonly MapPath[] => (block ? mapPaths(block, tree) : []));
  return {
    kind: identity.kind,
    ...info,
    get mapName() {
      return mapName();
    },
    get wwid() {
      return wwid();
    },
    get paths() {
      return paths();
    },
  };
}

/** Every dm-multipath map on the host (/sys/block/dm-*, dm uuid "mpath-…"), by name. */
export function listMultipathMaps(tree: DeviceTree = hostDeviceTree): { name: string; rdev: DevNumber }[] {
  const maps: { name: string; rdev: DevNumber }[] = [];
  for (const kname of tree.blockDevices().filter((n) => n.startsWith('dm-'))) {
    const rdev = tree.blockDevNumber(kname);
    const uuid = rdev ? tree.dmUuid(rdev) : undefined;
    // A map going away while we look has no dev or uuid any more.
    if (!rdev || uuid === undefined || !isMultipathUuid(uuid)) continue;
    maps.push({ name: tree.dmName(rdev) ?? kname, rdev });
  }
  return maps;
}
