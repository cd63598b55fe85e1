// The qemu-pr-helper protocol server.
//
// Same wire behaviour as qemu-pr-helper: features word 0 on accept, one request at a time
// per connection, strictly in order, the request fd closed after every command, and any
// protocol violation answered by closing the connection without a reply. Unlike
// qemu-pr-helper, connections are fully independent: a slow command on one never delays
// another, and nothing a client sends can take the daemon down.
//
// This module admits connections and keeps the counters; listener.ts owns the listening
// socket, server-connection.ts one connection's request loop, command-log.ts its log lines.

import { EventEmitter } from 'events';
import type { Logger } from 'pino';
import * as libc from '../../ffi/libc';
import type { CommandGuard } from '../backends/admission';
import type { PeerIdentity } from '../backends/backend';
import { closeQuietly, FdConnection } from './fd-connection';
import { Listener, type ListenTarget } from './listener';
import { ServerConnection } from './server-connection';
import type { ConnectionClosedEvent, PrHelperExecute, PrHelperServerOptions, PrHelperServerStats, ServerCounters } from './server-contract';

export type { ConnectionClosedEvent, PrHelperExecute, PrHelperExecuteRequest, PrHelperServerOptions, PrHelperServerStats } from './server-contract';

const DEFAULT_MAX_CONNECTIONS = 1024;

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
  private readonly listener: Listener;
  private closing = false;
  private closePromise: Promise<void> | undefined;
  private nextConnectionId = 1;
  private readonly connections = new Map<number, { connection: ServerConnection; done: Promise<void> }>();
  private readonly counters: ServerCounters = {
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
    this.listener = new Listener(this.logger, (fd) => this.adopt(fd));
  }

  get stats(): PrHelperServerStats {
    return Object.freeze({ ...this.counters, connectionsActive: this.connections.size });
  }

  /** The listening fd (-1 before listen and after close). */
  get fd(): number {
    return this.listener.fd;
  }

  /**
   * Starts listening. For a path: an existing socket file nobody answers on is removed
   * first (left over from a crash); a live socket or a non-socket file is an error, never
   * deleted. The mode is applied between bind and listen, so no client can connect while
   * the socket still has umask permissions.
   */
  listen(target: ListenTarget): void {
    if (this.listener.fd >= 0 || this.closing) throw new Error('PrHelperServer.listen: already listening or closed');
    this.listener.listen(target);
  }

  /**
   * Stops accepting, lets in-flight commands finish and reply (or aborts their signal with
   * abortInFlight), closes every connection, and resolves when all are gone. Idempotent.
   */
  close(options: { abortInFlight?: boolean } = {}): Promise<void> {
    if (options.abortInFlight) for (const { connection } of this.connections.values()) connection.abortInFlight(new Error('server closing'));
    if (this.closePromise) return this.closePromise;
    this.closing = true;
    this.listener.close();
    for (const { connection } of this.connections.values()) connection.closeIfIdle();
    this.closePromise = Promise.all([...this.connections.values()].map(({ done }) => done)).then(() => {
      this.logger.info({ stats: this.stats }, 'pr-helper server closed');
    });
    return this.closePromise;
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
    let socket: FdConnection;
    try {
      socket = new FdConnection(fd);
    } catch (error) {
      this.logger.error({ err: error, connection: id }, 'cannot watch the new connection; closing it');
      this.refuse(fd, { id, peer });
      return;
    }
    const connection = new ServerConnection(id, socket, peer, {
      execute: this.execute,
      guards: this.guards,
      authorize: this.authorize,
      logger: this.logger,
      counters: this.counters,
      isClosing: () => this.closing,
      onClosed: (event) => {
        this.connections.delete(id);
        this.emit('connectionClosed', event);
      },
    });
    this.connections.set(id, { connection, done: connection.serve() });
  }

  private refuse(fd: number, event?: { id: number; peer: PeerIdentity }): void {
    this.counters.connectionsRefused++;
    closeQuietly(fd);
    if (event) this.emit('connectionClosed', { ...event, reason: 'refused', commands: 0 } satisfies ConnectionClosedEvent);
  }
}
