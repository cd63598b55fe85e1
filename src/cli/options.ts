// Options and argument parsers more than one `mpath-pr` command takes, declared once here
// so every command spells, describes and defaults them the same way.

import { Command, InvalidArgumentError, Option } from 'commander';
import { defaultInitiatorName } from '../backends/emulated/emulated-backend';
import { isPrType } from '../scsi/constants';
import { defaultStatePath, parseBackendSetting, parsePathCount, type BackendSetting } from '../daemon/config';
import type { DeviceCommandTarget } from './device-command';

/**
 * An option-argument parser whose errors commander reports as "argument … is invalid"
 * (exit 1) rather than as a crash: any error becomes an InvalidArgumentError.
 */
export function argumentParser<T>(parse: (text: string) => T): (text: string) => T {
  return (text: string) => {
    try {
      return parse(text);
    } catch (error) {
      if (error instanceof InvalidArgumentError) throw error;
      throw new InvalidArgumentError((error as Error).message);
    }
  };
}

/** A repeatable option's parser: each occurrence parsed and appended. */
export function collect<T>(parse: (text: string) => T): (text: string, previous: T[]) => T[] {
  const parseOne = argumentParser(parse);
  return (text: string, previous: T[]) => [...previous, parseOne(text)];
}

/** A reservation key: up to 16 hex digits, with or without 0x (sg_persist's --param-rk). */
export function parseKey(text: string): bigint {
  const hex = text.replace(/^0x/i, '');
  if (!/^[0-9a-f]{1,16}$/i.test(hex)) throw new InvalidArgumentError('a key is at most 16 hex digits, with or without 0x');
  return BigInt(`0x${hex}`);
}

/** A persistent reservation type code (SPC-4 table "Persistent reservation type codes"). */
export function parseType(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !isPrType(value)) throw new InvalidArgumentError('the type is 1, 3, 5, 6, 7 or 8');
  return value;
}

export function parseNonNegative(text: string): number {
  if (!/^\d+$/.test(text)) throw new InvalidArgumentError('expected a non-negative integer');
  return Number(text);
}

export const jsonOption = () => new Option('--json', 'machine-readable output');

export const stateOption = () => new Option('--state <file>', 'the emulated SAN state file').default(defaultStatePath()).env('MPATH_PR_STATE');

/** --initiator; `description` says whose name it is in the command at hand. */
export const initiatorOption = (description: string) => new Option('--initiator <name>', description).default(defaultInitiatorName()).env('MPATH_PR_INITIATOR');

/** `in` and `out`: send the command through a running daemon's socket. */
export const daemonSocketOption = () => new Option('--socket <path>', 'go through a running daemon instead of running in-process');

/** The backend settings `serve`, `in` and `out` take (what DaemonConfig calls them). */
export interface BackendOptions {
  backend: BackendSetting;
  state: string;
  initiator: string;
  paths: number;
}

export function addBackendOptions(command: Command): Command {
  return command
    .addOption(new Option('--backend <name>', 'auto, emulated, sg, blkpr or mpath').default('auto').argParser(argumentParser(parseBackendSetting)))
    .addOption(stateOption())
    .addOption(initiatorOption("this host's initiator name on the emulated SAN"))
    .addOption(new Option('--paths <n>', 'paths from this host to each emulated LU').default(2).argParser(argumentParser(parsePathCount)));
}

export function backendConfig(options: BackendOptions): DeviceCommandTarget['backend'] {
  return { backend: options.backend, statePath: options.state, initiator: options.initiator, paths: options.paths };
}

/** One `-<letter>, --<name>` flag per service action, as sg_persist and mpathpersist spell them. */
export function addActionOptions(command: Command, actions: readonly { name: string; title: string; letter: string }[]): Command {
  for (const action of actions) command.option(`-${action.letter}, --${action.name}`, action.title);
  return command;
}

/** The one action flag given, or undefined when none or several are. */
export function chosenAction<A extends { name: string }>(actions: readonly A[], options: Record<string, unknown>): A | undefined {
  const chosen = actions.filter((action) => options[attributeName(action.name)]);
  return chosen.length === 1 ? chosen[0] : undefined;
}

/** Where commander stores --<name>: camel case, "register-ignore" → "registerIgnore". */
function attributeName(name: string): string {
  return name.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}
