// A FAKE sysfs and /dev in a temporary directory, laid out as kernel 6.1 presents sysfs:
// /sys/dev/{block,char}/M:m, /sys/class/block/<name> and /sys/block/<name> are symlinks into
// /sys/devices, a SCSI disk's `device` link ends in its H:C:T:L, a dm map's `slaves` link to
// its paths. Tests build the devices this host does not have (dm-multipath maps, SCSI disks,
// sg nodes, NVMe) and hand `tree` (a DeviceTree over it) to the code under test.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describeIdentity, DeviceTree, parseDevNumber, type DeviceDescription, type DeviceHandle, type FileKind } from '../../src/device';

export interface FakeScsiDisk {
  /** The H of H:C:T:L (the initiator port). */
  readonly host: number;
  readonly target?: number;
  /** Kernel name, e.g. sdb. */
  readonly name: string;
  /** "M:m". */
  readonly dev: string;
  /** The SCSI device state ('running', 'offline', …); none written when absent. */
  readonly state?: string;
  readonly wwid?: string;
  /** VPD page 83h as the kernel caches it. */
  readonly vpdPg83?: Uint8Array;
  /** Its sg node. */
  readonly sg?: { readonly name: string; readonly dev: string };
  /** A directory between the host and the target, e.g. an iSCSI session. */
  readonly via?: string;
  /** Without scsi_disk/scsi_device: SCSI only by where it sits in /sys/devices. */
  readonly bare?: boolean;
}

export interface FakeDmMap {
  /** Kernel name, e.g. dm-0. */
  readonly kname: string;
  /** "M:m". */
  readonly dev: string;
  /** dm/uuid: "mpath-<wwid>" for a multipath map; '' for a dm device created without one. */
  readonly uuid: string;
  /** dm/name (multipathd's alias); none written when absent. */
  readonly name?: string;
  /** Kernel names of block devices added before, linked under slaves/. */
  readonly slaves?: readonly string[];
}

export class FakeSysfs {
  private readonly base = fs.mkdtempSync(path.join(os.tmpdir(), 'mpr-fake-sysfs-'));
  /** In place of /sys. */
  readonly root = path.join(this.base, 'sys');
  /** In place of /dev. */
  readonly devRoot = path.join(this.base, 'dev');
  readonly tree = new DeviceTree(this.root, this.devRoot);
  /** Block devices by kernel name: their directory under devices/. */
  private readonly blockDirs = new Map<string, string>();

  dir(rel: string): void {
    fs.mkdirSync(path.join(this.root, rel), { recursive: true });
  }

  file(rel: string, content: string | Uint8Array): void {
    this.dir(path.dirname(rel));
    fs.writeFileSync(path.join(this.root, rel), content);
  }

  /** A relative symlink at `rel` pointing at `targetRel`, both relative to the root. */
  link(rel: string, targetRel: string): void {
    this.dir(path.dirname(rel));
    const target = path.join(this.root, targetRel);
    let text = path.relative(path.dirname(path.join(this.root, rel)), target);
    // A link to an ancestor names it, as sysfs writes it (…/block/sdb/device → ../../../2:0:0:0).
    if (text.split(path.sep).every((part) => part === '..')) text = path.join(text, '..', path.basename(target));
    fs.symlinkSync(text, path.join(this.root, rel));
  }

  /** A block device whose directory under devices/ is `dir`, with its `device` link when given. */
  blockDevice(dir: string, dev: string, deviceLink?: string): void {
    const name = path.basename(dir);
    this.file(`${dir}/dev`, `${dev}\n`);
    if (deviceLink) this.link(`${dir}/device`, deviceLink);
    this.link(`dev/block/${dev}`, dir);
    this.link(`class/block/${name}`, dir);
    this.link(`block/${name}`, dir);
    this.blockDirs.set(name, dir);
  }

  charDevice(dir: string, dev: string, deviceLink?: string): void {
    this.file(`${dir}/dev`, `${dev}\n`);
    if (deviceLink) this.link(`${dir}/device`, deviceLink);
    this.link(`dev/char/${dev}`, dir);
  }

  /** A SCSI disk H:0:T:0 on host H, with its block device and, if asked, its sg node. */
  scsiDisk(disk: FakeScsiDisk): void {
    const target = disk.target ?? 0;
    const address = `${disk.host}:0:${target}:0`;
    const sdev = `devices/platform/host${disk.host}/${disk.via ? `${disk.via}/` : ''}target${disk.host}:0:${target}/${address}`;
    this.dir(sdev);
    if (!disk.bare) {
      this.dir(`${sdev}/scsi_disk/${address}`);
      this.dir(`${sdev}/scsi_device/${address}`);
    }
    if (disk.state !== undefined) this.file(`${sdev}/state`, `${disk.state}\n`);
    if (disk.wwid !== undefined) this.file(`${sdev}/wwid`, `${disk.wwid}\n`);
    if (disk.vpdPg83) this.file(`${sdev}/vpd_pg83`, disk.vpdPg83);
    this.blockDevice(`${sdev}/block/${disk.name}`, disk.dev, sdev);
    if (disk.sg) this.charDevice(`${sdev}/scsi_generic/${disk.sg.name}`, disk.sg.dev, sdev);
  }

  /** A partition of a block device added before. */
  partition(disk: string, name: string, dev: string): void {
    const dir = `${this.blockDirOf(disk)}/${name}`;
    this.file(`${dir}/partition`, '1\n');
    this.blockDevice(dir, dev);
  }

  /** A device-mapper map (a multipath map when its uuid starts with "mpath-"). */
  dmMap(map: FakeDmMap): void {
    const dir = `devices/virtual/block/${map.kname}`;
    this.file(`${dir}/dm/uuid`, `${map.uuid}\n`);
    if (map.name !== undefined) this.file(`${dir}/dm/name`, `${map.name}\n`);
    this.dir(`${dir}/slaves`);
    for (const slave of map.slaves ?? []) this.link(`${dir}/slaves/${slave}`, this.blockDirOf(slave));
    this.blockDevice(dir, map.dev);
  }

  /** What src/device says about `dev` in this tree, as if an fd of `kind` for it was described. */
  describe(kind: FileKind, dev: string, displayPath = `/dev/fake-${dev}`): DeviceDescription {
    return describeIdentity({ kind, rdev: parseDevNumber(dev) }, displayPath, this.tree);
  }

  /** A handle for a device of this tree; `fd` may be any open fd (a file), the description says what it is. */
  handle(displayPath: string, kind: FileKind, dev: string, options: { fd?: number; writable?: boolean } = {}): DeviceHandle {
    return { fd: options.fd ?? -1, path: displayPath, writable: options.writable ?? true, description: this.describe(kind, dev, displayPath) };
  }

  remove(): void {
    fs.rmSync(this.base, { recursive: true, force: true });
  }

  private blockDirOf(name: string): string {
    const dir = this.blockDirs.get(name);
    if (!dir) throw new Error(`fake sysfs: no block device ${name} yet`);
    return dir;
  }
}
