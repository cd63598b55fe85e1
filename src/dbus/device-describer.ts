// What a real device's Device1 properties show of its description (src/device): the WWID,
// and for a dm-multipath map its name and its paths with their SCSI state.

import type { DeviceDescription } from '../device';
import type { PathView } from './device-state';

export interface RealDeviceView {
  readonly wwid: string;
  readonly paths: PathView[];
  /** dm-multipath maps: the map's name, as multipathd commands take it. */
  readonly mapName?: string;
}

export function realDeviceView(description: DeviceDescription): RealDeviceView {
  if (description.class !== 'dm-multipath') return { wwid: description.wwid ?? '', paths: [] };
  const paths = description.paths.map((p) => ({ name: p.name, state: p.scsiState ?? 'unknown', key: '' }));
  return { wwid: description.wwid ?? '', paths, mapName: description.mapName };
}
