// The one reader of sysfs, and where device nodes are. Everything the project learns about a
// device from the kernel (what a dev_t is, a dm map's name and uuid, a map's paths and their
// SCSI state, WWIDs, the VPD page 83h the kernel caches) is read through a DeviceTree.
//
// Reads are synchronous: sysfs is generated from kernel memory and answers at once. Each read
// is bounded and never throws; every failure means "attribute absent". Tests inject one
// DeviceTree whose roots are a fake tree (test/support/fake-sysfs.ts): `root` in place of /sys
// and `devRoot` in place of /dev, where the nodes udev created are opened.

import * as fs from 'fs';
import * as path from 'path';
import { relativeTargetPortOf } from '../scsi/vpd';
import { formatDevNumber, parseDevNumber, type DevNumber } from './dev-number';

const MAX_ATTRIBUTE_BYTES = 4096;
/** A VPD page is at most 4 + 0xffff bytes (SPC-4 7.8.1). */
const MAX_VPD_PAGE_BYTES = 4 + 0xffff;
const MAX_DIRECTORY_ENTRIES = 1024;

/** /sys/dev/block/M:m or /sys/dev/char/M:m, relative to the sysfs root. */
export function devDirectory(kind: 'block' | 'char', dev: DevNumber): string {
  return `dev/${kind}/${formatDevNumber(dev)}`;
}

export class DeviceTree {
  constructor(
    readonly root = '/sys',
    readonly devRoot = '/dev',
  ) {}

  // ---- generic, bounded, never-throwing reads ----------------------------------------

  /** The attribute's text without the trailing newline, or undefined if unreadable. */
  read(relative: string): string | undefined {
    return this.readBytes(relative, MAX_ATTRIBUTE_BYTES)?.toString('utf8').replace(/\n$/, '');
  }

  /** A binary attribute (e.g. vpd_pg83), at most `maxBytes`. */
  readBytes(relative: string, maxBytes: number): Buffer | undefined {
    let fd: number | undefined;
    try {
      fd = fs.openSync(path.join(this.root, relative), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      const buf = Buffer.alloc(maxBytes);
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      return buf.subarray(0, n);
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

  private readTrimmed(relative: string): string | undefined {
    return this.read(relative)?.trim() || undefined;
  }

  // ---- device-mapper -------------------------------------------------------------------

  /** The dm uuid ("mpath-<wwid>" for a multipath map; may be empty), undefined for a device that is not dm. */
  dmUuid(dev: DevNumber): string | undefined {
    return this.read(`${devDirectory('block', dev)}/dm/uuid`);
  }

  /** The dm name (multipathd's alias for a map), from /sys/dev/block/M:m/dm/name. */
  dmName(dev: DevNumber): string | undefined {
    return this.readTrimmed(`${devDirectory('block', dev)}/dm/name`);
  }

  /** The block devices under a dm map (/sys/dev/block/M:m/slaves), e.g. ['sdb', 'sdc']. */
  slavesOf(dev: DevNumber): string[] {
    return this.list(`${devDirectory('block', dev)}/slaves`);
  }

  // ---- block devices by dev_t or kernel name --------------------------------------------

  /** The kernel name of a block device (dm-0, sda), from the /sys/dev/block/M:m link. */
  kernelName(dev: DevNumber): string | undefined {
    const resolved = this.realpath(devDirectory('block', dev));
    return resolved ? path.basename(resolved) : undefined;
  }

  /** Every block device by kernel name (/sys/block). */
  blockDevices(): string[] {
    return this.list('block');
  }

  /** The dev_t of a block device by kernel name, from /sys/class/block/<name>/dev. */
  blockDevNumber(name: string): DevNumber | undefined {
    const text = this.read(`class/block/${name}/dev`);
    return text ? parseDevNumber(text) : undefined;
  }

  /** The SCSI device state ('running', 'offline', 'blocked', …) of a block device, if it is SCSI. */
  scsiState(name: string): string | undefined {
    return this.read(`class/block/${name}/device/state`)?.trim();
  }

  /** The H of H:C:T:L: the device link of a SCSI disk ends in the address, e.g. …/target2:0:0/2:0:0:0. */
  scsiHost(name: string): number | undefined {
    try {
      const match = /^(\d+):\d+:\d+:\d+$/.exec(path.basename(fs.readlinkSync(path.join(this.root, 'class/block', name, 'device'))));
      return match ? Number(match[1]) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * The relative target port identifier of the port a path goes through, from the VPD page
   * 83h the kernel caches; undefined when the device does not report one.
   */
  relativeTargetPort(name: string): number | undefined {
    const page = this.readBytes(`class/block/${name}/device/vpd_pg83`, MAX_VPD_PAGE_BYTES);
    return page ? relativeTargetPortOf(page) : undefined;
  }

  // ---- identifiers ----------------------------------------------------------------------

  /** The SCSI device's WWID (…/device/wwid: "naa.…", "t10.…"), for a block or sg device. */
  scsiWwid(kind: 'block' | 'char', dev: DevNumber): string | undefined {
    return this.readTrimmed(`${devDirectory(kind, dev)}/device/wwid`);
  }

  /** An NVMe namespace's WWID (its own `wwid` attribute: "eui.…", "nvme.…"). */
  namespaceWwid(dev: DevNumber): string | undefined {
    return this.readTrimmed(`${devDirectory('block', dev)}/wwid`);
  }

  // ---- device nodes ---------------------------------------------------------------------

  /** Where the node udev creates for a kernel name lives: /dev/<name>. */
  node(name: string): string {
    return path.join(this.devRoot, name);
  }

  /** /dev/mapper/<dm name>. */
  mapperNode(name: string): string {
    return path.join(this.devRoot, 'mapper', name);
  }
}

export const hostDeviceTree = new DeviceTree();
