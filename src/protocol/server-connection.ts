// One client connection of the qemu-pr-helper server: features word 0, then requests
// read, admitted, executed and answered one at a time, strictly in order, the request fd
// closed after every command. A protocol violation closes the connection without a reply.

import type { Logger } from 'pino';
import { admitCommand, type Admission, type CommandGuard } from '../backends/admission';
import type { DeviceHandle, PeerIdentity } from '../backends/backend';
import { describeDeviceFd } from '../device/handle';
import type { PrCommand } from '../scsi/pr-command';
import { checkCondition, Sense, type ScsiResult } from '../scsi/sense';
import { logCommand } from './command-log';
import { closeFds, closeQuietly, ConnectionClosedError, type FdConnection } from './fd-connection';
import { isPrOut, type PrHelperRequest } from './messages';
import { RequestParser, type RequestParserEvent } from './parser';
import { serializeFeatures, serializeReply } from './serializer';
import type { ConnectionClosedEvent, PrHelperExecute, PrHelperServerOptions, ServerCounters } from './server-contract';

/** What a connection takes from the server that accepted it. */
export interface ConnectionContext {
  readonly execute: PrHelperExecute;
  readonly guards: readonly CommandGuard[];
  readonly authorize: PrHelperServerOptions['authorize'];
  readonly logger: Logger;
  readonly counters: ServerCounters;
  /** Whether the server is closing: no further request is read. */
  readonly isClosing: () => boolean;
  /** Called once, last, when the connection is gone. */
  readonly onClosed: (event: ConnectionClosedEvent) => void;
}

export class ServerConnection {
  private readonly parser = new RequestParser();
  /** Between a complete request and its reply being written. */
  private inFlight = false;
  private abort: AbortController | undefined;
  private commands = 0;

  constructor(
    readonly id: number,
    private readonly connection: FdConnection,
    readonly peer: PeerIdentity,
    private readonly context: ConnectionContext,
  ) {}

  /** Aborts the signal of the command running now, if any. */
  abortInFlight(reason: Error): void {
    this.abort?.abort(reason);
  }

  /** Closes the socket unless a command is running; such a connection closes after its reply. */
  closeIfIdle(): void {
    if (!this.inFlight) this.connection.close();
  }

  /** The connection's life. Never rejects: everything a client can cause is contained here. */
  async serve(): Promise<void> {
    const { connection, parser, context } = this;
    const log = context.logger.child({ connection: this.id, peer: this.peer });
    let reason = 'eof';
    try {
      if (context.authorize && !(await this.isAuthorized(log))) {
        context.counters.connectionsRefused++;
        reason = 'refused';
        return;
      }
      await connection.write(serializeFeatures());
      for (;;) {
        if (context.isClosing()) {
          reason = 'server-closing';
          return;
        }
        const chunk = await connection.read(parser.bytesWanted);
        if (chunk.bytes.length === 0 && chunk.fds.length === 0) {
          if (!parser.idle) {
            context.counters.connectionErrors++;
            reason = 'truncated-request';
            log.warn('client disconnected in the middle of a request');
          }
          return;
        }
        const violation = await this.handleEvents(parser.push(chunk), log);
        if (violation) {
          reason = violation;
          return;
        }
      }
    } catch (error) {
      if (error instanceof ConnectionClosedError && context.isClosing()) {
        reason = 'server-closing';
      } else {
        reason = 'connection-error';
        context.counters.connectionErrors++;
        log.warn({ err: error }, 'connection failed');
      }
    } finally {
      closeFds(parser.releaseFds());
      connection.close();
      log.debug({ reason, commands: this.commands }, 'connection closed');
      context.onClosed({ id: this.id, peer: this.peer, reason, commands: this.commands });
    }
  }

  /** Answers the requests of one chunk in order; returns the violation that ends the connection, if any. */
  private async handleEvents(events: readonly RequestParserEvent[], log: Logger): Promise<string | undefined> {
    for (let i = 0; i < events.length; i++) {
      const event = events[i];
      if (event.type === 'violation') {
        closeFds(event.error.fds);
        this.context.counters.protocolViolations++;
        log.warn({ violation: event.error.violation }, `protocol violation, closing connection: ${event.error.message}`);
        return event.error.violation;
      }
      if (event.type === 'request') {
        try {
          await this.handleRequest(event.request, log);
        } catch (error) {
          // The reply could not be written; fds of anything parsed after it are ours to close.
          for (const later of events.slice(i + 1)) {
            if (later.type === 'request') closeQuietly(later.request.fd);
            else if (later.type === 'violation') closeFds(later.error.fds);
          }
          throw error;
        }
      }
    }
    return undefined;
  }

  private async isAuthorized(log: Logger): Promise<boolean> {
    try {
      if (await this.context.authorize!(this.peer)) return true;
      log.warn('peer not authorized; closing connection');
    } catch (error) {
      log.error({ err: error }, 'authorize hook failed; closing connection');
    }
    return false;
  }

  private async handleRequest(request: PrHelperRequest, log: Logger): Promise<void> {
    const { counters } = this.context;
    this.inFlight = true;
    let handle: DeviceHandle | undefined;
    let admission: Admission | undefined;
    let result: ScsiResult;
    try {
      handle = describeDeviceFd(request.fd);
      // Decoded once, then qemu-pr-helper's read-only rule and the caller's guards, before any backend.
      admission = admitCommand(handle, request.cdb, request.dataOut, this.context.guards, this.peer);
      result = admission.ok ? await this.runExecute(handle, admission.command, log) : admission.result;
    } catch (error) {
      counters.executeErrors++;
      log.error({ err: error, fd: request.fd }, 'cannot inspect the request fd');
      result = checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    } finally {
      // Close before replying: once the client has its reply, we no longer hold the device.
      closeQuietly(request.fd);
    }
    let reply: Buffer;
    try {
      reply = serializeReply(request.cdb, { status: result.status, sense: asBuffer(result.sense), data: asBuffer(result.dataIn) });
    } catch (error) {
      counters.executeErrors++;
      log.error({ err: error }, 'backend result cannot be encoded');
      result = checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
      reply = serializeReply(request.cdb, { status: result.status, sense: result.sense, data: result.dataIn });
    }
    this.commands++;
    counters.commands++;
    if (isPrOut(request.cdb)) counters.prOut++;
    else counters.prIn++;
    logCommand(log, handle, admission, result);
    try {
      await this.connection.write(reply);
    } finally {
      this.inFlight = false;
    }
  }

  private async runExecute(handle: DeviceHandle, command: PrCommand, log: Logger): Promise<ScsiResult> {
    const abort = new AbortController();
    this.abort = abort;
    this.connection.watchDisconnect(() => abort.abort(new ConnectionClosedError('client disconnected')));
    try {
      const result = await this.context.execute({ handle, command, peer: this.peer, signal: abort.signal });
      if (!isScsiResult(result)) throw new TypeError(`execute resolved to a malformed result: ${safeDescribe(result)}`);
      return result;
    } catch (error) {
      this.context.counters.executeErrors++;
      log.error({ err: error, device: handle.path, cdb: Buffer.from(command.cdb).toString('hex') }, 'execute failed; answering LUN COMMUNICATION FAILURE');
      return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    } finally {
      this.connection.watchDisconnect(undefined);
      this.abort = undefined;
    }
  }
}

function isScsiResult(value: unknown): value is ScsiResult {
  if (typeof value !== 'object' || value === null) return false;
  const result = value as Partial<ScsiResult>;
  return (
    Number.isInteger(result.status) &&
    (result.status as number) >= 0 &&
    (result.status as number) <= 0xff &&
    result.sense instanceof Uint8Array &&
    result.dataIn instanceof Uint8Array
  );
}

function safeDescribe(value: unknown): string {
  try {
    return JSON.stringify(value)?.slice(0, 200) ?? String(value);
  } catch {
    return String(value);
  }
}

/** A Buffer over the same memory (no copy); serializeReply only reads it. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
