// The `mpath-pr` command line. Built as a function so tests can drive it with
// exitOverride() and captured output.

import { Command, InvalidArgumentError, Option } from 'commander';
import fs from 'node:fs';
import {
  classifyResult,
  MalformedResponseError,
  PrCommandError,
  prOut,
  readFullStatus,
  readKeys,
  readReservation,
  registerIgnore,
  reportCapabilities,
  type PrOutRequest,
} from '../backends/pr-commands';
import { EmulatedStore } from '../backends/emulated/store';
import { initiatorTransportId, defaultInitiatorName, EmulatedBackend } from '../backends/emulated/emulated-backend';
import { isPrType, statusName, Status } from '../scsi/constants';
import { PR_OUT_ACTIONS } from '../scsi/actions';
import { describeSense, type ScsiResult } from '../scsi/sense';
import { parseTransportId, transportIdKey, type TransportId } from '../scsi/transport-id';
import {
  ConfigError,
  defaultServeSocket,
  defaultStatePath,
  parseBackendSetting,
  parseLogLevel,
  parsePathCount,
  parseSocketMode,
  parseLimit,
  parseDevicePattern,
  type BackendSetting,
} from '../daemon/config';
import { DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_IN_FLIGHT_PER_PEER } from '../daemon/access-control';
import { resolveGroupId, resolveUserId } from '../daemon/accounts';
import { installSignalHandlers, startDaemon, VERSION } from '../daemon/daemon';
import { DeviceOpenError, SocketError, withDevice } from './device-command';
import { formatMpathDoctor, mpathDoctor } from './doctor';
import { MultipathdClient } from '../multipathd/client';
import { addInstallUnitsCommand } from './install-units';
import { ExitCode, exitCodeForResult } from './exit-codes';
import { formatCapabilities, formatFullStatus, formatReadKeys, formatReadReservation, toJson } from './format';
import { initialState, serializeState } from '../engine/state';

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

const defaultIo: CliIo = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };

/** Thrown by actions to end with an exit code (caught in runCli). */
export class CliExit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

function parseKey(text: string): bigint {
  const hex = text.replace(/^0x/i, '');
  if (!/^[0-9a-f]{1,16}$/i.test(hex)) throw new InvalidArgumentError('a key is at most 16 hex digits, with or without 0x');
  return BigInt(`0x${hex}`);
}

function parseType(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !isPrType(value)) throw new InvalidArgumentError('the type is 1, 3, 5, 6, 7 or 8');
  return value;
}

function parseNonNegative(text: string): number {
  if (!/^\d+$/.test(text)) throw new InvalidArgumentError('expected a non-negative integer');
  return Number(text);
}

interface ServeOptions {
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
}

/** A repeatable option's parser: each occurrence parsed and appended. */
function collect<T>(parse: (text: string) => T) {
  return (text: string, previous: T[]): T[] => {
    try {
      return [...previous, parse(text)];
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
  };
}

function collectTransportId(text: string, previous: TransportId[]): TransportId[] {
  try {
    return [...previous, parseTransportId(text)];
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function wrap(parse: (text: string) => unknown) {
  return (text: string) => {
    try {
      return parse(text);
    } catch (error) {
      if (error instanceof InvalidArgumentError) throw error;
      throw new InvalidArgumentError((error as Error).message);
    }
  };
}

interface BackendOptions {
  backend: BackendSetting;
  state: string;
  initiator: string;
  paths: number;
}

function addBackendOptions(command: Command): Command {
  return command
    .addOption(new Option('--backend <name>', 'auto, emulated, sg, blkpr or mpath').default('auto').argParser(wrap(parseBackendSetting)))
    .addOption(new Option('--state <file>', 'the emulated SAN state file').default(defaultStatePath()).env('MPATH_PR_STATE'))
    .addOption(new Option('--initiator <name>', 'this host\'s initiator name on the emulated SAN').default(defaultInitiatorName()).env('MPATH_PR_INITIATOR'))
    .addOption(new Option('--paths <n>', 'paths from this host to each emulated LU').default(2).argParser(wrap(parsePathCount)));
}

function backendConfig(options: BackendOptions) {
  return { backend: options.backend, statePath: options.state, initiator: options.initiator, paths: options.paths };
}

function resultJson(result: ScsiResult, data?: unknown) {
  return {
    status: statusName(result.status),
    outcome: classifyResult(result),
    sense: result.sense.length ? describeSense(result.sense) : undefined,
    senseHex: result.sense.length ? result.sense.toString('hex') : undefined,
    data,
  };
}

/** Prints a failed command the way sg_persist does, and picks its exit code. */
function reportFailure(io: CliIo, error: unknown, json: boolean): never {
  if (error instanceof PrCommandError) {
    if (json) io.out(toJson(resultJson(error.result)) + '\n');
    else io.err(`${error.command} command failed: ${error.outcome === 'reservation-conflict' ? 'Reservation conflict' : describeSense(error.result.sense)}\n`);
    throw new CliExit(exitCodeForResult(error.result));
  }
  if (error instanceof MalformedResponseError) {
    io.err(`${error.message}\n`);
    throw new CliExit(ExitCode.MALFORMED_RESPONSE);
  }
  if (error instanceof DeviceOpenError || error instanceof SocketError) {
    io.err(`mpath-pr: ${error.message}\n`);
    throw new CliExit(ExitCode.FILE_ERROR);
  }
  throw error;
}

export function buildProgram(io: CliIo = defaultIo): Command {
  const program = new Command('mpath-pr')
    .description('Multipath-aware SCSI persistent reservations: a qemu-pr-helper replacement with an emulated SAN')
    .version(VERSION)
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .showHelpAfterError();

  addBackendOptions(
    program
      .command('serve')
      .description('run the daemon in the foreground (qemu-pr-helper protocol on a Unix socket)')
      .addOption(new Option('--socket <path>', 'where to listen (ignored under socket activation)').env('MPATH_PR_SOCKET'))
      .addOption(new Option('--socket-mode <octal>', 'permissions of the socket file').default(0o600, '0600').argParser(wrap(parseSocketMode)))
      .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug or trace').default('info').argParser(wrap(parseLogLevel)))
      .option('--pidfile <file>', 'write the daemon pid here')
      .option('--user <user>', 'after binding, switch to this user (name or number), keeping only the capabilities the backends need')
      .option('--group <group>', "after binding, switch to this group (default: the --user's primary group)")
      .addOption(
        new Option('--allow-uid <uid>', 'only peers with this uid (name or number) may connect; repeatable; root always may')
          .default([], 'every peer')
          .argParser(collect(resolveUserId)),
      )
      .addOption(new Option('--allow-gid <gid>', 'peers with this primary gid (name or number) may connect; repeatable').default([], 'every peer').argParser(collect(resolveGroupId)))
      .addOption(
        new Option('--allow-device <glob|wwid>', 'only devices whose path matches this absolute glob, or whose WWID matches this pattern; repeatable')
          .default([], 'every device')
          .argParser(collect(parseDevicePattern)),
      )
      .addOption(
        new Option('--max-connections-per-peer <n>', 'open connections per peer uid; more are refused')
          .default(DEFAULT_MAX_CONNECTIONS_PER_PEER)
          .argParser(wrap((t) => parseLimit(t, '--max-connections-per-peer'))),
      )
      .addOption(
        new Option('--max-in-flight-per-peer <n>', 'commands running at once per peer uid; more wait in FIFO order')
          .default(DEFAULT_MAX_IN_FLIGHT_PER_PEER)
          .argParser(wrap((t) => parseLimit(t, '--max-in-flight-per-peer'))),
      )
      .option('--dbus-address <address>', 'D-Bus to publish org.mpathpr.Manager1 on (default: $DBUS_SYSTEM_BUS_ADDRESS, else the system bus)')
      .option('--no-dbus', 'do not connect to D-Bus at all')
      .option('--dbus-admin-uid <uid>', 'besides root, this uid (name or number) may call the D-Bus admin methods; repeatable', collect(resolveUserId), []),
  ).action(async (options: BackendOptions & ServeOptions & { dbus: boolean; dbusAddress?: string; dbusAdminUid: number[] }) => {
    const activated = process.env.LISTEN_FDS !== undefined && process.env.LISTEN_PID === String(process.pid);
    const daemon = await startDaemon({
      socketPath: options.socket ?? (activated ? undefined : defaultServeSocket()),
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
    await new Promise(() => undefined); // runs until a signal
  });

  addBackendOptions(
    program
      .command('in')
      .description('PERSISTENT RESERVE IN, like mpathpersist -i / sg_persist -i')
      .argument('<device>', 'block device, sg node, or emulated LU file')
      .option('-k, --read-keys', 'READ KEYS')
      .option('-r, --read-reservation', 'READ RESERVATION')
      .option('-c, --report-capabilities', 'REPORT CAPABILITIES')
      .option('-s, --read-full-status', 'READ FULL STATUS')
      .option('--json', 'machine-readable output')
      .option('--socket <path>', 'go through a running daemon instead of running in-process'),
  ).action(async (device: string, options: BackendOptions & Record<string, unknown>) => {
    const chosen = ['readKeys', 'readReservation', 'reportCapabilities', 'readFullStatus'].filter((k) => options[k]);
    if (chosen.length !== 1) {
      io.err('mpath-pr in: choose exactly one of --read-keys, --read-reservation, --report-capabilities, --read-full-status\n');
      throw new CliExit(ExitCode.USAGE);
    }
    const json = options.json === true;
    const target = { device, writable: false, socket: options.socket as string | undefined, backend: backendConfig(options) };
    await withDevice(target, async (run) => {
      switch (chosen[0]) {
        case 'readKeys': {
          const data = await readKeys(run);
          io.out(json ? toJson({ status: 'GOOD', data }) + '\n' : formatReadKeys(data));
          break;
        }
        case 'readReservation': {
          const data = await readReservation(run);
          io.out(json ? toJson({ status: 'GOOD', data }) + '\n' : formatReadReservation(data));
          break;
        }
        case 'reportCapabilities': {
          const data = await reportCapabilities(run);
          io.out(json ? toJson({ status: 'GOOD', data }) + '\n' : formatCapabilities(data));
          break;
        }
        default: {
          const data = await readFullStatus(run);
          io.out(json ? toJson({ status: 'GOOD', data }) + '\n' : formatFullStatus(data));
        }
      }
    }).catch((error) => reportFailure(io, error, json));
  });

  const outActions = PR_OUT_ACTIONS.filter((a) => a.letter !== undefined);
  const out = program
    .command('out')
    .description('PERSISTENT RESERVE OUT, like mpathpersist -o / sg_persist -o')
    .argument('<device>', 'block device, sg node, or emulated LU file');
  for (const action of outActions) out.option(`-${action.letter}, --${action.name}`, action.title);
  addBackendOptions(
    out
      .option('-K, --param-rk <key>', 'RESERVATION KEY (hex)', parseKey)
      .option('-S, --param-sark <key>', 'SERVICE ACTION RESERVATION KEY (hex)', parseKey)
      .option('-T, --prout-type <type>', 'reservation type: 1 WE, 3 EA, 5 WE-RO, 6 EA-RO, 7 WE-AR, 8 EA-AR', parseType)
      .option('-Z, --param-aptpl', 'APTPL: persist through power loss')
      .option('-Y, --param-alltgpt', 'ALL_TG_PT: register on all target ports')
      .option('-X, --transport-id <id>', 'TransportID (repeatable): iqn.…[,i,0x<isid>], fc,<hex>, sas,<hex>', collectTransportId, [])
      .option('--relative-target-port <n>', 'REGISTER AND MOVE: destination relative target port', wrap(parseNonNegative))
      .option('--unreg', 'REGISTER AND MOVE: unregister the source I_T nexus')
      .option('--json', 'machine-readable output')
      .option('--socket <path>', 'go through a running daemon instead of running in-process'),
  ).action(async (device: string, options: BackendOptions & Record<string, unknown>) => {
    const chosen = outActions.filter((a) => options[camel(a.name)]);
    if (chosen.length !== 1) {
      io.err(`mpath-pr out: choose exactly one of ${outActions.map((a) => `--${a.name}`).join(', ')}\n`);
      throw new CliExit(ExitCode.USAGE);
    }
    const { name: action, title: description } = chosen[0];
    const request: PrOutRequest = {
      action,
      reservationKey: options.paramRk as bigint | undefined,
      serviceActionKey: options.paramSark as bigint | undefined,
      type: options.proutType as number | undefined,
      aptpl: options.paramAptpl === true,
      allTgPt: options.paramAlltgpt === true,
      transportIds: options.transportId as TransportId[],
      relativeTargetPort: options.relativeTargetPort as number | undefined,
      unreg: options.unreg === true,
    };
    const json = options.json === true;
    const target = { device, writable: true, socket: options.socket as string | undefined, backend: backendConfig(options) };
    await withDevice(target, async (run) => {
      let result: ScsiResult;
      try {
        result = await prOut(run, request);
      } catch (error) {
        if (error instanceof RangeError) {
          io.err(`mpath-pr out: ${error.message}\n`);
          throw new CliExit(ExitCode.USAGE);
        }
        throw error;
      }
      if (result.status !== Status.GOOD) throw new PrCommandError(description, result);
      io.out(json ? toJson(resultJson(result)) + '\n' : `${description}: done\n`);
    }).catch((error) => reportFailure(io, error, json));
  });

  addInstallUnitsCommand(program, io, (code) => {
    throw new CliExit(code);
  });

  program
    .command('doctor')
    .description('check every dm-multipath map: per path registration, reservation, multipathd key; --repair re-registers the host key on every path')
    .argument('[map...]', 'map aliases (default: every dm-multipath map)')
    .option('--repair', 'REGISTER AND IGNORE the host key through the map (the mpath backend verifies every path)')
    .option('--json', 'machine-readable output')
    .action(async (maps: string[], options: { repair?: boolean; json?: boolean }) => {
      const multipathd = new MultipathdClient();
      const check = () => mpathDoctor({ multipathd, maps: maps.length ? maps : undefined });
      let report = await check();
      const repaired: string[] = [];
      if (options.repair) {
        for (const map of report.maps) {
          if (map.verdict !== 'inconsistent' || !map.hostKey) continue;
          const target = { device: `/dev/mapper/${map.name}`, writable: true, backend: { backend: 'mpath' as const, statePath: defaultStatePath(), initiator: defaultInitiatorName(), paths: 1 } };
          await withDevice(target, (run) => registerIgnore(run, BigInt(map.hostKey!))).catch((error) => reportFailure(io, error, options.json === true));
          repaired.push(map.name);
        }
        if (repaired.length) report = await check();
      }
      io.out(options.json ? toJson({ ...report, repaired }) + '\n' : formatMpathDoctor(report) + (repaired.length ? `repaired: ${repaired.join(', ')}\n` : ''));
      if (report.maps.some((m) => m.verdict === 'inconsistent') || report.problems.length) throw new CliExit(ExitCode.OTHER);
    });

  const emu = program.command('emu').description('drive the emulated SAN: path faults and slow devices, while daemons run');
  const pathCommand = emu.command('path').description('fail, reinstate or list the paths of one simulated host');
  const addPathAction = (name: 'fail' | 'reinstate' | 'list') =>
    pathCommand
      .command(name)
      .addOption(new Option('--state <file>', 'the emulated SAN state file').default(defaultStatePath()).env('MPATH_PR_STATE'))
      .addOption(new Option('--initiator <name>', 'the simulated host').default(defaultInitiatorName()).env('MPATH_PR_INITIATOR'))
      .option('--json', 'machine-readable output')
      .option('--path <n>', 'path index (0-based)', wrap(parseNonNegative))
      .action((options: { state: string; initiator: string; path?: number; json?: boolean }) => {
        const initiator = initiatorTransportId(options.initiator);
        const key = transportIdKey(initiator);
        if (name === 'list') {
          const store = new EmulatedStore(options.state);
          try {
            const paths = store.hostPaths(key).filter((p) => options.path === undefined || p.index === options.path);
            if (paths.length === 0) {
              io.err(`mpath-pr emu path list: no host ${key} in ${options.state}\n`);
              throw new CliExit(ExitCode.USAGE);
            }
            if (options.json) io.out(toJson(paths) + '\n');
            else for (const p of paths) io.out(`path ${p.index}  target port ${p.index + 1}  ${p.state}\n`);
          } finally {
            store.close();
          }
          return;
        }
        if (options.path === undefined) {
          io.err(`mpath-pr emu path ${name}: --path is required\n`);
          throw new CliExit(ExitCode.USAGE);
        }
        const backend = new EmulatedBackend({ statePath: options.state, initiator: options.initiator, paths: 1 });
        try {
          const { changedLus } = backend.setPathState(options.path, name === 'fail' ? 'failed' : 'active');
          const summary = { initiator: key, path: options.path, state: name === 'fail' ? 'failed' : 'active', reregistered: changedLus };
          io.out(options.json ? toJson(summary) + '\n' : `path ${options.path} of ${key}: ${summary.state}${changedLus.length ? `; key re-registered on ${changedLus.join(', ')}` : ''}\n`);
        } catch (error) {
          if (error instanceof RangeError) {
            io.err(`mpath-pr emu path ${name}: ${error.message}\n`);
            throw new CliExit(ExitCode.USAGE);
          }
          throw error;
        } finally {
          void backend.close();
        }
      });
  addPathAction('fail');
  addPathAction('reinstate');
  addPathAction('list');

  emu
    .command('delay')
    .description('make every command for one emulated LU wait, to simulate a slow or hung device')
    .argument('<device>', 'the emulated LU file')
    .requiredOption('--ms <n>', 'delay in milliseconds (0 removes it)', wrap(parseNonNegative))
    .addOption(new Option('--state <file>', 'the emulated SAN state file').default(defaultStatePath()).env('MPATH_PR_STATE'))
    .action((device: string, options: { ms: number; state: string }) => {
      const store = new EmulatedStore(options.state);
      try {
        const lu = realpathOrSelf(device);
        store.immediate(() => store.setLuDelayMs(lu, EMPTY_STATE, options.ms));
        io.out(`${lu}: every command now waits ${options.ms} ms\n`);
      } finally {
        store.close();
      }
    });

  return program;
}

const EMPTY_STATE = serializeState(initialState());

function realpathOrSelf(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return file;
  }
}

function camel(name: string): string {
  return name.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** Runs the CLI and returns its exit code instead of exiting (for tests and the bin shim). */
export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const program = buildProgram(io);
  program.exitOverride();
  for (const command of program.commands) {
    command.exitOverride();
    for (const sub of command.commands) {
      sub.exitOverride();
      for (const leaf of sub.commands) leaf.exitOverride();
    }
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return ExitCode.OK;
  } catch (error) {
    if (error instanceof CliExit) return error.code;
    const code = (error as { code?: string; exitCode?: number }).code;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      return code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help' ? ExitCode.OK : ExitCode.USAGE;
    }
    if (error instanceof ConfigError) {
      io.err(`mpath-pr: ${error.message}\n`);
      return ExitCode.USAGE;
    }
    io.err(`mpath-pr: ${(error as Error).stack ?? error}\n`);
    return ExitCode.OTHER;
  }
}

