// What sysfs says about a real device for its Device1 properties: the WWID, and for a
// dm-multipath map its name and its paths (the slaves and their SCSI state). The one
// place in src/dbus that reads sysfs.

import { hostSysfs, type DeviceClass, type Rdev, type Sysfs } from '../backends/resolve';
import type { PathView } from './device-state';

export interface RealDeviceDescription {
  readonly wwid: string;
  readonly paths: PathView[];
  /** dm-multipath maps: the map's name, as multipathd commands take it. */
  readonly mapName?: string;
}

export class DeviceDescriber {
  constructor(private readonly sysfs: Sysfs = hostSysfs) {}

  describe(rdev: Rdev | undefined, deviceClass: DeviceClass): RealDeviceDescription {
    if (!rdev) return { wwid: '', paths: [] };
    const block = `dev/block/${rdev.major}:${rdev.minor}`;
    switch (deviceClass) {
      case 'dm-multipath': {
        const uuid = this.sysfs.read(`${block}/dm/uuid`) ?? '';
        const paths = this.sysfs.slavesOf(rdev).map((name) => ({ name, state: this.sysfs.scsiState(name) ?? 'unknown', key: '' }));
        return { wwid: uuid.replace(/^mpath-/, ''), paths, mapName: this.sysfs.read(`${block}/dm/name`)?.trim() || undefined };
      }
      case 'scsi-block':
        return { wwid: this.sysfs.read(`${block}/device/wwid`)?.trim() ?? '', paths: [] };
      case 'nvme':
        return { wwid: this.sysfs.read(`${block}/wwid`)?.trim() ?? '', paths: [] };
      case 'scsi-generic':
        return { wwid: this.sysfs.read(`dev/char/${rdev.major}:${rdev.minor}/device/wwid`)?.trim() ?? '', paths: [] };
      default:
        return { wwid: '', paths: [] };
    }
  }
}
