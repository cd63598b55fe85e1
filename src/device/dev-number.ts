// A Linux device number (dev_t) as major and minor. The one declaration is on the stat result
// in ffi/libc.ts (statx gives the halves, so nothing here decodes a dev_t); this is its text
// form "M:m", as /sys/dev/block/M:m and the `dev` attribute of a block device write it.

import type { DevNumber } from '../../ffi/libc';

export type { DevNumber };

/** "M:m". */
export function formatDevNumber(dev: DevNumber): string {
  return `${dev.major}:${dev.minor}`;
}

/** "M:m" (surrounding whitespace allowed), else undefined. */
export function parseDevNumber(text: string): DevNumber | undefined {
  const match = /^(\d+):(\d+)$/.exec(text.trim());
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : undefined;
}

export function sameDevNumber(a: DevNumber, b: DevNumber): boolean {
  return a.major === b.major && a.minor === b.minor;
}
