// Real daemon processes with any flags, for the privilege, access-control and sd_notify
// tests: spawn, wait for the ready line, read /proc, stop.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseProcStatus, type ProcessCredentials } from '../../src/daemon/privilege-plan';

export const MPATH_PR = path.resolve(__dirname, '../../src/cli/mpath-pr.js');
export const MPATH_PR_HELPER = path.resolve(__dirname, '../../src/cli/mpath-pr-helper.js');

export interface DaemonProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  logs(): string;
  /** Log lines (pino JSON) that parse, in order. */
  records(): Record<string, unknown>[];
  /** Waits until some log line matches. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function spawnDaemon(
  script: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; ready?: RegExp; spawn?: SpawnOptions; /** false: `script` is the program itself, not a Node script. */ node?: boolean } = {},
): Promise<DaemonProcess> {
  const [program, argv] = options.node === false ? [script, args] : [process.execPath, [script, ...args]];
  const child = spawn(program, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env },
    ...options.spawn,
  });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  // 'close': the exit code once stdout and stderr are drained too, so logs() is complete.
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const waitForLog = async (pattern: RegExp, timeoutMs = 15_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(output)) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`daemon exited (${child.exitCode ?? child.signalCode}) before ${pattern}: ${output}`);
      if (Date.now() > deadline) throw new Error(`no log line matching ${pattern}: ${output}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  try {
    await waitForLog(options.ready ?? /mpath-pr ready/);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return {
    child,
    pid: child.pid!,
    logs: () => output,
    records: () =>
      output
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => {
          try {
            return JSON.parse(line) as Record<string, unknown>;
          } catch {
            return {};
          }
        }),
    waitForLog,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs a command that is expected to end by itself; returns its exit code and output. */
export function runToExit(script: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 20_000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let output = '';
    child.stdout!.on('data', (chunk) => (output += chunk));
    child.stderr!.on('data', (chunk) => (output += chunk));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`did not exit within ${timeoutMs} ms: ${output}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** The credentials of every thread of a process (capabilities and no_new_privs are per thread). */
export function threadCredentials(pid: number): { tid: number; credentials: ProcessCredentials }[] {
  return fs
    .readdirSync(`/proc/${pid}/task`)
    .map((tid) => ({ tid: Number(tid), credentials: parseProcStatus(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8')) }));
}
