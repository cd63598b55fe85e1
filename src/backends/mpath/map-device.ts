// The map an mpath command is for, as the command's device description (src/device) tells it.

import { formatDevNumber, type DeviceDescription, type DevNumber, type MapPath } from '../../device';

/** The map a command is for: its dev_t, its name for logs and multipathd, and its paths. */
export interface MapDevice {
  readonly rdev: DevNumber;
  /** The dm name (multipathd's alias), or "M:m" when the map has none. */
  readonly name: string;
  readonly paths: readonly MapPath[];
}

/** The map as the command's description tells it; the name and paths are read when first asked for. */
export function mapOf(rdev: DevNumber, description: DeviceDescription): MapDevice {
  return {
    rdev,
    get name() {
      return description.mapName ?? formatDevNumber(rdev);
    },
    get paths() {
      return description.paths;
    },
  };
}
