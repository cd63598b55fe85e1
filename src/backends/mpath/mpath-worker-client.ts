// Runs the libmpathpersist child process (mpath-worker.ts) for the mpath backend: starts it
// on first use, sends it one request at a time in arrival order, pipes its stderr into the
// logger at debug, and survives it dying. A child that exits (libmpathpersist's exit(1)),
// is killed, or overruns the call deadline turns the command in flight into a `died`
// outcome; the next command starts a fresh child. `call` never rejects.

import { fork, type ChildProcess } from 'child_process';
import * as path from 'path';
import type { Logger } from 'pino';
import type { WorkerMessage, WorkerPrinRequest, WorkerProutRequest, WorkerReady } from './mpath-worker-protocol';

export type WorkerLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
export type WorkerCall = WithoutId<WorkerPrinRequest | WorkerProutRequest>;

export type WorkerOutcome =
  /** The library ran and returned `rc`. */
  | { readonly kind: 'reply'; readonly rc: number; readonly wire?: Uint8Array; readonly refused?: string; readonly elapsedMs: number }
  /** The worker did not call the library (map node not found, bad request). */
  | { readonly kind: 'error'; readonly message: string }
  /** The worker died or was killed while the command was in flight; it may or may not have reached the device. */
  | { readonly kind: 'died'; readonly reason: string }
  /** No worker could be started (library missing, init failed, fork failed). */
  | { readonly kind: 'unavailable'; readonly reason: string };

export interface MpathWorkerClientOptions {
  /** The worker script; tests substitute stand-ins. Default: mpath-worker.js next to this file. */
  readonly workerPath?: string;
  readonly logger?: WorkerLogger;
  /**
   * How long one library call may take before the child is killed. The library's own SCSI
   * timeout is 2 s with up to 5 retries per path, plus a 4 s multipathd exchange, so the
   * default leaves room for a slow but working map.
   */
  readonly callTimeoutMs?: number;
  /** How long start-up (node boot, library load, init) may take. */
  readonly startTimeoutMs?: number;
  /** After a failed start, later calls answer `unavailable` at once for this long instead of forking again. */
  readonly restartBackoffMs?: number;
  /** Extra environment for the child (merged over process.env). */
  readonly env?: NodeJS.ProcessEnv;
}

interface Running {
  readonly child: ChildProcess;
  readonly ready: WorkerReady;
  /** Resolves when the child has exited, with a description. */
  readonly exited: Promise<string>;
}

const STDERR_TAIL_LINES = 20;

/** Logged at debug each time a child is forked, with the count of starts so far. */
export const WORKER_STARTING_MESSAGE = 'starting the libmpathpersist worker';

export class MpathWorkerClient {
  private readonly workerPath: string;
  private readonly logger?: WorkerLogger;
  private readonly callTimeoutMs: number;
  private readonly startTimeoutMs: number;
  private readonly restartBackoffMs: number;
  private tail: Promise<unknown> = Promise.resolve();
  private running: Running | undefined;
  private failedStart: { at: number; reason: string } | undefined;
  private nextId = 1;
  private closed = false;
  private readonly stderrTail: string[] = [];
  /** Children started so far (the first start counts). */
  starts = 0;
  /** Children that died or were killed while a command was in flight. */
  deathsInFlight = 0;

  constructor(options: MpathWorkerClientOptions = {}) {
    this.workerPath = options.workerPath ?? path.join(__dirname, 'mpath-worker.js');
    this.logger = options.logger;
    this.callTimeoutMs = options.callTimeoutMs ?? 120_000;
    this.startTimeoutMs = options.startTimeoutMs ?? 30_000;
    this.restartBackoffMs = options.restartBackoffMs ?? 1_000;
    this.env = options.env;
  }
  private readonly env?: NodeJS.ProcessEnv;

  /** The pid of the current child, if one is running. */
  get pid(): number | undefined {
    return this.running?.child.pid;
  }

  /** Starts the child if needed and reports what it said at start-up; for logs and `doctor`. */
  probe(): Promise<WorkerReady> {
    return this.enqueue(async () => {
      const started = await this.ensureStarted();
      return 'ready' in started ? started.ready : { kind: 'ready', ok: false, reason: started.reason };
    });
  }

  /** Runs one library call. Calls run one at a time, in the order they were made. Never rejects. */
  call(request: WorkerCall): Promise<WorkerOutcome> {
    if (this.closed) return Promise.resolve({ kind: 'unavailable', reason: 'the mpath backend is closed' });
    return this.enqueue(() => this.runOne(request));
  }

  /** Lets queued calls finish, then stops the child. */
  async close(): Promise<void> {
    this.closed = true;
    await this.tail.catch(() => undefined);
    const running = this.running;
    this.running = undefined;
    if (!running) return;
    running.child.disconnect?.();
    const timer = setTimeout(() => running.child.kill('SIGKILL'), 2_000);
    await running.exited;
    clearTimeout(timer);
  }

  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async runOne(request: WorkerCall): Promise<WorkerOutcome> {
    const started = await this.ensureStarted();
    if (!('ready' in started)) return { kind: 'unavailable', reason: started.reason };
    const { child, exited } = started;
    const id = this.nextId++;
    return new Promise<WorkerOutcome>((resolve) => {
      let settled = false;
      const finish = (outcome: WorkerOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.off('message', onMessage);
        resolve(outcome);
      };
      const onMessage = (message: WorkerMessage) => {
        if (message.kind === 'ready' || message.id !== id) return;
        if (message.kind === 'reply') finish({ kind: 'reply', rc: message.rc, wire: message.wire, refused: message.refused, elapsedMs: message.elapsedMs });
        else finish({ kind: 'error', message: message.message });
      };
      const timer = setTimeout(() => {
        this.logger?.error({ pid: child.pid, timeoutMs: this.callTimeoutMs }, 'libmpathpersist call overran its deadline; killing the worker');
        child.kill('SIGKILL');
      }, this.callTimeoutMs);
      child.on('message', onMessage);
      void exited.then((how) => {
        if (settled) return;
        this.deathsInFlight++;
        const stderr = this.stderrTail.slice(-3).join(' | ');
        finish({ kind: 'died', reason: `the libmpathpersist worker ${how} during the command${stderr ? ` (last stderr: ${stderr})` : ''}` });
      });
      try {
        child.send({ ...request, id });
      } catch (err) {
        child.kill('SIGKILL');
        finish({ kind: 'died', reason: `could not send to the worker: ${(err as Error).message}` });
      }
    });
  }

  private async ensureStarted(): Promise<Running | { reason: string }> {
    if (this.running && this.running.child.exitCode === null && this.running.child.signalCode === null && this.running.child.connected) {
      return this.running;
    }
    this.running = undefined;
    if (this.failedStart && Date.now() - this.failedStart.at < this.restartBackoffMs) return { reason: this.failedStart.reason };
    const outcome = await this.start();
    if ('ready' in outcome) {
      this.failedStart = undefined;
      this.running = outcome;
    } else {
      this.failedStart = { at: Date.now(), reason: outcome.reason };
      this.logger?.error({ reason: outcome.reason }, 'libmpathpersist worker unavailable');
    }
    return outcome;
  }

  private start(): Promise<Running | { reason: string }> {
    this.starts++;
    this.logger?.debug({ workerPath: this.workerPath, start: this.starts }, WORKER_STARTING_MESSAGE);
    let child: ChildProcess;
    try {
      child = fork(this.workerPath, [], {
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        serialization: 'advanced',
        execArgv: [],
        env: this.env ? { ...process.env, ...this.env } : process.env,
      });
    } catch (err) {
      return Promise.resolve({ reason: `could not start the libmpathpersist worker: ${(err as Error).message}` });
    }
    const pid = child.pid;
    this.pipeLines(child, 'stderr');
    this.pipeLines(child, 'stdout');
    const exited = new Promise<string>((resolve) => {
      // 'close' is not dependable with an IPC channel the parent disconnected, so wait for
      // 'exit' and then briefly for stderr to drain: its last lines say why the child died.
      child.once('exit', (code, signal) => {
        const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
        this.logger?.debug({ pid, code, signal }, `libmpathpersist worker ${how}`);
        const stderr = child.stderr;
        if (!stderr || stderr.destroyed || stderr.readableEnded) {
          resolve(how);
          return;
        }
        const done = () => {
          clearTimeout(timer);
          resolve(how);
        };
        const timer = setTimeout(done, 200);
        stderr.once('close', done);
      });
      child.once('error', (err) => {
        // A failed spawn emits 'error' and never 'exit'.
        if (child.pid === undefined) resolve(`could not be spawned (${err.message})`);
      });
    });
    return new Promise((resolve) => {
      let done = false;
      const finish = (value: Running | { reason: string }) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        child.off('message', onMessage);
        if (!('ready' in value)) {
          child.kill('SIGKILL');
        }
        resolve(value);
      };
      const onMessage = (message: WorkerMessage) => {
        if (message.kind !== 'ready') return;
        if (!message.ok) {
          finish({ reason: message.reason ?? 'the libmpathpersist worker could not initialise the library' });
          return;
        }
        this.logger?.info(
          { pid, abi: message.abi, library: message.libraryPath, openFilesLimit: message.openFilesLimit },
          'libmpathpersist worker ready',
        );
        finish({ child, ready: message, exited });
      };
      const timer = setTimeout(() => finish({ reason: `the libmpathpersist worker did not start within ${this.startTimeoutMs} ms` }), this.startTimeoutMs);
      child.on('message', onMessage);
      void exited.then((how) => {
        const stderr = this.stderrTail.slice(-3).join(' | ');
        finish({ reason: `the libmpathpersist worker ${how} before it was ready${stderr ? ` (last stderr: ${stderr})` : ''}` });
      });
    });
  }

  private pipeLines(child: ChildProcess, stream: 'stdout' | 'stderr'): void {
    const source = child[stream];
    if (!source) return;
    let partial = '';
    source.setEncoding('utf8');
    source.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) this.logLine(child.pid, stream, line);
    });
    source.on('end', () => {
      if (partial) this.logLine(child.pid, stream, partial);
      partial = '';
    });
  }

  private logLine(pid: number | undefined, stream: string, line: string): void {
    if (!line.trim()) return;
    this.stderrTail.push(line.trim());
    if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.shift();
    this.logger?.debug({ pid, stream }, `libmpathpersist: ${line}`);
  }
}
