// The device a command is for, as backends see it: the fd, its path, its access mode and the
// description of what it is (./describe.ts). Whoever receives the fd builds the handle once
// per command (the protocol server with describeDeviceFd); the resolver, access control and
// the backends read the description from it instead of asking sysfs again.

import * as fs from 'fs';
import * as libc from '../../ffi/libc';
import { describeFile, describeIdentity, identify, type DeviceDescription } from './describe';
import { formatDevNumber, type DevNumber } from './dev-number';
import { hostDeviceTree, type DeviceTree } from './sysfs';

export interface DeviceHandle {
  /**
   * An open fd for the device, owned by the caller (the server closes it after the
   * command). Backends must never close it. -1 when the caller has no fd.
   */
  readonly fd: number;
  /** The realpath of what the fd refers to (from /proc/self/fd/N), or the path given. */
  readonly path: string;
  /** True when the fd was opened for writing; admission refuses PR OUT on a read-only fd. */
  readonly writable: boolean;
  /**
   * What the device is, when whoever built the handle described it (describeDeviceFd does).
   * Absent on a handle built by hand: describeHandle() describes the fd or path then.
   */
  readonly description?: DeviceDescription;
}

/** The handle for an fd a client sent: its path, its access mode (F_GETFL) and its description. Throws if the fd cannot be fstat'ed. */
export function describeDeviceFd(fd: number, tree: DeviceTree = hostDeviceTree): DeviceHandle {
  const identity = identify(fd, `fd:${fd}`);
  const access = libc.getAccessMode(fd);
  let path: string;
  try {
    path = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    path = `fd:${fd}`;
  }
  const description = describeIdentity(identity, path, tree);
  return { fd, path, writable: access !== 'read-only', description };
}

/** The handle's description, or, for a handle built without one, a description of its fd (or path). Never throws. */
export function describeHandle(handle: DeviceHandle, tree: DeviceTree = hostDeviceTree): DeviceDescription {
  return handle.description ?? describeFile(handle.fd, handle.path, tree);
}

/** The handle itself when it carries a description, else a copy that does; pass the result on so nobody describes it again. */
export function withDescription(handle: DeviceHandle, tree: DeviceTree = hostDeviceTree): DeviceHandle {
  return handle.description ? handle : { ...handle, description: describeFile(handle.fd, handle.path, tree) };
}

/** The device's dev_t: from the description, else fstat of the fd (stat of the path without one); undefined for files. */
export function rdevOf(handle: DeviceHandle): DevNumber | undefined {
  if (handle.description) return handle.description.rdev;
  try {
    return identify(handle.fd, handle.path).rdev;
  } catch {
    return undefined;
  }
}

/** A per-device key for queues and logs: "M:m", or the path for files. */
export function deviceKey(handle: DeviceHandle): string {
  const rdev = rdevOf(handle);
  return rdev ? formatDevNumber(rdev) : `path:${handle.path}`;
}
