// How `in`, `out` and `doctor --repair` report a SCSI result: --json's shape, and the
// sg_persist-style message and exit code of a failed command.

import { classifyResult, MalformedResponseError, PrCommandError } from '../backends/pr-commands';
import { statusName } from '../scsi/constants';
import { describeSense, type ScsiResult } from '../scsi/sense';
import { DeviceOpenError, SocketError } from './device-command';
import { ExitCode, exitCodeForResult } from './exit-codes';
import { toJson } from './format';
import { CliExit, type CliIo } from './io';

/** --json for a PR OUT result, or for a failed command. */
export function resultJson(result: ScsiResult) {
  return {
    status: statusName(result.status),
    outcome: classifyResult(result),
    sense: result.sense.length ? describeSense(result.sense) : undefined,
    senseHex: result.sense.length ? result.sense.toString('hex') : undefined,
  };
}

/** Prints a failed command the way sg_persist does, and picks its exit code. */
export function reportFailure(io: CliIo, error: unknown, json: boolean): never {
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
