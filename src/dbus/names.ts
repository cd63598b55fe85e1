// The D-Bus names mpath-pr owns, and the object-path encoding of device identities.

export const BUS_NAME = 'org.mpathpr.Manager1';
export const MANAGER_PATH = '/org/mpathpr/Manager1';
export const MANAGER_INTERFACE = 'org.mpathpr.Manager1';
export const DEVICE_INTERFACE = 'org.mpathpr.Device1';
export const DEVICE_PATH_PREFIX = `${MANAGER_PATH}/Device`;

/** D-Bus error names our methods answer with (besides the bus's own). */
export const DbusErrors = {
  /** The caller's uid is neither 0 nor in the allow-list. */
  ACCESS_DENIED: 'org.mpathpr.Error.AccessDenied',
  /** An argument is out of range (a reservation type, a path index). */
  INVALID_ARGS: 'org.mpathpr.Error.InvalidArgs',
  /** No device with that path or object path is known. */
  NO_SUCH_DEVICE: 'org.mpathpr.Error.NoSuchDevice',
  /** The operation does not apply to this device (path faults on a real device). */
  NOT_SUPPORTED: 'org.mpathpr.Error.NotSupported',
  /** The PR command ran and did not end GOOD; the message carries the SCSI outcome. */
  COMMAND_FAILED: 'org.mpathpr.Error.CommandFailed',
} as const;

/**
 * Encodes any string as one object-path element, the way sd_bus_path_encode does:
 * ASCII letters and digits stay, every other byte becomes `_` and two lower-case hex
 * digits, and the empty string becomes `_`. Reversible, so an object path names exactly
 * one device.
 */
export function escapePathElement(text: string): string {
  if (text === '') return '_';
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const isAlnum = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
    out += isAlnum ? String.fromCharCode(byte) : `_${byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** The inverse of escapePathElement; undefined for text it could not have produced. */
export function unescapePathElement(element: string): string | undefined {
  if (element === '_') return '';
  if (!/^(?:[A-Za-z0-9]|_[0-9a-f]{2})+$/.test(element)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < element.length; ) {
    if (element[i] === '_') {
      bytes.push(parseInt(element.slice(i + 1, i + 3), 16));
      i += 3;
    } else {
      bytes.push(element.charCodeAt(i));
      i += 1;
    }
  }
  const text = Buffer.from(bytes).toString('utf8');
  return escapePathElement(text) === element ? text : undefined;
}

/** `/org/mpathpr/Manager1/Device/<escaped device path>`. */
export function deviceObjectPath(devicePath: string): string {
  return `${DEVICE_PATH_PREFIX}/${escapePathElement(devicePath)}`;
}

/** The device path an object path names, or undefined if it is not one of ours. */
export function devicePathFromObjectPath(objectPath: string): string | undefined {
  const prefix = `${DEVICE_PATH_PREFIX}/`;
  if (!objectPath.startsWith(prefix)) return undefined;
  const element = objectPath.slice(prefix.length);
  return element.includes('/') ? undefined : unescapePathElement(element);
}

/** A 64-bit PR key as D-Bus clients and logs show it: 0x and 16 hex digits. */
export function formatKey(key: bigint): string {
  return `0x${key.toString(16).padStart(16, '0')}`;
}
