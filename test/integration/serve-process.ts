// Starts real `mpath-pr serve` processes for end-to-end tests, and talks to them the way
// QEMU does (PrHelperClient: handshake, CDB with the fd attached by SCM_RIGHTS).

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PrHelperClient } from '../../src/protocol/client';
import type { PrExecutor } from '../../src/backends/pr-commands';

export const CLI = path.resolve(__dirname, '../../src/cli/mpath-pr.js');

export interface ServeProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly socket: string;
  readonly logs: () => string;
  /** SIGTERM, then wait for exit; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** How many fds the daemon has open right now. */
  openFds(): number;
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function startServe(options: {
  dir: string;
  state: string;
  initiator: string;
  paths?: number;
  name?: string;
  /** More `serve` flags (e.g. --dbus-address). */
  args?: readonly string[];
  readyTimeoutMs?: number;
}): Promise<ServeProcess> {
  const socket = path.join(options.dir, `${options.name ?? options.initiator}.sock`);
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--socket', socket, '--state', options.state, '--initiator', options.initiator, '--paths', String(options.paths ?? 2), '--log-level', 'debug', ...(options.args ?? [])],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + (options.readyTimeoutMs ?? 15_000);
  while (!output.includes('mpath-pr ready')) {
    if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}: ${output}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`serve did not become ready: ${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    child,
    pid: child.pid!,
    socket,
    logs: () => output,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
    openFds: () => fs.readdirSync(`/proc/${child.pid}/fd`).length,
  };
}

/** A connected QEMU-like client plus an executor for one device file. */
export async function connectClient(socket: string): Promise<PrHelperClient> {
  const client = new PrHelperClient();
  await client.connect(socket);
  return client;
}

export function executorFor(client: PrHelperClient, fd: number): PrExecutor {
  return async (cdb, dataOut) => {
    const reply = await client.execute(fd, cdb, dataOut);
    return { status: reply.status, sense: reply.sense, dataIn: reply.data };
  };
}

/** Waits until `check` holds, polling; for conditions another process makes true. */
export async function eventually(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export interface ProgramRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a node script to completion and returns its exit code and output, whatever the code. */
export async function runNodeScript(script: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<ProgramRun> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [script, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
