// The child process that hosts libmpathpersist for the mpath backend. It exists because the
// library can exit(1) the whole process (dm_prereq failure), writes its log to stderr and
// raises RLIMIT_NOFILE in libmpathpersist_init(); none of that may touch the daemon.
//
// Started with child_process.fork(…, { serialization: 'advanced' }) by
// mpath-worker-client.ts. It loads and initialises the library once, reports `ready`, then
// answers one request at a time (the parent never sends the next before the reply; the
// library is not thread-safe and mutates its arguments, so each call gets fresh buffers).
// For each request it opens the map itself from the dev_t (the client's fd cannot cross
// the IPC channel), verifying the node's st_rdev, and closes it after the call.

import * as fs from 'fs';
import { loadLibmpathpersist, type MpathPersistLib } from '../../../ffi/libmpathpersist';
import { findMapNode } from '../../device/nodes';
import type { WorkerMessage, WorkerRequest } from './mpath-worker-protocol';

function send(message: WorkerMessage): void {
  process.send!(message);
}

function openFilesLimit(): string | undefined {
  try {
    const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    return line?.replace(/^Max open files\s+/, '').trim().replace(/\s+/g, ' ');
  } catch {
    return undefined;
  }
}

function handle(lib: MpathPersistLib, request: WorkerRequest): WorkerMessage {
  let node: string;
  let fd: number;
  try {
    node = findMapNode(request.target, request.target.path);
    // The library only fstat()s this fd to find the map; it opens each path itself.
    fd = fs.openSync(node, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    return { kind: 'error', id: request.id, message: (err as Error).message };
  }
  const started = process.hrtime.bigint();
  try {
    if (request.kind === 'in') {
      const result = lib.reserveIn({
        fd,
        serviceAction: request.serviceAction,
        allocationLength: request.allocationLength,
        noisy: (request.verbose ?? 0) >= 3,
        verbose: request.verbose,
      });
      const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
      return { kind: 'reply', id: request.id, rc: result.rc, wire: result.data?.wire, refused: result.refused, elapsedMs };
    }
    const result = lib.reserveOut({
      fd,
      serviceAction: request.serviceAction,
      scope: request.scope,
      type: request.type,
      params: request.params,
      noisy: (request.verbose ?? 0) >= 3,
      verbose: request.verbose,
    });
    const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
    return { kind: 'reply', id: request.id, rc: result.rc, elapsedMs };
  } catch (err) {
    return { kind: 'error', id: request.id, message: `libmpathpersist call failed: ${(err as Error).message}` };
  } finally {
    fs.closeSync(fd);
  }
}

function main(): void {
  if (!process.send) {
    process.stderr.write('mpath-worker: must be started by the mpath backend (child_process.fork)\n');
    process.exit(2);
  }
  // The parent going away ends this process; nothing here outlives the daemon.
  process.on('disconnect', () => process.exit(0));
  const loaded = loadLibmpathpersist();
  if (!loaded.ok) {
    send({ kind: 'ready', ok: false, reason: loaded.reason });
    return;
  }
  const rc = loaded.lib.init();
  if (rc !== 0) {
    send({ kind: 'ready', ok: false, reason: `libmpathpersist_init() returned ${rc} (could not read /etc/multipath.conf or set up udev)` });
    return;
  }
  const lib = loaded.lib;
  process.on('message', (message: WorkerRequest) => send(handle(lib, message)));
  send({ kind: 'ready', ok: true, abi: lib.abi, libraryPath: lib.path, openFilesLimit: openFilesLimit() });
}

main();
