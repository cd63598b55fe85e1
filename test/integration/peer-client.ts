// A QEMU-like client run as a separate process (the tests start it under another uid),
// printing one JSON line with what happened. Not a test file itself.
//
//   node peer-client.js <socket> [<lu file>]
//
// It reads what the server sends on accept: the 4-byte features word, or EOF at once when
// the connection is refused. With a file and a features word it also registers a key
// and reads the keys back.

import * as libc from '../../ffi/libc';
import * as pr from '../../src/backends/pr-commands';
import { FdConnection } from '../../src/protocol/fd-connection';
import { withClient } from '../support/client';

export interface PeerOutcome {
  pid: number;
  uid: number;
  /** Bytes received before EOF (refused) or the features word (accepted). */
  firstBytes: number[];
  eof: boolean;
  keys?: string[];
  error?: string;
}

async function probe(socket: string): Promise<Pick<PeerOutcome, 'firstBytes' | 'eof'>> {
  const fd = libc.unixStreamSocket();
  const connection = new FdConnection(fd);
  try {
    if (libc.connect(fd, socket) === 'in-progress') await connection.waitWritable();
    const bytes: number[] = [];
    for (;;) {
      const chunk = await connection.read(4 - bytes.length);
      if (chunk.bytes.length === 0) return { firstBytes: bytes, eof: true };
      bytes.push(...chunk.bytes);
      if (bytes.length >= 4) return { firstBytes: bytes, eof: false };
    }
  } finally {
    connection.close();
  }
}

async function main(): Promise<void> {
  const [socket, lu] = process.argv.slice(2);
  const outcome: PeerOutcome = { pid: process.pid, uid: process.getuid!(), firstBytes: [], eof: false };
  try {
    Object.assign(outcome, await probe(socket));
    if (!outcome.eof && lu) {
      await withClient(socket, lu, async (run) => {
        await pr.register(run, 0x65534n);
        outcome.keys = (await pr.readKeys(run)).keys.map((k) => k.toString(16));
      });
    }
  } catch (error) {
    outcome.error = (error as Error).message;
  }
  process.stdout.write(JSON.stringify(outcome) + '\n');
}

void main();
