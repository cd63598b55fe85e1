// The `mpath-pr` command line: one module per command under ./commands, the options they
// share in ./options. Built as a function so tests can drive it with exitOverride() and
// captured output.

import { Command } from 'commander';
import { ConfigError } from '../daemon/config';
import { VERSION } from '../daemon/daemon';
import { addDoctorCommand } from './commands/doctor';
import { addEmuCommand } from './commands/emu';
import { addInstallUnitsCommand } from './commands/install-units';
import { addPrInCommand } from './commands/pr-in';
import { addPrOutCommand } from './commands/pr-out';
import { addServeCommand } from './commands/serve';
import { ExitCode } from './exit-codes';
import { CliExit, defaultIo, type CliIo } from './io';

export function buildProgram(io: CliIo = defaultIo): Command {
  const program = new Command('mpath-pr')
    .description('Multipath-aware SCSI persistent reservations: a qemu-pr-helper replacement with an emulated SAN')
    .version(VERSION)
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .showHelpAfterError();
  // Subcommands made with .command() inherit the output and help settings above.
  addServeCommand(program);
  addPrInCommand(program, io);
  addPrOutCommand(program, io);
  addInstallUnitsCommand(program, io);
  addDoctorCommand(program, io);
  addEmuCommand(program, io);
  return program;
}

/** exitOverride() on a command and every subcommand below it: errors throw instead of exiting. */
function throwInsteadOfExiting(command: Command): void {
  command.exitOverride();
  for (const sub of command.commands) throwInsteadOfExiting(sub);
}

const SUCCESSFUL_COMMANDER_EXITS = new Set(['commander.helpDisplayed', 'commander.version', 'commander.help']);

/** Runs the CLI and returns its exit code instead of exiting (for tests and the bin shim). */
export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const program = buildProgram(io);
  throwInsteadOfExiting(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return ExitCode.OK;
  } catch (error) {
    if (error instanceof CliExit) return error.code;
    const code = (error as { code?: string }).code;
    if (typeof code === 'string' && code.startsWith('commander.')) return SUCCESSFUL_COMMANDER_EXITS.has(code) ? ExitCode.OK : ExitCode.USAGE;
    if (error instanceof ConfigError) {
      io.err(`mpath-pr: ${error.message}\n`);
      return ExitCode.USAGE;
    }
    io.err(`mpath-pr: ${(error as Error).stack ?? error}\n`);
    return ExitCode.OTHER;
  }
}
