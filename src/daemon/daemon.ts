// The composition root: backends, the resolver, the qemu-pr-helper server, logging,
// the pidfile, privilege drop and signals.

import fs from 'node:fs';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import type { PrBackend } from '../backends/backend';
import { EmulatedBackend } from '../backends/emulated/emulated-backend';
import { SgBackend } from '../backends/sg/sg-backend';
import { BlkprBackend } from '../backends/blkpr/blkpr-backend';
import { DeviceQueue } from '../backends/sg/device-queue';
import { BackendResolver, type ConcreteBackendName } from '../backends/resolve';
import { PrHelperServer } from '../protocol/server';
import { clearSocketActivationEnv, socketActivationFd } from '../protocol/socket-activation';
import { ConfigError, type DaemonConfig } from './config';
import { dropPrivileges } from './privileges';

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
  const emulated = new EmulatedBackend({ statePath: config.statePath, initiator: config.initiator, paths: config.paths });
  const queue = new DeviceQueue();
  const backends: Partial<Record<ConcreteBackendName, PrBackend>> = {
    emulated,
    sg: new SgBackend({ queue }),
    blkpr: new BlkprBackend({ queue }),
  };
  if (config.backend === 'mpath' && !backends.mpath) {
    emulated.close();
    throw new ConfigError('--backend mpath: the multipath backend is not available in this build yet; use auto, blkpr or sg');
  }
  const resolver = new BackendResolver({
    backends,
    forced: config.backend === 'auto' ? undefined : config.backend,
    onDecision: (device, choice) => {
      if (!choice.ok) logger?.warn({ device: device.path, reason: choice.reason }, 'device refused: no backend fits');
      else logger?.debug({ device: device.path, backend: choice.backend }, 'device resolved');
    },
  });
  return { resolver, emulated };
}

export interface Daemon {
  readonly server: PrHelperServer;
  readonly backends: BackendSet;
  readonly logger: Logger;
  /** Where the socket is, or 'fd 3 (socket activation)'. */
  readonly listening: string;
  /** Stops accepting, finishes in-flight commands, closes backends, removes the pidfile. */
  close(): Promise<void>;
}

export async function startDaemon(config: DaemonConfig, logger: Logger = pino({ level: config.logLevel })): Promise<Daemon> {
  const activatedFd = socketActivationFd({ explicitPath: config.socketPath });
  if (activatedFd === undefined && !config.socketPath) throw new ConfigError('no socket path given and not socket-activated');
  clearSocketActivationEnv();

  const backends = createBackends(config, logger);
  const server = new PrHelperServer({
    logger,
    execute: ({ handle, cdb, dataOut, peer, signal }) => backends.resolver.execute(handle, cdb, dataOut, { peer, signal }),
  });
  let listening: string;
  try {
    if (activatedFd !== undefined) {
      server.listen({ fd: activatedFd });
      listening = `fd ${activatedFd} (socket activation)`;
    } else {
      fs.mkdirSync(path.dirname(config.socketPath!), { recursive: true, mode: 0o755 });
      server.listen({ path: config.socketPath!, mode: config.socketMode });
      listening = config.socketPath!;
    }
    if (config.pidfile) fs.writeFileSync(config.pidfile, `${process.pid}\n`, { mode: 0o644 });
    // As qemu-pr-helper: bind first, then give up privileges.
    if (config.user !== undefined || config.group !== undefined) dropPrivileges({ user: config.user, group: config.group }, logger);
  } catch (error) {
    await server.close();
    await backends.resolver.close();
    throw error;
  }
  logger.info(
    {
      listening,
      backend: config.backend,
      state: config.statePath,
      initiator: backends.emulated.initiatorKey,
      paths: config.paths,
      version: VERSION,
    },
    `mpath-pr ready on ${listening}`,
  );

  let closing: Promise<void> | undefined;
  return {
    server,
    backends,
    logger,
    listening,
    close() {
      closing ??= (async () => {
        await server.close();
        await backends.resolver.close();
        if (config.pidfile) fs.rmSync(config.pidfile, { force: true });
        logger.info('mpath-pr stopped');
      })();
      return closing;
    },
  };
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
      { listening: daemon.listening, stats: daemon.server.stats, devices: daemon.backends.emulated.listDevices().length },
      'status (SIGHUP)',
    );
  });
}
