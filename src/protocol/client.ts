// A qemu-pr-helper protocol client, behaving like QEMU's pr-manager-helper: read the
// server's features word, answer 0, then one command at a time, the device fd attached
// to the CDB and the PR OUT parameter list sent after it. Used by the CLI and the tests.

import * as libc from '../../ffi/libc';
import { ConnectionClosedError, FdConnection } from './fd-connection';
import { PR_HELPER_CDB_SIZE, PR_HELPER_DATA_SIZE, PR_HELPER_REPLY_HEADER_SIZE, PrHelperReply, ProtocolError, isPrIn, transferLength } from './messages';
import { ReplyParser } from './parser';
import { serializeFeatures, serializeRequest } from './serializer';

export interface PrHelperClientOptions {
  /** Attempts when the server's backlog is full (connect answers EAGAIN). Default 50. */
  readonly connectAttempts?: number;
}

export class PrHelperClient {
  private connection: FdConnection | undefined;
  private readonly parser = new ReplyParser();
  /** Commands are chained: the protocol forbids two in flight on one connection. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly connectAttempts: number;

  constructor(options: PrHelperClientOptions = {}) {
    this.connectAttempts = options.connectAttempts ?? 50;
  }

  get connected(): boolean {
    return this.connection !== undefined && !this.connection.closed;
  }

  /** Connects to a pathname socket and completes the features handshake. */
  async connect(path: string): Promise<void> {
    if (this.connection) throw new Error('PrHelperClient: already connected');
    const fd = libc.unixStreamSocket();
    const connection = new FdConnection(fd);
    try {
      for (let attempt = 1; ; attempt++) {
        const outcome = libc.connect(fd, path);
        if (outcome === 'connected') break;
        if (outcome === 'in-progress') {
          await connection.waitWritable();
          const errno = libc.getSocketError(fd);
          if (errno !== 0) throw new libc.SystemCallError('connect', errno, path);
          break;
        }
        // Backlog full: the server is alive but busy accepting.
        if (attempt >= this.connectAttempts) throw new libc.SystemCallError('connect', libc.LinuxErrno.EAGAIN, path);
        await new Promise((resolve) => setTimeout(resolve, Math.min(10 * attempt, 200)));
      }
      await this.handshake(connection);
    } catch (error) {
      connection.close();
      throw error;
    }
    this.connection = connection;
  }

  /** Adopts an already connected nonblocking stream socket (e.g. one end of a socketpair) and completes the handshake. */
  async connectFd(fd: number): Promise<void> {
    if (this.connection) throw new Error('PrHelperClient: already connected');
    const connection = new FdConnection(fd);
    try {
      await this.handshake(connection);
    } catch (error) {
      connection.close();
      throw error;
    }
    this.connection = connection;
  }

  /**
   * Sends one command for the device open on `fd` (the fd is duplicated into the server by
   * SCM_RIGHTS; the caller keeps and closes its own). `cdb` is up to 16 bytes. Resolves
   * with the reply; rejects with RangeError for a request the protocol cannot carry, with
   * ProtocolError for a reply QEMU would assert on, and with ConnectionClosedError when
   * the server hangs up. After a rejection other than RangeError the client is closed.
   */
  execute(fd: number, cdb: Uint8Array, dataOut: Uint8Array = Buffer.alloc(0)): Promise<PrHelperReply> {
    let request: Buffer;
    try {
      request = serializeRequest(cdb, dataOut);
    } catch (error) {
      return Promise.reject(error);
    }
    const run = this.queue.then(() => this.exchange(fd, request));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Closes the connection; a command in progress rejects with ConnectionClosedError. */
  close(): void {
    this.connection?.close();
  }

  private async handshake(connection: FdConnection): Promise<void> {
    for (;;) {
      const chunk = await connection.read(4);
      closeAll(chunk.fds);
      if (chunk.bytes.length === 0) throw new ConnectionClosedError('server closed the connection during the handshake');
      const events = this.parser.push(chunk.bytes);
      const violation = events.find((event) => event.type === 'violation');
      if (violation && violation.type === 'violation') throw violation.error;
      if (events.some((event) => event.type === 'features')) break;
    }
    await connection.write(serializeFeatures(0));
  }

  private async exchange(fd: number, request: Buffer): Promise<PrHelperReply> {
    const connection = this.connection;
    if (!connection || connection.closed) throw new ConnectionClosedError('not connected');
    const cdb = request.subarray(0, PR_HELPER_CDB_SIZE);
    try {
      await connection.write(cdb, [fd]);
      if (request.length > PR_HELPER_CDB_SIZE) await connection.write(request.subarray(PR_HELPER_CDB_SIZE));
      for (;;) {
        const chunk = await connection.read(PR_HELPER_REPLY_HEADER_SIZE + PR_HELPER_DATA_SIZE);
        closeAll(chunk.fds);
        if (chunk.bytes.length === 0) throw new ConnectionClosedError('server closed the connection');
        for (const event of this.parser.push(chunk.bytes)) {
          if (event.type === 'violation') throw event.error;
          if (event.type === 'reply') {
            checkReplyFits(cdb, event.reply);
            return event.reply;
          }
        }
      }
    } catch (error) {
      connection.close();
      if (error instanceof libc.SystemCallError && (error.code === 'EPIPE' || error.code === 'ECONNRESET')) {
        throw new ConnectionClosedError(`server closed the connection (${error.code})`);
      }
      throw error;
    }
  }
}

/** QEMU's asserts on a reply: PR IN data within the allocation length, no data for PR OUT. */
function checkReplyFits(cdb: Buffer, reply: PrHelperReply): void {
  const limit = isPrIn(cdb) ? transferLength(cdb) : 0;
  if (reply.data.length > limit) {
    throw new ProtocolError('invalid-reply', `reply carries ${reply.data.length} data bytes but the request allows ${limit}`);
  }
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      libc.close(fd);
    } catch {
      // A server never sends fds; nothing useful to do if closing one fails.
    }
  }
}
