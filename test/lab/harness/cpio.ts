// A writer for the "newc" cpio format the kernel unpacks as an initramfs.
// Written here instead of shelling out to cpio(1) so the lab needs one tool
// fewer on a fresh machine and the archive is byte-for-byte reproducible
// (fixed mtimes, inode numbers and owners), which keeps the image cache stable.

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Buffer; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`cpio field out of range: ${value}`);
  }
  return value.toString(16).toUpperCase().padStart(8, '0');
}

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

function record(ino: number, mode: number, rdev: [number, number], name: string, data: Buffer): Buffer[] {
  const nameBytes = Buffer.from(name + '\0', 'utf8');
  const header =
    '070701' +
    [ino, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], nameBytes.length, 0].map(hex8).join('');
  const head = Buffer.concat([Buffer.from(header, 'ascii'), nameBytes]);
  return [head, pad4(head.length), data, pad4(data.length)];
}

/** Serializes entries, in the given order, into one newc archive with its trailer. */
export function buildCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const entry of entries) {
    const name = entry.path.replace(/^\/+/, '');
    if (name === '' || name.split('/').includes('..')) {
      throw new Error(`bad cpio path: ${JSON.stringify(entry.path)}`);
    }
    switch (entry.kind) {
      case 'dir':
        parts.push(...record(ino++, S_IFDIR | (entry.mode ?? 0o755), [0, 0], name, Buffer.alloc(0)));
        break;
      case 'file':
        parts.push(...record(ino++, S_IFREG | (entry.mode ?? 0o644), [0, 0], name, entry.data));
        break;
      case 'symlink':
        parts.push(...record(ino++, S_IFLNK | 0o777, [0, 0], name, Buffer.from(entry.target, 'utf8')));
        break;
      case 'chardev':
        parts.push(...record(ino++, S_IFCHR | (entry.mode ?? 0o600), [entry.major, entry.minor], name, Buffer.alloc(0)));
        break;
    }
  }
  parts.push(...record(0, 0, [0, 0], 'TRAILER!!!', Buffer.alloc(0)));
  return Buffer.concat(parts);
}
