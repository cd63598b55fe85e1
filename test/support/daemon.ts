// Real daemon processes for the integration tests and the benchmarks: one launcher for
// `mpath-pr serve`, mpath-pr-helper, a program that starts one (setpriv) and Debian's
// qemu-pr-helper. It starts the process with any flags, environment and uid, waits until it
// is ready (a log line, or a socket that accepts), keeps its output, and stops it.
//
// A daemon that drops privileges re-executes itself (same pid, same stdout and stderr), so
// its ready line comes from the re-executed image and needs nothing special here.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PrHelperClient } from '../../src/protocol/client';
import { deferred, eventually } from './wait';

export const MPATH_PR = path.resolve(__dirname, '../../src/cli/mpath-pr.js');
export const MPATH_PR_HELPER = path.resolve(__dirname, '../../src/cli/mpath-pr-helper.js');

const READY_LINE = /mpath-pr ready/;

export interface LaunchOptions {
  /** `command` is a program of its own (setpriv, qemu-pr-helper), not a Node script. */
  readonly program?: boolean;
  /** Merged over this process's environment. */
  readonly env?: NodeJS.ProcessEnv;
  /** Start under another user (the kernel checks the switch: only root may). */
  readonly uid?: number;
  readonly gid?: number;
  /** Ready when a log line matches (default: "mpath-pr ready"), or once `socket` accepts a connection. */
  readonly ready?: RegExp | { readonly socket: string };
  /** How long it may take to get ready; past it the launch fails with the output so far (default 15 s). */
  readonly readyTimeoutMs?: number;
  /** Output goes to this file instead of this process's memory (benchmarks: reading it must not cost the measured run). */
  readonly logFile?: string;
}

export interface DaemonProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Everything it wrote to stdout and stderr so far. */
  logs(): string;
  /** Its log lines (pino JSON) that parse, in order. */
  records(): Record<string, unknown>[];
  /** Resolves once some output line matches; fails if the process ends first or after `timeoutMs`. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /**
   * Sends `signal` (default SIGTERM) unless it has ended, and resolves with its exit code once
   * its output is drained. With `killAfterMs`, SIGKILL follows if it has not ended by then.
   */
  stop(signal?: NodeJS.Signals, options?: { killAfterMs?: number }): Promise<number | null>;
}

function parseRecords(output: string): Record<string, unknown>[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
}

/** Output kept in memory, with waiters woken by each chunk rather than by polling. */
class OutputWatch {
  text = '';
  private readonly waiters = new Set<() => void>();

  append(chunk: Buffer | string): void {
    this.text += chunk;
    for (const wake of [...this.waiters]) wake();
  }

  /** Resolves when `test` holds on the output; fails once `ended` says how the process ended, or after `timeoutMs`. */
  async until(test: () => boolean, what: string, ended: Promise<string>, timeoutMs: number): Promise<void> {
    if (test()) return;
    const done = deferred<void>();
    const wake = () => test() && done.resolve();
    this.waiters.add(wake);
    void ended.then((how) => done.reject(new Error(`${how} before ${what}: ${this.text}`)));
    const timer = setTimeout(() => done.reject(new Error(`no ${what} within ${timeoutMs} ms: ${this.text}`)), timeoutMs);
    try {
      await done.promise;
    } finally {
      clearTimeout(timer);
      this.waiters.delete(wake);
    }
  }
}

/** Whether a PR helper (ours or qemu-pr-helper) accepts on `socket` and sends its features word. */
async function accepts(socket: string): Promise<boolean> {
  if (!fs.existsSync(socket)) return false;
  const client = new PrHelperClient({ connectAttempts: 1 });
  try {
    await client.connect(socket);
    return true;
  } catch {
    return false;
  } finally {
    client.close();
  }
}

export async function launchDaemon(command: string, args: readonly string[], options: LaunchOptions = {}): Promise<DaemonProcess> {
  const [file, argv] = options.program ? [command, [...args]] : [process.execPath, [command, ...args]];
  const log = options.logFile === undefined ? undefined : fs.openSync(options.logFile, 'w');
  const child = spawn(file, argv, {
    stdio: log === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', log, log],
    env: { ...process.env, ...options.env },
    uid: options.uid,
    gid: options.gid,
  });
  if (log !== undefined) fs.closeSync(log);
  const output = new OutputWatch();
  child.stdout?.on('data', (chunk) => output.append(chunk));
  child.stderr?.on('data', (chunk) => output.append(chunk));
  const logs = () => (options.logFile === undefined ? output.text : fs.readFileSync(options.logFile, 'utf8'));
  // 'close': the exit code once stdout and stderr are drained too, so logs() is complete.
  // 'error': it could not be started at all (no such program).
  let ended: string | undefined;
  const exited = new Promise<number | null>((resolve) => {
    child.once('close', (code, signal) => {
      ended ??= `the daemon exited (code ${code}, signal ${signal})`;
      resolve(code);
    });
    child.once('error', (error) => {
      ended = `${file} could not start (${error.message})`;
      resolve(null);
    });
  });
  const endedHow = exited.then(() => ended!);
  const running = () => child.exitCode === null && child.signalCode === null;

  const waitForLog = async (pattern: RegExp, timeoutMs = 15_000): Promise<void> => {
    const what = `a log line matching ${pattern}`;
    if (options.logFile === undefined) await output.until(() => pattern.test(output.text), what, endedHow, timeoutMs);
    else await eventually(() => pattern.test(logs()), what, { timeoutMs, describe: logs, failWhen: () => ended });
  };

  const stop = async (signal: NodeJS.Signals = 'SIGTERM', stopOptions: { killAfterMs?: number } = {}): Promise<number | null> => {
    if (running()) child.kill(signal);
    if (stopOptions.killAfterMs === undefined) return exited;
    const timer = setTimeout(() => running() && child.kill('SIGKILL'), stopOptions.killAfterMs);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  };

  const ready = options.ready ?? READY_LINE;
  const readyTimeoutMs = options.readyTimeoutMs ?? 15_000;
  try {
    if (ready instanceof RegExp) await waitForLog(ready, readyTimeoutMs);
    else {
      await eventually(() => accepts(ready.socket), `${file} to accept on ${ready.socket}`, {
        timeoutMs: readyTimeoutMs,
        intervalMs: 50,
        describe: () => `output: ${logs().split('\n').slice(-15).join('\n')}`,
        failWhen: () => ended,
      });
    }
  } catch (error) {
    await stop('SIGKILL');
    throw error;
  }
  return { child, pid: child.pid!, logs, records: () => parseRecords(logs()), waitForLog, stop };
}

export interface ServeProcess extends DaemonProcess {
  readonly socket: string;
}

export interface ServeOptions {
  readonly dir: string;
  readonly state: string;
  readonly initiator: string;
  /** Paths of the emulated SAN (default 2). */
  readonly paths?: number;
  /** The socket is <dir>/<name>.sock (default: the initiator). */
  readonly name?: string;
  /** Default debug; trace adds a line per admitted command. */
  readonly logLevel?: string;
  /** More `serve` flags (e.g. --dbus-address). */
  readonly args?: readonly string[];
  readonly readyTimeoutMs?: number;
}

/** `mpath-pr serve` with the emulated SAN of one initiator, on a socket in `dir`. */
export async function startServe(options: ServeOptions): Promise<ServeProcess> {
  const socket = path.join(options.dir, `${options.name ?? options.initiator}.sock`);
  const args = ['serve', '--socket', socket, '--state', options.state, '--initiator', options.initiator, '--paths', String(options.paths ?? 2)];
  const daemon = await launchDaemon(MPATH_PR, [...args, '--log-level', options.logLevel ?? 'debug', ...(options.args ?? [])], { readyTimeoutMs: options.readyTimeoutMs });
  return { ...daemon, socket };
}

export interface ProgramRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout and stderr as they came. */
  readonly output: string;
}

/** Runs a Node script (or with `program`, a program) that ends by itself: a CLI command, a start that fails. */
export function runToExit(
  command: string,
  args: readonly string[],
  options: Pick<LaunchOptions, 'program' | 'env' | 'uid' | 'gid'> & { timeoutMs?: number } = {},
): Promise<ProgramRun> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const [file, argv] = options.program ? [command, [...args]] : [process.execPath, [command, ...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env }, uid: options.uid, gid: options.gid });
    let stdout = '';
    let stderr = '';
    let output = '';
    child.stdout!.on('data', (chunk) => ((stdout += chunk), (output += chunk)));
    child.stderr!.on('data', (chunk) => ((stderr += chunk), (output += chunk)));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${path.basename(command)} ${args.join(' ')} did not exit within ${timeoutMs} ms: ${output}`));
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, output });
    });
  });
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface DaemonSuite {
  /** This test's directory. */
  readonly dir: string;
  /** Kills `daemon` (SIGKILL) after this test, whatever the test did. */
  add<T extends DaemonProcess>(daemon: T): T;
}

/**
 * For a describe() whose tests start daemons: each test gets a fresh directory (with `mode`,
 * e.g. 0o711 so another uid can reach a socket in it); after each test its daemons are
 * killed and the directory removed. Call inside describe().
 */
export function daemonSuite(prefix: string, options: { mode?: number } = {}): DaemonSuite {
  let dir: string | undefined;
  const daemons: DaemonProcess[] = [];
  beforeEach(() => {
    dir = tempDir(prefix);
    if (options.mode !== undefined) fs.chmodSync(dir, options.mode);
  });
  afterEach(async () => {
    for (const daemon of daemons.splice(0)) await daemon.stop('SIGKILL');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });
  return {
    get dir() {
      if (!dir) throw new Error('daemonSuite: dir is only there while a test runs');
      return dir;
    },
    add(daemon) {
      daemons.push(daemon);
      return daemon;
    },
  };
}

/** Fails the suite, rather than skipping it, unless this process is root; `why` says what needs root. Call inside describe(). */
export function requireRoot(why: string): void {
  before(() => {
    if (process.getuid?.() !== 0) throw new Error(`${why}: run them as root`);
  });
}
