// Device identity: what a device is (file kind, dev_t, class, dm map name, WWID, paths), read
// from statx and sysfs once per command and carried on the DeviceHandle. The only module
// that reads sysfs.

export { formatDevNumber, parseDevNumber, sameDevNumber, type DevNumber } from './dev-number';
export { devDirectory, hostDeviceTree, DeviceTree } from './sysfs';
export {
  describeFile,
  describeIdentity,
  identify,
  isMultipathUuid,
  listMultipathMaps,
  mapPaths,
  type DeviceClass,
  type DeviceDescription,
  type DeviceInfo,
  type FileIdentity,
  type FileKind,
  type MapPath,
} from './describe';
export { deviceKey, describeDeviceFd, describeHandle, rdevOf, withDescription, type DeviceHandle } from './handle';
export { findMapNode, isBlockNodeOf, MapNodeError, pathNode } from './nodes';
