// The qemu-pr-helper protocol server.
//
// Same wire behaviour as qemu-pr-helper: features word 0 on accept, one request at a time
// per connection, strictly in order, the request fd closed after every command, and any
// protocol violation answered by closing the connection without a reply. Unlike
// qemu-pr-helper, connections are fully independent: a slow command on one never delays
// another, and nothing a client sends can take the daemon down.

import { EventEmitter } from 'events';
import * as fs from 'fs';
import type { Logger } from 'pino';
import * as libc from '../../ffi/libc';
import type { DeviceHandle, PeerIdentity } from '../backends/backend';
import { describeDeviceFd } from '../device/handle';
import { Status, prTypeName, statusName } from '../scsi/constants';
import { prInTitle, prOutActionByCode, prOutTitle } from '../scsi/actions';
import { ScsiResult, Sense, checkCondition, describeSense } from '../scsi/sense';
import { admitCommand, type Admission, type CommandGuard } from '../backends/admission';
import { commandKeys, type PrCommand } from '../scsi/pr-command';
import { ConnectionClosedError, FdConnection } from './fd-connection';
import { PrHelperRequest, isPrOut } from './messages';
import { RequestParser } from './parser';
import { serializeFeatures, serializeReply } from './serializer';

export interface PrHelperExecuteRequest {
  readonly handle: DeviceHandle;
  /** The request's CDB and parameter list, decoded and admitted once. */
  readonly command: PrCommand;
  readonly peer: PeerIdentity;
  /** Aborted when the client hangs up during the command, or on close({ abortInFlight }). */
  readonly signal: AbortSignal;
}

/**
 * Runs one command. Must resolve for every SCSI-level outcome (conflicts, bad parameter
 * lists, device errors); a rejection is treated as a bug, logged at error level, and
 * answered with CHECK CONDITION LUN COMMUNICATION FAILURE, which is what QEMU shows the
 * guest when the helper fails.
 */
export type PrHelperExecute = (request: PrHelperExecuteRequest) => Promise<ScsiResult>;

export interface PrHelperServerOptions {
  readonly execute: PrHelperExecute;
  readonly logger: Logger;
  /** Connections beyond this are accepted and closed at once. Default 1024. */
  readonly maxConnections?: number;
  /** Access control hook, called once per connection with SO_PEERCRED; false (or a throw) closes it. */
  readonly authorize?: (peer: PeerIdentity) => boolean | Promise<boolean>;
  /** Checks run on every admitted command before execute (after decoding and the read-only rule). */
  readonly guards?: readonly CommandGuard[];
}

export type ListenTarget =
  /** Bind a pathname socket. `mode` defaults to 0600, like qemu-pr-helper's shipped unit. */
  | { readonly path: string; readonly mode?: number }
  /** Adopt an already-listening socket, e.g. fd 3 from systemd socket activation. */
  | { readonly fd: number };

export interface PrHelperServerStats {
  readonly connectionsAccepted: number;
  readonly connectionsActive: number;
  /** Closed at once: over maxConnections, refused by authorize, or no peer credentials. */
  readonly connectionsRefused: number;
  /** Commands answered (a reply was built). */
  readonly commands: number;
  readonly prIn: number;
  readonly prOut: number;
  /** execute() rejected or returned something malformed. */
  readonly executeErrors: number;
  /** Connections closed for breaking the protocol. */
  readonly protocolViolations: number;
  /** Connections lost to socket errors, or clients that left mid-request or mid-reply. */
  readonly connectionErrors: number;
}

export interface ConnectionClosedEvent {
  readonly id: number;
  readonly peer: PeerIdentity | undefined;
  /** 'eof' (clean), 'server-closing', 'refused', 'connection-error', 'truncated-request', or a ProtocolViolation. */
  readonly reason: string;
  readonly commands: number;
}

export const DEFAULT_SOCKET_MODE = 0o600;
const DEFAULT_MAX_CONNECTIONS = 1024;
/** How long accepting pauses when the process is out of fds (EMFILE/ENFILE). */
const ACCEPT_BACKOFF_MS = 100;

interface ConnectionState {
  readonly id: number;
  readonly connection: FdConnection;
  readonly parser: RequestParser;
  peer: PeerIdentity | undefined;
  /** Between a complete request and its reply being written. */
  inFlight: boolean;
  abort: AbortController | undefined;
  commands: number;
}

type MutableStats = { -readonly [K in keyof PrHelperServerStats]: PrHelperServerStats[K] };

export declare interface PrHelperServer {
  on(event: 'connectionClosed', listener: (event: ConnectionClosedEvent) => void): this;
  once(event: 'connectionClosed', listener: (event: ConnectionClosedEvent) => void): this;
  off(event: 'connectionClosed', listener: (event: ConnectionClosedEvent) => void): this;
}

export class PrHelperServer extends EventEmitter {
  private readonly execute: PrHelperExecute;
  private readonly logger: Logger;
  private readonly maxConnections: number;
  private readonly authorize: PrHelperServerOptions['authorize'];
  private readonly guards: readonly CommandGuard[];
  private listenFd = -1;
  private listenWatcher: libc.FdWatcher | undefined;
  private boundPath: { path: string; ino: number } | undefined;
  private acceptBackoff: NodeJS.Timeout | undefined;
  private closing = false;
  private closePromise: Promise<void> | undefined;
  private nextConnectionId = 1;
  private readonly connections = new Map<number, { state: ConnectionState; done: Promise<void> }>();
  private readonly counters: MutableStats = {
    connectionsAccepted: 0,
    connectionsActive: 0,
    connectionsRefused: 0,
    commands: 0,
    prIn: 0,
    prOut: 0,
    executeErrors: 0,
    protocolViolations: 0,
    connectionErrors: 0,
  };

  constructor(options: PrHelperServerOptions) {
    super();
    this.execute = options.execute;
    this.logger = options.logger;
    this.maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.authorize = options.authorize;
    this.guards = options.guards ?? [];
  }

  get stats(): PrHelperServerStats {
    return Object.freeze({ ...this.counters, connectionsActive: this.connections.size });
  }

  /** The listening fd (-1 before listen and after close). */
  get fd(): number {
    return this.listenFd;
  }

  /**
   * Starts listening. For a path: an existing socket file nobody answers on is removed
   * first (left over from a crash); a live socket or a non-socket file is an error, never
   * deleted. The mode is applied between bind and listen, so no client can connect while
   * the socket still has umask permissions.
   */
  listen(target: ListenTarget): void {
    if (this.listenFd >= 0 || this.closing) throw new Error('PrHelperServer.listen: already listening or closed');
    if ('fd' in target) {
      const status = libc.fstat(target.fd);
      if (!status.isSocket || !libc.isListening(target.fd)) throw new Error(`fd ${target.fd} is not a listening socket`);
      libc.setNonBlocking(target.fd);
      this.listenFd = target.fd;
      this.logger.info({ fd: target.fd }, 'listening on an inherited socket');
    } else {
      removeStaleSocket(target.path);
      const fd = libc.unixStreamSocket();
      try {
        libc.bind(fd, target.path);
        fs.chmodSync(target.path, target.mode ?? DEFAULT_SOCKET_MODE);
        this.boundPath = { path: target.path, ino: fs.statSync(target.path).ino };
        libc.listen(fd);
      } catch (error) {
        libc.close(fd);
        if (this.boundPath) fs.rmSync(target.path, { force: true });
        this.boundPath = undefined;
        throw error;
      }
      this.listenFd = fd;
      this.logger.info({ path: target.path, mode: (target.mode ?? DEFAULT_SOCKET_MODE).toString(8) }, 'listening');
    }
    this.listenWatcher = libc.watchFd(this.listenFd, { readable: true }, (error) => {
      if (error) this.logger.error({ err: error }, 'poll error on the listening socket');
      this.acceptPending();
    });
  }

  /**
   * Stops accepting, lets in-flight commands finish and reply (or aborts their signal with
   * abortInFlight), closes every connection, and resolves when all are gone. Idempotent.
   */
  close(options: { abortInFlight?: boolean } = {}): Promise<void> {
    if (options.abortInFlight) for (const { state } of this.connections.values()) state.abort?.abort(new Error('server closing'));
    if (this.closePromise) return this.closePromise;
    this.closing = true;
    if (this.acceptBackoff) clearTimeout(this.acceptBackoff);
    this.listenWatcher?.close();
    this.listenWatcher = undefined;
    if (this.listenFd >= 0) libc.close(this.listenFd);
    this.listenFd = -1;
    if (this.boundPath) {
      // Only remove the file if it is still ours (another instance may have replaced it).
      try {
        if (fs.statSync(this.boundPath.path).ino === this.boundPath.ino) fs.unlinkSync(this.boundPath.path);
      } catch {
        // Already gone.
      }
      this.boundPath = undefined;
    }
    for (const { state } of this.connections.values()) if (!state.inFlight) state.connection.close();
    this.closePromise = Promise.all([...this.connections.values()].map(({ done }) => done)).then(() => {
      this.logger.info({ stats: this.stats }, 'pr-helper server closed');
    });
    return this.closePromise;
  }

  private acceptPending(): void {
    while (!this.closing && this.listenFd >= 0) {
      let fd: number | null;
      try {
        fd = libc.accept4(this.listenFd);
      } catch (error) {
        const code = error instanceof libc.SystemCallError ? error.code : '';
        if (code === 'ECONNABORTED' || code === 'EPROTO') continue;
        // Out of fds or memory: readiness stays level-triggered, so pause instead of spinning.
        this.logger.error({ err: error }, 'accept failed; pausing accepts');
        this.listenWatcher?.update({});
        this.acceptBackoff = setTimeout(() => {
          this.acceptBackoff = undefined;
          this.listenWatcher?.update({ readable: true });
        }, ACCEPT_BACKOFF_MS);
        return;
      }
      if (fd === null) return;
      this.adopt(fd);
    }
  }

  private adopt(fd: number): void {
    this.counters.connectionsAccepted++;
    const id = this.nextConnectionId++;
    let peer: PeerIdentity;
    try {
      peer = libc.getPeerCredentials(fd);
    } catch (error) {
      this.logger.warn({ err: error, connection: id }, 'no peer credentials; closing connection');
      this.refuse(fd);
      return;
    }
    if (this.connections.size >= this.maxConnections) {
      this.logger.warn({ connection: id, peer, limit: this.maxConnections }, 'too many connections; closing new one');
      this.refuse(fd, { id, peer });
      return;
    }
    let connection: FdConnection;
    try {
      connection = new FdConnection(fd);
    } catch (error) {
      this.logger.error({ err: error, connection: id }, 'cannot watch the new connection; closing it');
      this.refuse(fd, { id, peer });
      return;
    }
    const state: ConnectionState = {
      id,
      connection,
      parser: new RequestParser(),
      peer,
      inFlight: false,
      abort: undefined,
      commands: 0,
    };
    const done = this.serve(state);
    this.connections.set(id, { state, done });
  }

  private refuse(fd: number, event?: { id: number; peer: PeerIdentity }): void {
    this.counters.connectionsRefused++;
    closeQuietly(fd);
    if (event) this.emit('connectionClosed', { ...event, reason: 'refused', commands: 0 } satisfies ConnectionClosedEvent);
  }

  /** One connection's life. Never rejects: everything a client can cause is contained here. */
  private async serve(state: ConnectionState): Promise<void> {
    const { connection, parser } = state;
    const log = this.logger.child({ connection: state.id, peer: state.peer });
    let reason = 'eof';
    try {
      if (this.authorize && !(await this.isAuthorized(state.peer!, log))) {
        this.counters.connectionsRefused++;
        reason = 'refused';
        return;
      }
      await connection.write(serializeFeatures());
      for (;;) {
        if (this.closing) {
          reason = 'server-closing';
          return;
        }
        const chunk = await connection.read(parser.bytesWanted);
        if (chunk.bytes.length === 0 && chunk.fds.length === 0) {
          if (!parser.idle) {
            this.counters.connectionErrors++;
            reason = 'truncated-request';
            log.warn('client disconnected in the middle of a request');
          }
          return;
        }
        const events = parser.push(chunk);
        for (let i = 0; i < events.length; i++) {
          const event = events[i];
          if (event.type === 'violation') {
            closeFds(event.error.fds);
            reason = event.error.violation;
            this.counters.protocolViolations++;
            log.warn({ violation: event.error.violation }, `protocol violation, closing connection: ${event.error.message}`);
            return;
          }
          if (event.type === 'request') {
            try {
              await this.handleRequest(state, event.request, log);
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
      }
    } catch (error) {
      if (error instanceof ConnectionClosedError && this.closing) {
        reason = 'server-closing';
      } else {
        reason = 'connection-error';
        this.counters.connectionErrors++;
        log.warn({ err: error }, 'connection failed');
      }
    } finally {
      closeFds(parser.releaseFds());
      connection.close();
      this.connections.delete(state.id);
      log.debug({ reason, commands: state.commands }, 'connection closed');
      this.emit('connectionClosed', { id: state.id, peer: state.peer, reason, commands: state.commands } satisfies ConnectionClosedEvent);
    }
  }

  private async isAuthorized(peer: PeerIdentity, log: Logger): Promise<boolean> {
    try {
      if (await this.authorize!(peer)) return true;
      log.warn('peer not authorized; closing connection');
    } catch (error) {
      log.error({ err: error }, 'authorize hook failed; closing connection');
    }
    return false;
  }

  private async handleRequest(state: ConnectionState, request: PrHelperRequest, log: Logger): Promise<void> {
    state.inFlight = true;
    let handle: DeviceHandle | undefined;
    let admission: Admission | undefined;
    let result: ScsiResult;
    try {
      handle = describeDeviceFd(request.fd);
      // Decoded once, then qemu-pr-helper's read-only rule and the caller's guards, before any backend.
      admission = admitCommand(handle, request.cdb, request.dataOut, this.guards, state.peer);
      result = admission.ok ? await this.runExecute(state, handle, admission.command, log) : admission.result;
    } catch (error) {
      this.counters.executeErrors++;
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
      this.counters.executeErrors++;
      log.error({ err: error }, 'backend result cannot be encoded');
      result = checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
      reply = serializeReply(request.cdb, { status: result.status, sense: result.sense, data: result.dataIn });
    }
    state.commands++;
    this.counters.commands++;
    if (isPrOut(request.cdb)) this.counters.prOut++;
    else this.counters.prIn++;
    logCommand(log, handle, admission, result);
    try {
      await state.connection.write(reply);
    } finally {
      state.inFlight = false;
    }
  }

  private async runExecute(state: ConnectionState, handle: DeviceHandle, command: PrCommand, log: Logger): Promise<ScsiResult> {
    const abort = new AbortController();
    state.abort = abort;
    state.connection.watchDisconnect(() => abort.abort(new ConnectionClosedError('client disconnected')));
    try {
      const result = await this.execute({ handle, command, peer: state.peer!, signal: abort.signal });
      if (!isScsiResult(result)) throw new TypeError(`execute resolved to a malformed result: ${safeDescribe(result)}`);
      return result;
    } catch (error) {
      this.counters.executeErrors++;
      log.error({ err: error, device: handle.path, cdb: Buffer.from(command.cdb).toString('hex') }, 'execute failed; answering LUN COMMUNICATION FAILURE');
      return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    } finally {
      state.connection.watchDisconnect(undefined);
      state.abort = undefined;
    }
  }
}

/**
 * One line per command: PR OUT at info (it changes the LU), PR IN at debug, and a command
 * refused before decoding at info with the reason. Built from the decoded command only.
 */
function logCommand(log: Logger, handle: DeviceHandle | undefined, admission: Admission | undefined, result: ScsiResult): void {
  const command = admission?.command;
  const isOut = command?.direction === 'out';
  // PR IN is logged at debug level; skip building a line nobody will write.
  if (command && !isOut && !log.isLevelEnabled('debug')) return;
  const outcome = {
    status: statusName(result.status),
    sense: result.status === Status.CHECK_CONDITION ? describeSense(result.sense) : undefined,
  };
  const summary = `${outcome.status}${outcome.sense ? ` ${outcome.sense}` : ''}`;
  if (!command) {
    log.info({ device: handle?.path, reason: admission && !admission.ok ? admission.reason : undefined, ...outcome }, `command refused: ${summary}`);
  } else if (command.direction === 'out') {
    const name = prOutTitle(command.code);
    const usesType = prOutActionByCode(command.code)?.usesType ?? false;
    const keys = commandKeys(command);
    log.info(
      {
        device: handle?.path,
        action: name,
        key: keys ? hexKey(keys.reservationKey) : undefined,
        serviceActionKey: keys ? hexKey(keys.serviceActionKey) : undefined,
        // Only these service actions use the TYPE and SCOPE fields.
        type: usesType ? prTypeName(command.type) : undefined,
        scope: usesType ? command.scope : undefined,
        ...outcome,
      },
      `PR OUT ${name}: ${summary}`,
    );
  } else {
    const name = prInTitle(command.code);
    log.debug({ device: handle?.path, action: name, allocationLength: command.allocationLength, ...outcome }, `PR IN ${name}: ${outcome.status}`);
  }
}

function hexKey(key: bigint): string {
  return key.toString(16).padStart(16, '0');
}


/**
 * Removes a socket file left by a dead server: only a socket, and only when a connect is
 * refused. A live socket or any other kind of file is an error.
 */
export function removeStaleSocket(path: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!stat.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  const probe = libc.unixStreamSocket();
  try {
    const outcome = libc.connect(probe, path);
    // Connected, or a full backlog: somebody is serving there.
    throw Object.assign(new Error(`${path} is in use by a running server (${outcome})`), { code: 'EADDRINUSE' });
  } catch (error) {
    if (error instanceof libc.SystemCallError && error.code === 'ECONNREFUSED') {
      fs.unlinkSync(path);
      return;
    }
    if (error instanceof libc.SystemCallError && error.code === 'ENOENT') return;
    throw error;
  } finally {
    libc.close(probe);
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

function closeQuietly(fd: number): void {
  try {
    libc.close(fd);
  } catch {
    // EBADF here would be our bug, but a reply must still go out.
  }
}

function closeFds(fds: readonly number[]): void {
  for (const fd of fds) closeQuietly(fd);
}
