// Device nodes, opened only after their st_rdev proves they are the device meant. No mknod:
// the nodes udev created (/dev/mapper/<name>, /dev/dm-N, /dev/sdX) are used, and a node whose
// dev_t differs (a stale node, a renamed map) is never opened.

import * as libc from '../../ffi/libc';
import type { MapPath } from './describe';
import { formatDevNumber, sameDevNumber, type DevNumber } from './dev-number';
import { hostDeviceTree, type DeviceTree } from './sysfs';

export class MapNodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MapNodeError';
  }
}

/** Whether `file` is the block device node of `dev` (stat follows symlinks). */
export function isBlockNodeOf(file: string, dev: DevNumber): boolean {
  try {
    const status = libc.stat(file);
    return status.isBlock && sameDevNumber(status.rdev, dev);
  } catch {
    return false;
  }
}

/**
 * A device node for a map: `hint` if its st_rdev is the map's, else /dev/mapper/<dm name>,
 * else /dev/<kernel name>. Throws MapNodeError when none matches.
 */
export function findMapNode(dev: DevNumber, hint?: string, tree: DeviceTree = hostDeviceTree): string {
  // The hint is tried before sysfs is asked: it is the node the client opened, almost always right.
  if (hint && isBlockNodeOf(hint, dev)) return hint;
  const candidates: string[] = hint ? [hint] : [];
  const name = tree.dmName(dev);
  if (name) candidates.push(tree.mapperNode(name));
  const kname = tree.kernelName(dev);
  if (kname) candidates.push(tree.node(kname));
  for (const candidate of candidates.slice(hint ? 1 : 0)) if (isBlockNodeOf(candidate, dev)) return candidate;
  throw new MapNodeError(`no block device node for ${formatDevNumber(dev)} (tried ${candidates.join(', ') || 'nothing: not in sysfs'})`);
}

/** /dev/<name> if it is the path's node. Throws MapNodeError otherwise. */
export function pathNode(mapPath: MapPath, tree: DeviceTree = hostDeviceTree): string {
  const node = tree.node(mapPath.name);
  if (!isBlockNodeOf(node, mapPath.rdev)) throw new MapNodeError(`${node} is not ${formatDevNumber(mapPath.rdev)}`);
  return node;
}
