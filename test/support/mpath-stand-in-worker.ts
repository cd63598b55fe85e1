// The child process of MpathStandIn (mpath-stand-in.ts): speaks the worker protocol of
// src/backends/mpath/mpath-worker-protocol.ts and does what the test's script says.

import * as fs from 'fs';
import type { WorkerMessage, WorkerRequest } from '../../src/backends/mpath/mpath-worker-protocol';
import { STAND_IN_ENV, type StandInPrOut, type StandInScript } from './mpath-stand-in';

const send = (message: WorkerMessage) => process.send!(message);

function record(request: WorkerRequest): void {
  const line = JSON.stringify(request, (_key, value: unknown) => (typeof value === 'bigint' ? `n${value.toString(16)}` : value));
  fs.appendFileSync(process.env[STAND_IN_ENV.received]!, `${line}\n`);
}

function prOutBehaviour(request: WorkerRequest): StandInPrOut {
  const script = JSON.parse(fs.readFileSync(process.env[STAND_IN_ENV.script]!, 'utf8')) as StandInScript;
  const onMap = request.target.path === undefined ? undefined : script.prOutOn?.[request.target.path];
  return onMap ?? script.prOut ?? { rc: 0 };
}

function readKeysWithOneKey(): Uint8Array {
  const wire = Buffer.alloc(16);
  wire.writeUInt32BE(7, 0); // PRGENERATION
  wire.writeUInt32BE(8, 4); // ADDITIONAL LENGTH: one key
  wire.writeBigUInt64BE(0xabcn, 8);
  return new Uint8Array(wire);
}

process.on('disconnect', () => process.exit(0));
process.on('message', (request: WorkerRequest) => {
  record(request);
  if (request.kind === 'in') {
    send({ kind: 'reply', id: request.id, rc: 0, wire: readKeysWithOneKey(), elapsedMs: 1 });
    return;
  }
  const behaviour = prOutBehaviour(request);
  if (behaviour === 'exit') {
    process.stderr.write('dm_prereq failed\n');
    process.exit(1);
  }
  if (behaviour === 'hang') return;
  if (behaviour === 'error') send({ kind: 'error', id: request.id, message: 'no block device node' });
  else send({ kind: 'reply', id: request.id, rc: behaviour.rc, elapsedMs: 1 });
});
send({ kind: 'ready', ok: true, abi: 'stand-in' });
