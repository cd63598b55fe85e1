// `mpath-pr emu`: drives the emulated SAN from outside while daemons run on it: fail and
// reinstate one host's paths, and make an LU slow.

import type { Command } from 'commander';
import fs from 'node:fs';
import { EmulatedBackend, initiatorTransportId } from '../../backends/emulated/emulated-backend';
import { EmulatedStore } from '../../backends/emulated/store';
import { initialState, serializeState } from '../../engine/state';
import { transportIdKey } from '../../scsi/transport-id';
import { ExitCode } from '../exit-codes';
import { toJson } from '../format';
import { fail, type CliIo } from '../io';
import { argumentParser, initiatorOption, jsonOption, parseNonNegative, stateOption } from '../options';

interface PathOptions {
  state: string;
  initiator: string;
  path?: number;
  json?: boolean;
}

export function addEmuCommand(program: Command, io: CliIo): Command {
  const emu = program.command('emu').description('drive the emulated SAN: path faults and slow devices, while daemons run');
  const pathCommand = emu.command('path').description('fail, reinstate or list the paths of one simulated host');
  addPathAction(pathCommand, 'fail').action((options: PathOptions) => setPathState(io, 'fail', options));
  addPathAction(pathCommand, 'reinstate').action((options: PathOptions) => setPathState(io, 'reinstate', options));
  addPathAction(pathCommand, 'list').action((options: PathOptions) => listPaths(io, options));
  emu
    .command('delay')
    .description('make every command for one emulated LU wait, to simulate a slow or hung device')
    .argument('<device>', 'the emulated LU file')
    .requiredOption('--ms <n>', 'delay in milliseconds (0 removes it)', argumentParser(parseNonNegative))
    .addOption(stateOption())
    .action((device: string, options: { ms: number; state: string }) => setDelay(io, device, options));
  return emu;
}

function addPathAction(pathCommand: Command, name: 'fail' | 'reinstate' | 'list'): Command {
  return pathCommand
    .command(name)
    .addOption(stateOption())
    .addOption(initiatorOption('the simulated host'))
    .addOption(jsonOption())
    .option('--path <n>', 'path index (0-based)', argumentParser(parseNonNegative));
}

function listPaths(io: CliIo, options: PathOptions): void {
  const key = transportIdKey(initiatorTransportId(options.initiator));
  const store = new EmulatedStore(options.state);
  try {
    const paths = store.hostPaths(key).filter((p) => options.path === undefined || p.index === options.path);
    if (paths.length === 0) fail(io, 'emu path list', `no host ${key} in ${options.state}`, ExitCode.USAGE);
    if (options.json) io.out(toJson(paths) + '\n');
    else for (const p of paths) io.out(`path ${p.index}  target port ${p.index + 1}  ${p.state}\n`);
  } finally {
    store.close();
  }
}

function setPathState(io: CliIo, name: 'fail' | 'reinstate', options: PathOptions): void {
  const key = transportIdKey(initiatorTransportId(options.initiator));
  if (options.path === undefined) fail(io, `emu path ${name}`, '--path is required', ExitCode.USAGE);
  const state = name === 'fail' ? 'failed' : 'active';
  const backend = new EmulatedBackend({ statePath: options.state, initiator: options.initiator, paths: 1 });
  try {
    const { changedLus } = backend.setPathState(options.path, state);
    const summary = { initiator: key, path: options.path, state, reregistered: changedLus };
    io.out(options.json ? toJson(summary) + '\n' : `path ${options.path} of ${key}: ${state}${changedLus.length ? `; key re-registered on ${changedLus.join(', ')}` : ''}\n`);
  } catch (error) {
    if (error instanceof RangeError) fail(io, `emu path ${name}`, error.message, ExitCode.USAGE);
    throw error;
  } finally {
    void backend.close();
  }
}

/** The state an LU's row starts with when `emu delay` creates it before any command has. */
const EMPTY_STATE = serializeState(initialState());

function setDelay(io: CliIo, device: string, options: { ms: number; state: string }): void {
  const store = new EmulatedStore(options.state);
  try {
    const lu = realpathOrSelf(device);
    store.immediate(() => store.setLuDelayMs(lu, EMPTY_STATE, options.ms));
    io.out(`${lu}: every command now waits ${options.ms} ms\n`);
  } finally {
    store.close();
  }
}

function realpathOrSelf(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return file;
  }
}
