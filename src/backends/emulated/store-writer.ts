// The daemon-side handle of the store's writer thread (store-worker.ts): posts commands,
// resolves each with its reply once its batch is committed. If the thread dies, the
// commands it held are answered with an error and the next command starts a new thread.

import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { CommandReply, CommandRequest } from './command-runner';
import type { StoreWorkerData, StoreWorkerReply } from './store-worker';

export class StoreWriter {
  private worker: Worker | undefined;
  private nextId = 1;
  /** The current thread has opened the store (or failed to). */
  ready!: Promise<void>;
  private readonly pending = new Map<number, { resolve: (reply: CommandReply) => void; reject: (error: Error) => void }>();

  constructor(private readonly data: StoreWorkerData) {
    // Started now, not on the first command: the thread's own fds (the database, its WAL)
    // then belong to the daemon's steady state, and a broken state file shows at startup.
    this.start();
  }

  run(request: CommandRequest): Promise<CommandReply> {
    const worker = this.worker ?? this.start();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, lu: request.lu, command: request.command });
    });
  }

  private start(): Worker {
    const worker = new Worker(path.join(__dirname, 'store-worker.js'), { workerData: this.data });
    this.ready = new Promise((resolve, reject) => {
      worker.once('message', (message: StoreWorkerReply | 'ready') => (message === 'ready' ? resolve() : undefined));
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the emulated store's writer thread exited with code ${code} before it was ready`)));
    });
    this.ready.catch(() => undefined); // reported to whoever awaits ready(), or per command
    worker.on('message', (message: StoreWorkerReply | 'ready') => {
      if (message === 'ready') return;
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if ('error' in message) {
        waiter.reject(new Error(message.error));
        return;
      }
      // Structured clone turns Buffers into Uint8Arrays; the contract promises Buffers.
      const { result } = message.reply;
      waiter.resolve({ ...message.reply, result: { status: result.status, sense: Buffer.from(result.sense), dataIn: Buffer.from(result.dataIn) } });
    });
    const failAll = (error: Error) => {
      if (this.worker === worker) this.worker = undefined;
      for (const [id, waiter] of this.pending) {
        this.pending.delete(id);
        waiter.reject(error);
      }
    };
    worker.on('error', failAll);
    worker.on('exit', (code) => failAll(new Error(`the emulated store's writer thread exited with code ${code}`)));
    this.worker = worker;
    return worker;
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    if (worker) await worker.terminate();
  }
}
