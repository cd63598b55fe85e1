// `mpath-pr serve`: the daemon in the foreground, speaking the qemu-pr-helper protocol on a
// Unix socket (mpath-pr's own spelling of the flags; mpath-pr-helper has qemu-pr-helper's).

import { Option, type Command } from 'commander';
import { DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_IN_FLIGHT_PER_PEER } from '../../daemon/access-control';
import { defaultServeSocket, listenSocketPath, parseDevicePattern, parseLimit, parseLogLevel, parseSocketMode } from '../../daemon/config';
import { installSignalHandlers, startDaemon } from '../../daemon/daemon';
import { resolveGroupId, resolveUserId } from '../../daemon/accounts';
import { addBackendOptions, argumentParser, collect, type BackendOptions } from '../options';

interface ServeOptions extends BackendOptions {
  socket?: string;
  socketMode: number;
  logLevel: string;
  pidfile?: string;
  user?: string;
  group?: string;
  allowUid: number[];
  allowGid: number[];
  allowDevice: string[];
  maxConnectionsPerPeer: number;
  maxInFlightPerPeer: number;
  dbus: boolean;
  dbusAddress?: string;
  dbusAdminUid: number[];
}

const limitOption = (flag: string, description: string, fallback: number) =>
  new Option(`${flag} <n>`, description).default(fallback).argParser(argumentParser((t) => parseLimit(t, flag)));

function addAccessOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--allow-uid <uid>', 'only peers with this uid (name or number) may connect; repeatable; root always may').default([], 'every peer').argParser(collect(resolveUserId)),
    )
    .addOption(new Option('--allow-gid <gid>', 'peers with this primary gid (name or number) may connect; repeatable').default([], 'every peer').argParser(collect(resolveGroupId)))
    .addOption(
      new Option('--allow-device <glob|wwid>', 'only devices whose path matches this absolute glob, or whose WWID matches this pattern; repeatable')
        .default([], 'every device')
        .argParser(collect(parseDevicePattern)),
    )
    .addOption(limitOption('--max-connections-per-peer', 'open connections per peer uid; more are refused', DEFAULT_MAX_CONNECTIONS_PER_PEER))
    .addOption(limitOption('--max-in-flight-per-peer', 'commands running at once per peer uid; more wait in FIFO order', DEFAULT_MAX_IN_FLIGHT_PER_PEER));
}

export function addServeCommand(program: Command): Command {
  const command = program
    .command('serve')
    .description('run the daemon in the foreground (qemu-pr-helper protocol on a Unix socket)')
    .addOption(new Option('--socket <path>', 'where to listen (ignored under socket activation)').env('MPATH_PR_SOCKET'))
    .addOption(new Option('--socket-mode <octal>', 'permissions of the socket file').default(0o600, '0600').argParser(argumentParser(parseSocketMode)))
    .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug or trace').default('info').argParser(argumentParser(parseLogLevel)))
    .option('--pidfile <file>', 'write the daemon pid here')
    .option('--user <user>', 'after binding, switch to this user (name or number), keeping only the capabilities the backends need')
    .option('--group <group>', "after binding, switch to this group (default: the --user's primary group)");
  addAccessOptions(command)
    .option('--dbus-address <address>', 'D-Bus to publish org.mpathpr.Manager1 on (default: $DBUS_SYSTEM_BUS_ADDRESS, else the system bus)')
    .option('--no-dbus', 'do not connect to D-Bus at all')
    .option('--dbus-admin-uid <uid>', 'besides root, this uid (name or number) may call the D-Bus admin methods; repeatable', collect(resolveUserId), []);
  return addBackendOptions(command).action(serve);
}

async function serve(options: ServeOptions): Promise<never> {
  const daemon = await startDaemon({
    socketPath: listenSocketPath(options.socket, defaultServeSocket),
    socketMode: options.socketMode,
    backend: options.backend,
    statePath: options.state,
    initiator: options.initiator,
    paths: options.paths,
    logLevel: parseLogLevel(options.logLevel),
    pidfile: options.pidfile,
    user: options.user,
    group: options.group,
    access: {
      allowUids: options.allowUid,
      allowGids: options.allowGid,
      allowDevices: options.allowDevice,
      maxConnectionsPerPeer: options.maxConnectionsPerPeer,
      maxInFlightPerPeer: options.maxInFlightPerPeer,
    },
    dbus: { enabled: options.dbus, address: options.dbusAddress, adminUids: options.dbusAdminUid },
  });
  installSignalHandlers(daemon);
  return new Promise<never>(() => undefined); // runs until a signal
}
