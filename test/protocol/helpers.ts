// Test utilities for the protocol suites: a raw protocol client, and a wait for a pipe's end
// of file that resolves on the event (never on elapsed time).

import * as libc from '../../ffi/libc';
import { FdConnection } from '../../src/protocol/fd-connection';

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
