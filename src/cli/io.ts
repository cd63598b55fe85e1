// Where the `mpath-pr` commands write, and how they end with an exit code. Commands take a
// CliIo instead of writing to process.stdout, so the CLI can run inside a test with its
// output captured.

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

export const defaultIo: CliIo = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };

/** Thrown by actions to end with an exit code (caught in runCli). */
export class CliExit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

/** Writes `mpath-pr <command>: <message>` to stderr and ends with `code`. */
export function fail(io: CliIo, command: string, message: string, code: number): never {
  io.err(`mpath-pr ${command}: ${message}\n`);
  throw new CliExit(code);
}
