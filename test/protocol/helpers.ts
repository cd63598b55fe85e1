// Shared test utilities for the protocol suites: fd accounting, raw protocol clients, and
// waits that resolve on events (never on elapsed time).

import * as fs from 'fs';
import * as libc from '../../ffi/libc';
import { FdConnection } from '../../src/protocol/fd-connection';

/** Number of open fds of a process. */
export function openFdCount(pid: number | 'self' = 'self'): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** The set of open fd numbers of this process. */
export function openFds(pid: number | 'self' = 'self'): Set<number> {
  return new Set(fs.readdirSync(`/proc/${pid}/fd`).map(Number));
}

/**
 * How many fds of process `pid` refer to the same open object as our `fd` (same
 * /proc/.../fd link target, e.g. "pipe:[1234]"). Our own fd counts when pid is 'self'.
 */
export function holdersOf(fd: number, pid: number | 'self' = 'self'): number {
  const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
  let count = 0;
  for (const entry of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${entry}`) === target) count++;
    } catch {
      // Closed while we looked (e.g. the readdir fd itself).
    }
  }
  return count;
}

/**
 * A protocol client that sends exactly the bytes and fds it is told to, for byte-exact and
 * misbehaving-client tests.
 */
export class RawClient {
  private buffered = Buffer.alloc(0);
  private eof = false;

  private constructor(readonly connection: FdConnection) {}

  static async connect(path: string): Promise<RawClient> {
    const fd = libc.unixStreamSocket();
    if (libc.connect(fd, path) !== 'connected') {
      libc.close(fd);
      throw new Error(`connect to ${path} did not complete at once`);
    }
    return new RawClient(new FdConnection(fd));
  }

  send(bytes: Buffer, fds: number[] = []): Promise<void> {
    return this.connection.write(bytes, fds);
  }

  /** Exactly n bytes; rejects if the server closes first. */
  async readExactly(n: number): Promise<Buffer> {
    while (this.buffered.length < n) {
      if (!(await this.fill())) throw new Error(`EOF after ${this.buffered.length} of ${n} bytes`);
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return Buffer.from(out);
  }

  /** Everything until the server closes the connection. */
  async readToEnd(): Promise<Buffer> {
    while (await this.fill());
    const out = this.buffered;
    this.buffered = Buffer.alloc(0);
    return out;
  }

  close(): void {
    this.connection.close();
  }

  private async fill(): Promise<boolean> {
    if (this.eof) return false;
    const message = await this.connection.read(65536);
    for (const fd of message.fds) libc.close(fd);
    if (message.bytes.length === 0 && message.fds.length === 0) {
      this.eof = true;
      return false;
    }
    this.buffered = Buffer.concat([this.buffered, message.bytes]);
    return true;
  }
}

/** A promise with its resolve function exposed, for commands the test finishes by hand. */
export function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Resolves when a pipe's read end reports end of file (every write end closed); rejects on data. */
export function pipeEof(readEnd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      const bytes = libc.read(readEnd);
      if (bytes === null) return false;
      watcher.close();
      if (bytes.length === 0) resolve();
      else reject(new Error(`unexpected data on pipe: ${bytes.toString('hex')}`));
      return true;
    };
    const watcher = libc.watchFd(readEnd, { readable: true }, () => check());
    check();
  });
}
