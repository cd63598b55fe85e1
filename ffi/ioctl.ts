// ioctl(2) run on the libuv threadpool, plus native memory that stays put while a worker
// thread uses it. SG_IO and IOC_PR_* can take as long as the device does (seconds, or
// minutes through SCSI error handling), so they must never run on the event loop.
//
// ioctl is variadic in <sys/ioctl.h>, and koffi cannot call variadic functions
// asynchronously. It is declared here with a fixed third argument: on the Linux LP64 ABIs
// (x86-64 and aarch64) a variadic pointer argument travels in the same register as a fixed
// one, which is what every C caller of ioctl relies on as well.
//
// errno is thread-local and koffi restores the worker's errno only while the completion
// callback runs, so it is read inside that callback and nowhere else.

import koffi from 'koffi';
import { libcHandle } from './libc-handle';

const c_ioctl = libcHandle.func('int ioctl(int fd, unsigned long request, void *arg)');

/** What the kernel answered: `ret` as returned by ioctl(2); `errno` is 0 unless ret is -1. */
export interface IoctlOutcome {
  readonly ret: number;
  readonly errno: number;
}

/**
 * Runs ioctl(fd, request, arg) on a threadpool thread. `arg` is the address of native
 * memory (see NativeMemory) that must stay allocated until the promise settles.
 * Rejects only when koffi refuses to queue the call (its async queue is full).
 */
export function ioctlAsync(fd: number, request: number, arg: bigint): Promise<IoctlOutcome> {
  return new Promise((resolve, reject) => {
    try {
      c_ioctl.async(fd, request, arg, (err: unknown, ret: number) => {
        if (err) {
          reject(err);
          return;
        }
        resolve({ ret, errno: ret < 0 ? koffi.errno() : 0 });
      });
    } catch (err) {
      reject(err);
    }
  });
}

/**
 * Zero-filled native memory with a Buffer view over it. JS Buffers can move or be
 * collected while a worker thread still writes into them; this memory cannot. Call free()
 * exactly once, after the call that uses it has completed; the view is dead afterwards.
 */
export class NativeMemory {
  readonly address: bigint;
  readonly bytes: Buffer;
  private freed = false;

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size <= 0) throw new RangeError(`NativeMemory size must be a positive integer, got ${size}`);
    this.address = koffi.alloc('uint8_t', size) as bigint;
    this.bytes = Buffer.from(koffi.view(this.address, size));
    this.bytes.fill(0);
  }

  /** Address of the byte at `offset`. */
  at(offset: number): bigint {
    if (offset < 0 || offset > this.size) throw new RangeError(`offset ${offset} outside ${this.size} bytes`);
    return this.address + BigInt(offset);
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    koffi.free(this.address);
  }
}

// <asm-generic/ioctl.h> encoding, valid for x86-64 and aarch64 (not for mips/ppc/sparc).
const IOC_NRBITS = 8;
const IOC_TYPEBITS = 8;
const IOC_SIZEBITS = 14;
const IOC_NRSHIFT = 0;
const IOC_TYPESHIFT = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_WRITE = 1;
const IOC_READ = 2;

function ioc(dir: number, type: string, nr: number, size: number): number {
  if (size >= 1 << IOC_SIZEBITS) throw new RangeError(`ioctl argument size ${size} too large`);
  // >>> 0 keeps the result an unsigned 32-bit number once the direction bits reach bit 31.
  return ((dir << IOC_DIRSHIFT) | (type.charCodeAt(0) << IOC_TYPESHIFT) | (nr << IOC_NRSHIFT) | (size << IOC_SIZESHIFT)) >>> 0;
}

/** _IOW(type, nr, size): userspace writes `size` bytes to the kernel. */
export function iow(type: string, nr: number, size: number): number {
  return ioc(IOC_WRITE, type, nr, size);
}

/** _IOR(type, nr, size). */
export function ior(type: string, nr: number, size: number): number {
  return ioc(IOC_READ, type, nr, size);
}
