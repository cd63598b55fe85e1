// The emulated store's writer thread. A durable commit waits for fsync; on the daemon's
// event loop that would stall every client and device for the length of the fsync. Here
// it only delays the commands that wait for that commit, and every command that arrives
// meanwhile is committed together in the next batch with one fsync.

import { parentPort, workerData } from 'node:worker_threads';
import { CommandRunner, type CommandReply } from './command-runner';
import { EmulatedStore } from './store';
import type { TransportId } from '../../scsi/transport-id';
import type { PrCommand } from '../../scsi/pr-command';

export interface StoreWorkerData {
  readonly statePath: string;
  readonly durable: boolean;
  readonly initiator: TransportId;
  readonly unitAttentions: boolean;
  readonly maxRegistrations?: number;
}

export interface StoreWorkerRequest {
  readonly id: number;
  readonly lu: string;
  readonly command: PrCommand;
}

export type StoreWorkerReply = { readonly id: number; readonly reply: CommandReply } | { readonly id: number; readonly error: string };

if (parentPort) {
  const data = workerData as StoreWorkerData;
  const store = new EmulatedStore(data.statePath, { durable: data.durable });
  const runner = new CommandRunner(store, data);
  const port = parentPort;
  let queue: StoreWorkerRequest[] = [];
  let scheduled = false;

  const flush = () => {
    scheduled = false;
    const batch = queue;
    queue = [];
    let outcomes: (CommandReply | Error)[];
    try {
      outcomes = runner.runBatch(batch);
    } catch (error) {
      // The batch itself failed (SQLITE_BUSY past the timeout, disk full): nothing of it
      // was committed, and every command in it is answered as failed.
      outcomes = batch.map(() => (error instanceof Error ? error : new Error(String(error))));
    }
    batch.forEach((request, i) => {
      const outcome = outcomes[i];
      port.postMessage(outcome instanceof Error ? { id: request.id, error: outcome.message } : { id: request.id, reply: outcome });
    });
  };

  port.postMessage('ready');
  port.on('message', (request: StoreWorkerRequest) => {
    queue.push(request);
    if (!scheduled) {
      scheduled = true;
      // Let every message already delivered join this batch before committing.
      setImmediate(flush);
    }
  });
}
