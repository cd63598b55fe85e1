#!/usr/bin/env node
// A drop-in for qemu-pr-helper: the same flags and defaults, so libvirt's
// `pr_helper = "/usr/bin/mpath-pr-helper"` in qemu.conf, or a hand-written QEMU command
// line, works unchanged. Settings qemu-pr-helper does not have (backend, emulated SAN
// state, initiator name) come from the environment, because libvirt passes only -k.

import { spawn } from 'node:child_process';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import {
  ConfigError,
  defaultStatePath,
  listenSocketPath,
  parseBackendSetting,
  parseDevicePattern,
  parseLimit,
  parsePathCount,
  splitList,
  QEMU_PR_HELPER_DEFAULT_PIDFILE,
  QEMU_PR_HELPER_DEFAULT_SOCKET,
  type LogLevel,
} from '../daemon/config';
import { installSignalHandlers, startDaemon, VERSION } from '../daemon/daemon';
import { defaultInitiatorName } from '../backends/emulated/emulated-backend';
import { DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_IN_FLIGHT_PER_PEER, type AccessSettings } from '../daemon/access-control';
import { resolveGroupId, resolveUserId } from '../daemon/accounts';

const DAEMONIZED_ENV = 'MPATH_PR_HELPER_DAEMONIZED';

interface HelperOptions {
  socket?: string;
  pidfile?: string;
  daemon?: boolean;
  trace?: string[];
  user?: string;
  group?: string;
  verbose: number;
  quiet?: boolean;
}

function absolute(text: string): string {
  if (!path.isAbsolute(text)) throw new InvalidArgumentError('must be an absolute path');
  return text;
}

export function buildHelperProgram(): Command {
  return new Command('mpath-pr-helper')
    .description('Persistent Reservation helper, compatible with qemu-pr-helper')
    .helpOption('-h, --help', 'display this help and exit')
    .version(`mpath-pr-helper ${VERSION} (mpath-pr; qemu-pr-helper protocol compatible)`, '-V, --version', 'output version information and exit')
    .option('-k, --socket <path>', `path to the Unix socket (default ${QEMU_PR_HELPER_DEFAULT_SOCKET})`, absolute)
    .option('-f, --pidfile <path>', `PID file when running as a daemon (default ${QEMU_PR_HELPER_DEFAULT_PIDFILE})`, absolute)
    .option('-d, --daemon', 'run in the background')
    .option('-T, --trace <pattern>', "accepted for compatibility (QEMU trace events); mpath-pr's logs are pino JSON", (v: string, prev: string[]) => [...prev, v], [])
    .option('-u, --user <user>', 'user to drop privileges to')
    .option('-g, --group <group>', 'group to drop privileges to')
    .option('-v, --verbose', 'increase verbosity (repeatable)', (_v: string, previous: number) => previous + 1, 0)
    .option('-q, --quiet', 'only log errors')
    .addHelpText(
      'after',
      `
Environment (mpath-pr extensions; qemu-pr-helper has no equivalent flags):
  MPATH_PR_BACKEND    auto (default), emulated, sg, blkpr or mpath
  MPATH_PR_STATE      emulated SAN state file (default ${defaultStatePath()})
  MPATH_PR_INITIATOR  this host's initiator name on the emulated SAN
  MPATH_PR_PATHS      paths per emulated LU (default 2)

Access control (comma-separated lists; libvirt passes only -k, so these are environment):
  MPATH_PR_ALLOW_UID                 peers allowed to connect, by uid or user name (root always is)
  MPATH_PR_ALLOW_GID                 peers allowed to connect, by primary gid or group name
  MPATH_PR_ALLOW_DEVICE              absolute path globs and WWID patterns of usable devices
  MPATH_PR_MAX_CONNECTIONS_PER_PEER  open connections per peer uid (default ${DEFAULT_MAX_CONNECTIONS_PER_PEER})
  MPATH_PR_MAX_IN_FLIGHT_PER_PEER    commands at once per peer uid, more wait (default ${DEFAULT_MAX_IN_FLIGHT_PER_PEER})`,
    );
}

/** The access-control settings from MPATH_PR_ALLOW_* and MPATH_PR_MAX_*; throws ConfigError on a bad value. */
export function accessFromEnvironment(env: NodeJS.ProcessEnv): AccessSettings {
  const limit = (name: string, fallback: number) => (env[name] === undefined || env[name] === '' ? fallback : parseLimit(env[name]!, name));
  return {
    allowUids: splitList(env.MPATH_PR_ALLOW_UID).map(resolveUserId),
    allowGids: splitList(env.MPATH_PR_ALLOW_GID).map(resolveGroupId),
    allowDevices: splitList(env.MPATH_PR_ALLOW_DEVICE).map(parseDevicePattern),
    maxConnectionsPerPeer: limit('MPATH_PR_MAX_CONNECTIONS_PER_PEER', DEFAULT_MAX_CONNECTIONS_PER_PEER),
    maxInFlightPerPeer: limit('MPATH_PR_MAX_IN_FLIGHT_PER_PEER', DEFAULT_MAX_IN_FLIGHT_PER_PEER),
  };
}

function logLevelFor(options: HelperOptions): LogLevel {
  if (options.quiet) return 'error';
  return options.verbose >= 2 ? 'trace' : options.verbose === 1 ? 'debug' : 'info';
}

/** -d: re-run ourselves detached and return once the child is listening, as daemon(3) would. */
function daemonize(argv: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [__filename, ...argv.filter((a) => a !== '-d' && a !== '--daemon')], {
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { ...process.env, [DAEMONIZED_ENV]: '1' },
    });
    let stderr = '';
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    child.on('message', (message) => {
      if (message === 'ready') {
        child.disconnect();
        child.stderr!.destroy();
        child.unref();
        resolve(0);
      }
    });
    child.on('exit', (code) => {
      process.stderr.write(stderr);
      resolve(code || 1);
    });
  });
}

export async function main(argv: string[]): Promise<number> {
  const program = buildHelperProgram();
  program.exitOverride();
  let options: HelperOptions;
  try {
    program.parse(argv, { from: 'user' });
    options = program.opts<HelperOptions>();
  } catch (error) {
    const code = (error as { code?: string }).code;
    return code === 'commander.helpDisplayed' || code === 'commander.version' ? 0 : 1;
  }
  if (options.daemon && process.env[DAEMONIZED_ENV] !== '1') {
    return daemonize(argv.includes('-f') || argv.some((a) => a.startsWith('--pidfile')) ? argv : [...argv, '-f', QEMU_PR_HELPER_DEFAULT_PIDFILE]);
  }
  try {
    const daemon = await startDaemon({
      socketPath: listenSocketPath(options.socket, () => QEMU_PR_HELPER_DEFAULT_SOCKET),
      socketMode: 0o600,
      backend: parseBackendSetting(process.env.MPATH_PR_BACKEND ?? 'auto'),
      statePath: process.env.MPATH_PR_STATE ?? defaultStatePath(),
      initiator: process.env.MPATH_PR_INITIATOR ?? defaultInitiatorName(),
      paths: parsePathCount(process.env.MPATH_PR_PATHS ?? '2'),
      logLevel: logLevelFor(options),
      pidfile: options.pidfile,
      user: options.user,
      group: options.group,
      access: accessFromEnvironment(process.env),
    });
    installSignalHandlers(daemon);
    if (process.send) process.send('ready');
    return await new Promise<number>(() => undefined);
  } catch (error) {
    process.stderr.write(`mpath-pr-helper: ${error instanceof ConfigError ? error.message : (error as Error).message}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
