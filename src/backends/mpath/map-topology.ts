// Where a dm-multipath map and its paths live, found from the map's dev_t through sysfs,
// and device nodes opened only after their st_rdev proves they are the device meant. No
// mknod: the nodes udev created (/dev/mapper/<name>, /dev/dm-N, /dev/sdX) are used, and a
// node whose dev_t differs (a stale node, a renamed map) is never opened.

import * as fs from 'fs';
import * as path from 'path';
import { relativeTargetPortOf } from '../../scsi/vpd';

export interface DevNumber {
  readonly major: number;
  readonly minor: number;
}

export interface TopologyRoots {
  /** Default /sys. */
  readonly sysfs?: string;
  /** Default /dev. */
  readonly dev?: string;
}

export class MapNodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MapNodeError';
  }
}

function readTrimmed(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** "M:m" as in /sys/dev/block and the `dev` attribute. */
export function parseDevNumber(text: string): DevNumber | undefined {
  const match = /^(\d+):(\d+)$/.exec(text.trim());
  if (!match) return undefined;
  return { major: Number(match[1]), minor: Number(match[2]) };
}

function rdevMatches(file: string, want: DevNumber): boolean {
  try {
    const st = fs.statSync(file, { bigint: true });
    if (!st.isBlockDevice()) return false;
    const dev = st.rdev;
    const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n));
    const minor = Number((dev & 0xffn) | ((dev >> 12n) & 0xffffff00n));
    return major === want.major && minor === want.minor;
  } catch {
    return false;
  }
}

/** The dm name of a map (the multipathd alias), from /sys/dev/block/M:m/dm/name. */
export function mapName(rdev: DevNumber, roots: TopologyRoots = {}): string | undefined {
  return readTrimmed(path.join(roots.sysfs ?? '/sys', 'dev/block', `${rdev.major}:${rdev.minor}`, 'dm/name')) || undefined;
}

/** The kernel name of a block device (dm-0, sda), from the /sys/dev/block/M:m link. */
export function kernelName(rdev: DevNumber, roots: TopologyRoots = {}): string | undefined {
  try {
    return path.basename(fs.realpathSync(path.join(roots.sysfs ?? '/sys', 'dev/block', `${rdev.major}:${rdev.minor}`)));
  } catch {
    return undefined;
  }
}

/**
 * A device node for the map: `hint` if its st_rdev is the map's, else /dev/mapper/<dm name>,
 * else /dev/<kernel name>. Throws MapNodeError when none matches.
 */
export function findMapNode(rdev: DevNumber, hint?: string, roots: TopologyRoots = {}): string {
  const devRoot = roots.dev ?? '/dev';
  const candidates: string[] = [];
  if (hint) candidates.push(hint);
  const name = mapName(rdev, roots);
  if (name) candidates.push(path.join(devRoot, 'mapper', name));
  const kname = kernelName(rdev, roots);
  if (kname) candidates.push(path.join(devRoot, kname));
  for (const candidate of candidates) if (rdevMatches(candidate, rdev)) return candidate;
  throw new MapNodeError(
    `no block device node for ${rdev.major}:${rdev.minor} (tried ${candidates.join(', ') || 'nothing: not in sysfs'})`,
  );
}

export interface PathDevice {
  /** Kernel name, e.g. sda. */
  readonly name: string;
  readonly rdev: DevNumber;
  /** SCSI device state from sysfs ('running', 'offline', 'blocked', …), undefined if not SCSI. */
  readonly scsiState?: string;
  /** The SCSI host (initiator port) number, from the device's H:C:T:L; undefined if not SCSI. */
  readonly scsiHost?: number;
}

/** The map's paths: /sys/dev/block/M:m/slaves/*, sorted by name. */
export function mapPaths(rdev: DevNumber, roots: TopologyRoots = {}): PathDevice[] {
  const sysfs = roots.sysfs ?? '/sys';
  const slavesDir = path.join(sysfs, 'dev/block', `${rdev.major}:${rdev.minor}`, 'slaves');
  let names: string[];
  try {
    names = fs.readdirSync(slavesDir);
  } catch {
    return [];
  }
  const paths: PathDevice[] = [];
  for (const name of names.sort()) {
    const devText = readTrimmed(path.join(sysfs, 'class/block', name, 'dev'));
    const slaveRdev = devText ? parseDevNumber(devText) : undefined;
    if (!slaveRdev) continue;
    paths.push({
      name,
      rdev: slaveRdev,
      scsiState: readTrimmed(path.join(sysfs, 'class/block', name, 'device/state')),
      scsiHost: scsiHostOf(path.join(sysfs, 'class/block', name, 'device')),
    });
  }
  return paths;
}

/** /dev/<name> if it is the path's node. Throws MapNodeError otherwise. */
export function pathNode(device: PathDevice, roots: TopologyRoots = {}): string {
  const node = path.join(roots.dev ?? '/dev', device.name);
  if (!rdevMatches(node, device.rdev)) throw new MapNodeError(`${node} is not ${device.rdev.major}:${device.rdev.minor}`);
  return node;
}

/** The H of H:C:T:L: the device link of a SCSI disk ends in the address, e.g. .../target2:0:0/2:0:0:0. */
function scsiHostOf(deviceLink: string): number | undefined {
  try {
    const match = /^(\d+):\d+:\d+:\d+$/.exec(path.basename(fs.readlinkSync(deviceLink)));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The relative target port identifier of the port a path goes through, from the VPD page 83h
 * the kernel caches in sysfs; undefined when the device does not report one.
 */
export function relativeTargetPortOfPath(device: PathDevice, roots: TopologyRoots = {}): number | undefined {
  try {
    return relativeTargetPortOf(fs.readFileSync(path.join(roots.sysfs ?? '/sys', 'class/block', device.name, 'device/vpd_pg83')));
  } catch {
    return undefined;
  }
}
