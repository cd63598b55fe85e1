// The composition root: backends, the resolver, the qemu-pr-helper server, logging,
// the pidfile, privilege drop and signals.

import fs from 'node:fs';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import { CommandObservers, observeExecute } from '../dbus/command-observer';
import { startDbusServiceOrWarn, type DbusService, type DbusSettings } from '../dbus/service';
import { MultipathdClient } from '../multipathd/client';
import type { PrBackend } from '../backends/backend';
import { EmulatedBackend } from '../backends/emulated/emulated-backend';
import { SgBackend } from '../backends/sg/sg-backend';
import { BlkprBackend } from '../backends/blkpr/blkpr-backend';
import { DeviceQueue } from '../backends/sg/device-queue';
import { createMpathBackend } from '../backends/mpath/mpath-backend';
import { BackendResolver, type ConcreteBackendName } from '../backends/resolve';
import { PrHelperServer } from '../protocol/server';
import { clearSocketActivationEnv, socketActivationFd } from '../protocol/socket-activation';
import { ConfigError, type DaemonConfig } from './config';
import { AccessControl, OPEN_ACCESS } from './access-control';
import { ServiceNotifier } from './notify';
import { establishPrivileges, takeReexecHandoff, type ReexecHandoff } from './privileges';

export const VERSION: string = (() => {
  try {
    return JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')).version;
  } catch {
    return 'unknown';
  }
})();

export interface BackendSet {
  readonly resolver: BackendResolver;
  readonly emulated: EmulatedBackend;
}

/**
 * Builds every backend that can run here and the resolver over them. The emulated one
 * always exists (it is the embedded default and the home of the `emu` fault injection);
 * the kernel ones need nothing at construction time and fail per command when the device
 * is wrong.
 */
export function createBackends(config: Pick<DaemonConfig, 'backend' | 'statePath' | 'initiator' | 'paths'>, logger?: Logger): BackendSet {
  fs.mkdirSync(path.dirname(config.statePath), { recursive: true, mode: 0o700 });
  const emulated = new EmulatedBackend({ statePath: config.statePath, initiator: config.initiator, paths: config.paths, writerThread: true, logger });
  const queue = new DeviceQueue();
  const backends: Partial<Record<ConcreteBackendName, PrBackend>> = {
    emulated,
    sg: new SgBackend({ queue }),
    blkpr: new BlkprBackend({ queue }),
  };
  const mpath = createMpathBackend({ logger });
  if (mpath.ok) backends.mpath = mpath.backend;
  else logger?.info({ reason: mpath.reason }, 'mpath backend unavailable: dm-multipath maps fall back to blkpr');
  if (config.backend === 'mpath' && !backends.mpath) {
    emulated.close();
    throw new ConfigError(`--backend mpath: libmpathpersist cannot be used here (${mpath.ok ? '' : mpath.reason}); use auto, blkpr or sg`);
  }
  const resolver = new BackendResolver({
    backends,
    forced: config.backend === 'auto' ? undefined : config.backend,
    unavailable: mpath.ok ? undefined : { mpath: mpath.reason },
    onDecision: (device, choice) => {
      if (!choice.ok) logger?.warn({ device: device.path, reason: choice.reason }, 'device refused: no backend fits');
      else logger?.debug({ device: device.path, backend: choice.backend }, 'device resolved');
    },
  });
  return { resolver, emulated };
}

export interface Daemon {
  readonly server: PrHelperServer;
  readonly access: AccessControl;
  /** sd_notify: READY/STATUS/STOPPING when run under systemd Type=notify. */
  readonly notifier: ServiceNotifier;
  readonly backends: BackendSet;
  readonly logger: Logger;
  /** Where the socket is, or 'fd 3 (socket activation)'. */
  readonly listening: string;
  /** Sees every command's outcome after it ran (D-Bus and other views). */
  readonly commandObservers: CommandObservers;
  /** The D-Bus service, when a bus was reachable and D-Bus is not disabled. */
  readonly dbus: DbusService | undefined;
  /** Stops accepting, finishes in-flight commands, closes backends, removes the pidfile. */
  close(): Promise<void>;
}

type StartConfig = DaemonConfig & { readonly dbus?: DbusSettings };

export async function startDaemon(config: StartConfig, logger: Logger = pino({ level: config.logLevel })): Promise<Daemon> {
  const source = takeListenSource(config);
  // Backends are created only after the privilege drop, so the state store and everything
  // else they open belongs to the final user.
  let backends: BackendSet | undefined;
  const commandObservers = new CommandObservers();
  const access = new AccessControl(config.access ?? OPEN_ACCESS, logger);
  const notifier = new ServiceNotifier(logger);
  const server = createServer(access, commandObservers, () => backends!.resolver, logger);
  let socket: ListeningSocket | undefined;
  try {
    socket = listen(server, config, source);
    if (config.pidfile && !source.handoff) fs.writeFileSync(config.pidfile, `${process.pid}\n`, { mode: 0o644 });
    if (!source.handoff) notifier.status(`listening on ${socket.listening}; dropping privileges`);
    dropPrivileges(config, source.handoff, server, socket, logger);
    backends = createBackends(config, logger);
    await backends.emulated.ready();
  } catch (error) {
    await server.close();
    await backends?.resolver.close();
    if (source.handoff) removeOwnSocket(socket?.ownSocket, logger);
    throw error;
  }
  const { listening } = socket;
  const dbus = await startDbus(config, server, backends, commandObservers, logger);
  logger.info(
    {
      listening,
      backend: config.backend,
      state: config.statePath,
      initiator: backends.emulated.initiatorKey,
      uid: process.getuid?.(),
      access: config.access,
      paths: config.paths,
      version: VERSION,
    },
    `mpath-pr ready on ${listening}`,
  );
  notifier.ready(`serving on ${listening} (backend ${config.backend}, uid ${process.getuid?.()})`);
  const close = closeDaemon({ config, handoff: source.handoff, ownSocket: socket.ownSocket, server, dbus, backends, notifier, logger });
  return { server, access, notifier, backends, logger, listening, commandObservers, dbus, close };
}

/** Where the listening socket comes from: this image before the re-exec, systemd, or a path to bind. */
interface ListenSource {
  /** Set when this image is the re-exec after the privilege drop: the socket is already bound. */
  readonly handoff: ReexecHandoff | undefined;
  readonly activatedFd: number | undefined;
}

function takeListenSource(config: StartConfig): ListenSource {
  const handoff = takeReexecHandoff();
  const activatedFd = handoff ? undefined : socketActivationFd({ explicitPath: config.socketPath });
  if (!handoff && activatedFd === undefined && !config.socketPath) throw new ConfigError('no socket path given and not socket-activated');
  clearSocketActivationEnv();
  return { handoff, activatedFd };
}

/** The server every command goes through: access control per connection and per device, then the resolver's backend. */
function createServer(access: AccessControl, commandObservers: CommandObservers, resolver: () => BackendResolver, logger: Logger): PrHelperServer {
  const server = new PrHelperServer({
    logger,
    authorize: (peer) => access.authorize(peer),
    // Part of admission, before any SCSI command: a device outside --allow-device never sees one.
    guards: [function deviceAllowList(handle, _command, peer) {
      return peer ? access.checkDevice(handle, peer) : undefined;
    }],
    execute: observeExecute(
      ({ handle, command, peer, signal }) => access.withSlot(peer, signal, () => resolver().execute(handle, command, { peer, signal }), handle.path),
      commandObservers,
    ),
  });
  server.on('connectionClosed', (event) => {
    // 'refused' connections were never counted (authorize said no, or never ran).
    if (event.reason !== 'refused' && event.peer) access.connectionClosed(event.peer);
  });
  return server;
}

interface ListeningSocket {
  /** Where the socket is, or 'fd 3 (socket activation)'. */
  readonly listening: string;
  /** The socket file this daemon bound, so that it can remove it when it stops. */
  readonly ownSocket: { path: string; ino: number } | undefined;
}

function listen(server: PrHelperServer, config: StartConfig, { handoff, activatedFd }: ListenSource): ListeningSocket {
  if (handoff) {
    server.listen({ fd: handoff.listenFd });
    const ownSocket = handoff.socketPath && handoff.socketIno !== undefined ? { path: handoff.socketPath, ino: handoff.socketIno } : undefined;
    return { listening: handoff.listening, ownSocket };
  }
  if (activatedFd !== undefined) {
    server.listen({ fd: activatedFd });
    return { listening: `fd ${activatedFd} (socket activation)`, ownSocket: undefined };
  }
  fs.mkdirSync(path.dirname(config.socketPath!), { recursive: true, mode: 0o755 });
  server.listen({ path: config.socketPath!, mode: config.socketMode });
  return { listening: config.socketPath!, ownSocket: { path: config.socketPath!, ino: fs.statSync(config.socketPath!).ino } };
}

/**
 * As qemu-pr-helper: bind first, then give up privileges. May re-execute this process
 * (same pid) and never return; the new image comes back to startDaemon with `handoff` set.
 */
function dropPrivileges(config: StartConfig, handoff: ReexecHandoff | undefined, server: PrHelperServer, socket: ListeningSocket, logger: Logger): void {
  if (config.keepPrivileges && (config.user !== undefined || config.group !== undefined)) {
    throw new ConfigError('keepPrivileges cannot be combined with a user or group to switch to');
  }
  if (config.keepPrivileges) return;
  establishPrivileges(
    { user: config.user, group: config.group, backend: config.backend },
    { handoff, listen: { listenFd: server.fd, listening: socket.listening, socketPath: socket.ownSocket?.path, socketIno: socket.ownSocket?.ino } },
    logger,
  );
}

/** D-Bus is a view: without a usable bus the daemon logs one warning and serves anyway. */
async function startDbus(
  config: StartConfig,
  server: PrHelperServer,
  backends: BackendSet,
  observers: CommandObservers,
  logger: Logger,
): Promise<DbusService | undefined> {
  if (config.dbus?.enabled === false) return undefined;
  return startDbusServiceOrWarn({
    logger,
    version: VERSION,
    busAddress: config.dbus?.address,
    adminUids: config.dbus?.adminUids,
    server,
    resolver: backends.resolver,
    emulated: backends.emulated,
    observers,
    multipathd: new MultipathdClient(),
    statePath: config.statePath,
  });
}

/** The returned Daemon's close(): one shutdown however often it is called. */
function closeDaemon(parts: {
  config: StartConfig;
  handoff: ReexecHandoff | undefined;
  ownSocket: ListeningSocket['ownSocket'];
  server: PrHelperServer;
  dbus: DbusService | undefined;
  backends: BackendSet;
  notifier: ServiceNotifier;
  logger: Logger;
}): () => Promise<void> {
  const { config, handoff, ownSocket, server, dbus, backends, notifier, logger } = parts;
  let closing: Promise<void> | undefined;
  return () => {
    closing ??= (async () => {
      notifier.stopping(`stopping: finishing ${server.stats.connectionsActive} connections' commands`);
      await server.close();
      await dbus?.close();
      await backends.resolver.close();
      // After a re-exec the server adopted the fd and does not know the path.
      if (handoff) removeOwnSocket(ownSocket, logger);
      if (config.pidfile) removeQuietly(config.pidfile, 'pidfile', logger);
      logger.info('mpath-pr stopped');
    })();
    return closing;
  };
}

/** Removes the socket file if it is still the one we bound (another instance may have replaced it). */
function removeOwnSocket(socket: { path: string; ino: number } | undefined, logger: Logger): void {
  if (!socket) return;
  try {
    if (fs.statSync(socket.path).ino !== socket.ino) return;
  } catch {
    return;
  }
  removeQuietly(socket.path, 'socket', logger);
}

/** After dropping to another user the pidfile and socket may not be ours to remove; that must not fail shutdown. */
function removeQuietly(file: string, what: string, logger: Logger): void {
  try {
    fs.rmSync(file, { force: true });
  } catch (error) {
    logger.warn({ err: error, file }, `cannot remove the ${what} after dropping privileges; the next start replaces it`);
  }
}

/**
 * SIGTERM and SIGINT: stop accepting, let in-flight commands finish and reply, exit 0.
 * A second signal exits at once. SIGHUP does NOT stop the daemon (unlike
 * qemu-pr-helper): a stray hangup must never take the reservation path away from
 * running guests. It logs the daemon's state instead: backends, connections, counters.
 */
export function installSignalHandlers(daemon: Daemon, exit: (code: number) => void = (code) => process.exit(code)): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      daemon.logger.warn({ signal }, 'second signal: exiting without waiting');
      exit(1);
      return;
    }
    stopping = true;
    daemon.logger.info({ signal }, 'shutting down: finishing in-flight commands');
    daemon.close().then(
      () => exit(0),
      (error) => {
        daemon.logger.error({ err: error }, 'error while shutting down');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', () => {
    daemon.logger.info(
      {
        listening: daemon.listening,
        stats: daemon.server.stats,
        access: daemon.access.stats,
        connectionsByUid: Object.fromEntries(daemon.access.connectionsByUid),
        devices: daemon.backends.emulated.listDevices().length,
      },
      'status (SIGHUP)',
    );
    const stats = daemon.server.stats;
    daemon.notifier.status(
      `serving on ${daemon.listening}: ${stats.connectionsActive} connections, ${stats.commands} commands (${stats.prOut} PR OUT), ${stats.connectionsRefused} connections and ${daemon.access.stats.devicesRefused} devices refused`,
    );
  });
}
