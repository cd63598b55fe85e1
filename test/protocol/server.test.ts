// PrHelperServer over real AF_UNIX sockets with real SCM_RIGHTS fds. `execute` is a test
// double standing in for the backend (the real backends are wired in by the daemon); it
// records what the server hands it and answers what each test tells it to.

import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import * as libc from '../../ffi/libc';
import type { PeerIdentity } from '../../src/backends/backend';
import { Status } from '../../src/scsi/constants';
import { ScsiResult, Sense, checkCondition, good, reservationConflict, senseMatches } from '../../src/scsi/sense';
import { PrHelperClient } from '../../src/protocol/client';
import { ConnectionClosedError } from '../../src/protocol/fd-connection';
import { ConnectionClosedEvent, PrHelperExecuteRequest, PrHelperServer, PrHelperServerOptions } from '../../src/protocol/server';
import { SocketActivationError, socketActivationFd } from '../../src/protocol/socket-activation';
import { RawClient, pipeEof } from './helpers';
import { holdersOf, openFdCount } from '../support/proc';
import { deferred, rejectionOf } from '../support/wait';

const wire = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../fixtures/protocol/qemu-wire.json'), 'utf8')) as {
  replies: Array<{ name: string; hex: string }>;
};
const wireReply = (name: string): Buffer => Buffer.from(wire.replies.find((reply) => reply.name === name)!.hex, 'hex');

const FEATURES = Buffer.alloc(4);
/** Same bytes as the fixture reply 'GOOD, READ KEYS with one key'. */
const READ_KEYS_DATA = Buffer.from('0000000100000008123456789abcdef0', 'hex');

function cdb(options: { opcode?: number; action?: number; type?: number; length?: number } = {}): Buffer {
  const bytes = Buffer.alloc(16);
  bytes[0] = options.opcode ?? 0x5e;
  bytes[1] = options.action ?? 0;
  bytes[2] = options.type ?? 0;
  bytes.writeUInt16BE(options.length ?? 0, 7);
  return bytes;
}
const readKeys = (length = 8192): Buffer => cdb({ opcode: 0x5e, action: 0, length });
const register = (): Buffer => cdb({ opcode: 0x5f, action: 0, length: 24 });
function parameterList(key: bigint, serviceActionKey: bigint): Buffer {
  const list = Buffer.alloc(24);
  list.writeBigUInt64BE(key, 0);
  list.writeBigUInt64BE(serviceActionKey, 8);
  return list;
}

/** A command execute holds until the test answers it: `started` once the server handed it over. */
function heldCommand(): { started: Promise<void>; execute(): Promise<ScsiResult>; answer(result: ScsiResult): void } {
  const started = deferred<void>();
  const answer = deferred<ScsiResult>();
  return {
    started: started.promise,
    execute() {
      started.resolve();
      return answer.promise;
    },
    answer: answer.resolve,
  };
}

interface Harness {
  dir: string;
  socketPath: string;
  server: PrHelperServer;
  calls: PrHelperExecuteRequest[];
  logs: Array<Record<string, unknown>>;
  closedConnections: ConnectionClosedEvent[];
  /** What execute does; tests replace it. */
  respond: (request: PrHelperExecuteRequest) => Promise<ScsiResult>;
  /** Resolves with the next connectionClosed event. */
  nextClose(): Promise<ConnectionClosedEvent>;
}

describe('PrHelperServer', function () {
  let h: Harness;
  let fdsBefore: number;
  const cleanups: Array<() => void> = [];

  function track<T extends { close(): void }>(thing: T): T {
    cleanups.push(() => thing.close());
    return thing;
  }
  function trackFd(fd: number): number {
    cleanups.push(() => libc.close(fd));
    return fd;
  }
  /** A scratch "device": a regular file opened read-write (or read-only). */
  function deviceFile(name: string, flags: 'r+' | 'r' = 'r+'): { fd: number; path: string } {
    const file = path.join(h.dir, name);
    if (!fs.existsSync(file)) fs.writeFileSync(file, '');
    return { fd: trackFd(fs.openSync(file, flags)), path: fs.realpathSync(file) };
  }
  function pipeDevice(): { readEnd: number; writeEnd: number } {
    const [readEnd, writeEnd] = libc.pipe();
    trackFd(readEnd);
    return { readEnd, writeEnd };
  }

  function startServer(options: Partial<PrHelperServerOptions> = {}, listen: { mode?: number } = {}): Harness {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpr-server-'));
    const logs: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
    const harness = {
      dir,
      socketPath: path.join(dir, 'pr-helper.sock'),
      calls: [] as PrHelperExecuteRequest[],
      logs,
      closedConnections: [] as ConnectionClosedEvent[],
      respond: async (): Promise<ScsiResult> => good(),
    } as Partial<Harness> as Harness;
    harness.server = new PrHelperServer({
      logger,
      execute: (request) => {
        harness.calls.push(request);
        return harness.respond(request);
      },
      ...options,
    });
    const waiting: Array<(event: ConnectionClosedEvent) => void> = [];
    harness.server.on('connectionClosed', (event) => {
      harness.closedConnections.push(event);
      waiting.shift()?.(event);
    });
    harness.nextClose = () => new Promise((resolve) => waiting.push(resolve));
    harness.server.listen({ path: harness.socketPath, mode: listen.mode });
    return harness;
  }

  beforeEach(() => {
    fdsBefore = openFdCount();
    h = startServer();
  });

  afterEach(async () => {
    while (cleanups.length > 0) cleanups.pop()!();
    await h.server.close();
    fs.rmSync(h.dir, { recursive: true, force: true });
    expect(openFdCount(), 'fds leaked by the scenario').to.equal(fdsBefore);
  });

  async function rawClient(): Promise<RawClient> {
    const client = track(await RawClient.connect(h.socketPath));
    expect(await client.readExactly(4)).to.deep.equal(FEATURES);
    await client.send(FEATURES);
    return client;
  }

  async function client(): Promise<PrHelperClient> {
    const connected = new PrHelperClient();
    await connected.connect(h.socketPath);
    return track(connected);
  }

  describe('wire format', () => {
    it('sends the features word 0 first, and nothing more until asked', async () => {
      const raw = track(await RawClient.connect(h.socketPath));
      expect(await raw.readExactly(4)).to.deep.equal(FEATURES);
      const device = deviceFile('disk');
      h.respond = async () => good(READ_KEYS_DATA);
      await raw.send(FEATURES);
      await raw.send(readKeys(), [device.fd]);
      // If the server had sent anything besides features, the reply would not start here.
      expect(await raw.readExactly(104 + 16)).to.deep.equal(wireReply('GOOD, READ KEYS with one key'));
    });

    it('accepts the fd on a later piece of the CDB than the first', async () => {
      const raw = await rawClient();
      const device = deviceFile('disk');
      h.respond = async () => good(READ_KEYS_DATA);
      await raw.send(readKeys().subarray(0, 6));
      await raw.send(readKeys().subarray(6), [device.fd]);
      expect(await raw.readExactly(120)).to.deep.equal(wireReply('GOOD, READ KEYS with one key'));
      expect(h.calls[0].handle.path).to.equal(device.path);
    });

    it('replies byte for byte as qemu-pr-helper lays them out', async () => {
      const raw = await rawClient();
      const device = deviceFile('disk');
      h.respond = async () => checkCondition(Sense.INVALID_OPCODE);
      await raw.send(register(), [device.fd]);
      await raw.send(parameterList(0n, 0x123456789abcdef0n));
      expect(await raw.readExactly(104)).to.deep.equal(wireReply('CHECK CONDITION INVALID OPCODE 05/20/00'));
      h.respond = async () => reservationConflict();
      await raw.send(register(), [device.fd]);
      await raw.send(parameterList(0n, 1n));
      expect(await raw.readExactly(104)).to.deep.equal(wireReply('RESERVATION CONFLICT'));
      h.respond = async () => good();
      await raw.send(register(), [device.fd]);
      await raw.send(parameterList(0n, 1n));
      expect(await raw.readExactly(104)).to.deep.equal(wireReply('GOOD, no data (PR OUT)'));
    });

    it('gives execute the device handle, CDB, parameter list and peer', async () => {
      const c = await client();
      const device = deviceFile('disk');
      const params = parameterList(0xaan, 0xbbn);
      const reply = await c.execute(device.fd, register().subarray(0, 10), params);
      expect(reply.status).to.equal(Status.GOOD);
      expect(h.calls).to.have.length(1);
      const call = h.calls[0];
      expect(Buffer.from(call.command.cdb)).to.deep.equal(register().subarray(0, 10));
      expect(call.command.direction === 'out' && Buffer.from(call.command.parameterList)).to.deep.equal(params);
      expect(call.handle.path).to.equal(device.path);
      expect(call.handle.writable).to.equal(true);
      expect(call.handle.description?.rdev).to.equal(undefined);
      expect(call.handle.fd).to.not.equal(device.fd); // the server's own copy
      expect(call.peer).to.deep.equal({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() } satisfies PeerIdentity);
      expect(call.signal.aborted).to.equal(false);
    });

    it('reports rdev for character devices', async () => {
      const c = await client();
      const devNull = trackFd(fs.openSync('/dev/null', 'r+'));
      await c.execute(devNull, readKeys());
      expect(h.calls[0].handle.path).to.equal('/dev/null');
      expect(h.calls[0].handle.description?.rdev).to.deep.equal({ major: 1, minor: 3 });
    });

    it('truncates PR IN data to the allocation length and drops data from PR OUT', async () => {
      const c = await client();
      const device = deviceFile('disk');
      h.respond = async () => good(Buffer.alloc(300, 7));
      expect((await c.execute(device.fd, readKeys(8))).data).to.deep.equal(Buffer.alloc(8, 7));
      expect((await c.execute(device.fd, register(), parameterList(0n, 1n))).data).to.have.length(0);
    });
  });

  describe('per-command answers', () => {
    it('PR OUT on a read-only fd is CHECK CONDITION INVALID OPCODE without calling execute', async () => {
      const raw = await rawClient();
      const device = deviceFile('disk', 'r');
      await raw.send(register(), [device.fd]);
      await raw.send(parameterList(0n, 1n));
      expect(await raw.readExactly(104)).to.deep.equal(wireReply('CHECK CONDITION INVALID OPCODE 05/20/00'));
      expect(h.calls).to.have.length(0);
      expect(holdersOf(device.fd)).to.equal(1); // only ours: the server closed its copy
    });

    it('PR IN on a read-only fd goes to execute', async () => {
      const c = await client();
      const device = deviceFile('disk', 'r');
      expect((await c.execute(device.fd, readKeys())).status).to.equal(Status.GOOD);
      expect(h.calls).to.have.length(1);
      expect(h.calls[0].handle.writable).to.equal(false);
    });

    it('a rejecting execute is answered LUN COMMUNICATION FAILURE, logged at error, and the connection lives on', async () => {
      const raw = await rawClient();
      const device = deviceFile('disk');
      h.respond = async () => {
        throw new Error('backend bug');
      };
      await raw.send(readKeys(), [device.fd]);
      expect(await raw.readExactly(104)).to.deep.equal(wireReply('CHECK CONDITION LUN COMMUNICATION FAILURE 0B/08/00'));
      expect(h.logs.some((line) => line.level === 50 && /execute failed/.test(String(line.msg)))).to.equal(true);
      h.respond = async () => good(READ_KEYS_DATA);
      await raw.send(readKeys(), [device.fd]);
      expect(await raw.readExactly(120)).to.deep.equal(wireReply('GOOD, READ KEYS with one key'));
      expect(h.server.stats.executeErrors).to.equal(1);
      expect(holdersOf(device.fd)).to.equal(1);
    });

    it('a malformed execute result is answered LUN COMMUNICATION FAILURE', async () => {
      const c = await client();
      const device = deviceFile('disk');
      for (const bad of [{ status: 300, sense: Buffer.alloc(0), dataIn: Buffer.alloc(0) }, { status: 0 }, null]) {
        h.respond = async () => bad as unknown as ScsiResult;
        const reply = await c.execute(device.fd, readKeys());
        expect(reply.status).to.equal(Status.CHECK_CONDITION);
        expect(senseMatches(reply.sense, Sense.LUN_COMMUNICATION_FAILURE)).to.equal(true);
      }
    });

    it('logs one info line per PR OUT with peer, device, action, keys, type and outcome', async () => {
      const c = await client();
      const device = deviceFile('disk');
      h.respond = async () => reservationConflict();
      await c.execute(device.fd, cdb({ opcode: 0x5f, action: 0x01, type: 0x03, length: 24 }), parameterList(0x1122334455667788n, 0n));
      const line = h.logs.find((entry) => entry.level === 30 && entry.action === 'RESERVE');
      expect(line).to.deep.include({
        peer: { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() },
        device: device.path,
        key: '1122334455667788',
        serviceActionKey: '0000000000000000',
        type: 'Exclusive Access',
        scope: 0,
        status: 'RESERVATION_CONFLICT',
      });
    });

    it('aborts the signal when the client hangs up during execute, and still closes the fd', async () => {
      const raw = await rawClient();
      const device = pipeDevice();
      const started = deferred<AbortSignal>();
      const finish = deferred<void>();
      h.respond = async (request) => {
        started.resolve(request.signal);
        await new Promise((resolve) => request.signal.addEventListener('abort', resolve, { once: true }));
        finish.resolve();
        return good();
      };
      await raw.send(readKeys(), [device.writeEnd]);
      libc.close(device.writeEnd);
      const signal = await started.promise;
      const closed = h.nextClose();
      raw.close();
      await finish.promise;
      expect(signal.aborted).to.equal(true);
      expect((await closed).reason).to.equal('connection-error');
      await pipeEof(device.readEnd);
    });
  });

  describe('protocol violations close the connection without a reply and close every fd', () => {
    /** Sends `steps`, expects EOF with no reply bytes, and proves every sent fd was closed by the server. */
    async function expectDropped(steps: (raw: RawClient, fds: number[]) => Promise<void>, fdCount: number, violation: string): Promise<void> {
      const raw = track(await RawClient.connect(h.socketPath));
      const pipes = Array.from({ length: fdCount }, () => pipeDevice());
      const closed = h.nextClose();
      await steps(
        raw,
        pipes.map((p) => p.writeEnd),
      );
      for (const p of pipes) libc.close(p.writeEnd);
      expect(await raw.readToEnd(), 'only the features word, no reply').to.deep.equal(FEATURES);
      expect((await closed).reason).to.equal(violation);
      for (const p of pipes) expect(holdersOf(p.readEnd), 'read end only: no write end left open').to.equal(1);
      for (const p of pipes) await pipeEof(p.readEnd);
      expect(h.calls).to.have.length(0);
      expect(h.server.stats.protocolViolations).to.equal(1);
    }

    it('a non-zero features word', () => expectDropped((raw) => raw.send(Buffer.from('00000001', 'hex')), 0, 'unsupported-features'));

    it('an fd sent with the features word', () => expectDropped((raw, [fd]) => raw.send(FEATURES, [fd]), 1, 'unexpected-fd'));

    it('a request without an fd', () =>
      expectDropped(async (raw) => {
        await raw.send(FEATURES);
        await raw.send(readKeys());
      }, 0, 'missing-fd'));

    it('a request with two fds (both closed)', () =>
      expectDropped(async (raw, fds) => {
        await raw.send(FEATURES);
        await raw.send(readKeys(), fds);
      }, 2, 'too-many-fds'));

    it('a second fd on a later piece of the CDB (both closed)', () =>
      expectDropped(async (raw, [first, second]) => {
        await raw.send(FEATURES);
        await raw.send(readKeys().subarray(0, 6), [first]);
        await raw.send(readKeys().subarray(6), [second]);
      }, 2, 'too-many-fds'));

    it('an fd sent with the parameter list (both closed)', () =>
      expectDropped(async (raw, [first, second]) => {
        await raw.send(FEATURES);
        await raw.send(register(), [first]);
        await raw.send(parameterList(0n, 1n), [second]);
      }, 2, 'unexpected-fd'));

    for (const opcode of [0x12, 0x00, 0xff]) {
      it(`opcode 0x${opcode.toString(16)} (fd closed)`, () =>
        expectDropped(async (raw, [fd]) => {
          await raw.send(FEATURES);
          await raw.send(cdb({ opcode }), [fd]);
        }, 1, 'invalid-opcode'));
    }

    it('a transfer length of 8193 (fd closed)', () =>
      expectDropped(async (raw, [fd]) => {
        await raw.send(FEATURES);
        await raw.send(cdb({ opcode: 0x5f, length: 8193 }), [fd]);
      }, 1, 'transfer-too-long'));

    it('more fds than fit the control buffer (the ones received are closed)', () =>
      expectDropped(async (raw, fds) => {
        await raw.send(FEATURES);
        await raw.send(readKeys(), fds);
      }, libc.RECV_MAX_FDS + 2, 'control-truncated'));

    it('a transfer length of exactly 8192 is served', async () => {
      const c = await client();
      const device = deviceFile('disk');
      const params = Buffer.alloc(8192, 0x42);
      const reply = await c.execute(device.fd, cdb({ opcode: 0x5f, action: 0, length: 8192 }), params);
      expect(reply.status).to.equal(Status.GOOD);
      expect(h.calls[0].command.direction === 'out' && Buffer.from(h.calls[0].command.parameterList)).to.deep.equal(params);
    });
  });

  describe('clients that vanish', () => {
    for (const [name, steps] of [
      ['after half a CDB', async (raw: RawClient, fd: number) => raw.send(readKeys().subarray(0, 7), [fd])],
      [
        'after the CDB and half the parameter list',
        async (raw: RawClient, fd: number) => {
          await raw.send(register(), [fd]);
          await raw.send(parameterList(1n, 2n).subarray(0, 11));
        },
      ],
    ] as const) {
      it(`${name}: the fd is closed and other clients are still served`, async () => {
        const other = await client();
        const device = deviceFile('disk');
        const raw = await rawClient();
        const p = pipeDevice();
        const closed = h.nextClose();
        await steps(raw, p.writeEnd);
        libc.close(p.writeEnd);
        raw.close();
        expect((await closed).reason).to.equal('truncated-request');
        expect(holdersOf(p.readEnd)).to.equal(1);
        await pipeEof(p.readEnd);
        expect((await other.execute(device.fd, readKeys())).status).to.equal(Status.GOOD);
        const fresh = await client();
        expect((await fresh.execute(device.fd, readKeys())).status).to.equal(Status.GOOD);
        expect(h.calls).to.have.length(2);
      });
    }

    it('before reading its reply: the server carries on', async () => {
      const raw = await rawClient();
      const device = deviceFile('disk');
      const held = heldCommand();
      h.respond = held.execute;
      await raw.send(readKeys(), [device.fd]);
      await held.started;
      const closed = h.nextClose();
      raw.close();
      held.answer(good(READ_KEYS_DATA));
      expect((await closed).reason).to.equal('connection-error');
      h.respond = async () => good();
      const c = await client();
      expect((await c.execute(device.fd, readKeys())).status).to.equal(Status.GOOD);
      expect(holdersOf(device.fd)).to.equal(1);
    });
  });

  describe('concurrency', () => {
    it('serves 50 concurrent clients doing 20 commands each, losing nothing and keeping each connection in order', async () => {
      const registered = new Map<string, bigint[]>();
      h.respond = async (request) => {
        const keys = registered.get(request.handle.path) ?? [];
        registered.set(request.handle.path, keys);
        if (request.command.direction === 'out') {
          keys.push(Buffer.from(request.command.parameterList).readBigUInt64BE(8));
          return good();
        }
        const data = Buffer.alloc(8 + keys.length * 8);
        data.writeUInt32BE(keys.length * 8, 4);
        keys.forEach((key, i) => data.writeBigUInt64BE(key, 8 + i * 8));
        return good(data);
      };
      const CLIENTS = 50;
      const COMMANDS = 20;
      const results = await Promise.all(
        Array.from({ length: CLIENTS }, async (_, clientIndex) => {
          const c = await client();
          const device = deviceFile(`disk-${clientIndex}`);
          const sent: bigint[] = [];
          for (let i = 0; i < COMMANDS; i++) {
            const key = (BigInt(clientIndex) << 32n) | BigInt(i);
            sent.push(key);
            expect((await c.execute(device.fd, register(), parameterList(0n, key))).status).to.equal(Status.GOOD);
          }
          const reply = await c.execute(device.fd, readKeys());
          const seen = Array.from({ length: reply.data.readUInt32BE(4) / 8 }, (_, i) => reply.data.readBigUInt64BE(8 + i * 8));
          return { sent, seen };
        }),
      );
      for (const { sent, seen } of results) expect(seen).to.deep.equal(sent);
      expect(h.server.stats).to.deep.include({ commands: CLIENTS * (COMMANDS + 1), prOut: CLIENTS * COMMANDS, prIn: CLIENTS, executeErrors: 0 });
    });

    it('a slow command on one connection does not hold up another connection', async () => {
      const slow = await client();
      const fast = await client();
      const device = deviceFile('disk');
      const order: string[] = [];
      const slowCommand = heldCommand();
      h.respond = async (request) => {
        const slow = request.command.code === 0x01;
        order.push(slow ? 'slow: execute' : 'fast: execute');
        return slow ? slowCommand.execute() : good();
      };
      const slowReply = slow.execute(device.fd, cdb({ opcode: 0x5e, action: 0x01, length: 8192 })).then((reply) => {
        order.push('slow: reply');
        return reply;
      });
      await slowCommand.started;
      await fast.execute(device.fd, readKeys());
      order.push('fast: reply');
      slowCommand.answer(good(READ_KEYS_DATA));
      expect((await slowReply).data).to.deep.equal(READ_KEYS_DATA);
      expect(order).to.deep.equal(['slow: execute', 'fast: execute', 'fast: reply', 'slow: reply']);
    });

    it('runs the commands of one connection strictly one at a time, in order, even when a client pipelines', async () => {
      const raw = await rawClient();
      const other = await client();
      const device = deviceFile('disk');
      const order: string[] = [];
      const firstCommand = heldCommand();
      h.respond = async (request) => {
        const tag = request.command.code === 0x01 ? 'first' : request.command.code === 0x02 ? 'second' : 'other';
        order.push(`${tag}: execute`);
        return tag === 'first' ? firstCommand.execute() : good(Buffer.from(tag));
      };
      // Both requests go out before any reply: forbidden by the protocol, but it must not
      // make the server run them concurrently or out of order.
      await raw.send(cdb({ opcode: 0x5e, action: 0x01, length: 100 }), [device.fd]);
      await raw.send(cdb({ opcode: 0x5e, action: 0x02, length: 100 }), [device.fd]);
      await firstCommand.started;
      // A full round trip on another connection while the first command is still running.
      await other.execute(device.fd, readKeys());
      expect(order).to.deep.equal(['first: execute', 'other: execute']);
      firstCommand.answer(good(Buffer.from('first')));
      const replies = await raw.readExactly(104 + 'first'.length + 104 + 'second'.length);
      expect(replies.subarray(104, 109).toString()).to.equal('first');
      expect(replies.subarray(109 + 104).toString()).to.equal('second');
      expect(order).to.deep.equal(['first: execute', 'other: execute', 'second: execute']);
    });
  });

  describe('connection policy', () => {
    it('closes connections beyond maxConnections at once, without the features word', async () => {
      await h.server.close();
      fs.rmSync(h.dir, { recursive: true, force: true });
      h = startServer({ maxConnections: 1 });
      const first = await client();
      const raw = track(await RawClient.connect(h.socketPath));
      expect(await raw.readToEnd()).to.have.length(0);
      expect(h.server.stats.connectionsRefused).to.equal(1);
      const device = deviceFile('disk');
      expect((await first.execute(device.fd, readKeys())).status).to.equal(Status.GOOD);
    });

    it('asks authorize with the peer credentials and closes refused peers', async () => {
      await h.server.close();
      fs.rmSync(h.dir, { recursive: true, force: true });
      const asked: PeerIdentity[] = [];
      let allow = false;
      h = startServer({
        authorize: async (peer) => {
          asked.push(peer);
          return allow;
        },
      });
      const refused = track(await RawClient.connect(h.socketPath));
      expect(await refused.readToEnd()).to.have.length(0);
      expect(asked).to.deep.equal([{ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() }]);
      allow = true;
      const accepted = await client();
      expect((await accepted.execute(deviceFile('disk').fd, readKeys())).status).to.equal(Status.GOOD);
    });

    it('creates the socket with mode 0600 by default, or the mode asked for', async () => {
      expect(fs.statSync(h.socketPath).mode & 0o777).to.equal(0o600);
      await h.server.close();
      fs.rmSync(h.dir, { recursive: true, force: true });
      h = startServer({}, { mode: 0o660 });
      expect(fs.statSync(h.socketPath).mode & 0o777).to.equal(0o660);
    });

    it('replaces a stale socket file, but never a live socket or a non-socket', async () => {
      // Live: our own server is listening there.
      const second = new PrHelperServer({ logger: pino({ level: 'silent' }), execute: async () => good() });
      expect(() => second.listen({ path: h.socketPath })).to.throw(/in use/);
      // Non-socket.
      const regular = path.join(h.dir, 'regular');
      fs.writeFileSync(regular, 'keep me');
      expect(() => second.listen({ path: regular })).to.throw(/not a socket/);
      expect(fs.readFileSync(regular, 'utf8')).to.equal('keep me');
      // Stale: bound once, nobody listening any more.
      const stalePath = path.join(h.dir, 'stale.sock');
      const dead = libc.unixStreamSocket();
      libc.bind(dead, stalePath);
      libc.close(dead);
      second.listen({ path: stalePath });
      const c = new PrHelperClient();
      await c.connect(stalePath);
      c.close();
      await second.close();
      expect(fs.existsSync(stalePath)).to.equal(false);
    });
  });

  describe('graceful close', () => {
    it('finishes in-flight commands, closes idle connections, stops listening and removes the socket', async () => {
      const busy = await client();
      const idle = track(await rawClient());
      const device = deviceFile('disk');
      const held = heldCommand();
      h.respond = held.execute;
      const inFlight = busy.execute(device.fd, readKeys());
      await held.started;
      let closed = false;
      const closing = h.server.close().then(() => {
        closed = true;
      });
      expect(await idle.readToEnd(), 'idle connection closed without a reply').to.have.length(0);
      expect(fs.existsSync(h.socketPath)).to.equal(false);
      expect(closed).to.equal(false);
      held.answer(good(READ_KEYS_DATA));
      expect((await inFlight).data).to.deep.equal(READ_KEYS_DATA);
      await closing;
      expect(h.server.stats.connectionsActive).to.equal(0);
      expect(await rejectionOf(busy.execute(device.fd, readKeys()))).to.be.instanceOf(ConnectionClosedError);
      const late = new PrHelperClient();
      expect(await rejectionOf(late.connect(h.socketPath))).to.be.instanceOf(libc.SystemCallError).with.property('code', 'ENOENT');
    });
  });

  describe('socket activation', () => {
    it('follows qemu-pr-helper: one fd on 3, for this pid only, never with an explicit path', () => {
      expect(socketActivationFd({ env: {}, pid: 10 })).to.equal(undefined);
      expect(socketActivationFd({ env: { LISTEN_PID: '10', LISTEN_FDS: '1' }, pid: 10 })).to.equal(3);
      expect(socketActivationFd({ env: { LISTEN_PID: '11', LISTEN_FDS: '1' }, pid: 10 })).to.equal(undefined);
      expect(socketActivationFd({ env: { LISTEN_PID: '10', LISTEN_FDS: '0' }, pid: 10 })).to.equal(undefined);
      expect(() => socketActivationFd({ env: { LISTEN_PID: '10', LISTEN_FDS: '2' }, pid: 10 })).to.throw(SocketActivationError, /too many/);
      expect(() => socketActivationFd({ env: { LISTEN_PID: '10', LISTEN_FDS: 'x' }, pid: 10 })).to.throw(SocketActivationError);
      expect(() => socketActivationFd({ env: { LISTEN_PID: '10', LISTEN_FDS: '1' }, pid: 10, explicitPath: '/run/x.sock' })).to.throw(
        SocketActivationError,
        /path/,
      );
    });

    it('serves on an inherited listening fd 3 in a child process, and closes each request fd there', async () => {
      const activatedPath = path.join(h.dir, 'activated.sock');
      const listener = trackFd(libc.unixStreamSocket({ nonBlocking: false }));
      libc.bind(listener, activatedPath);
      libc.listen(listener);
      const distRoot = path.resolve(__dirname, '../..');
      const script = `
        const pino = require('pino');
        const { PrHelperServer } = require(${JSON.stringify(path.join(distRoot, 'src/protocol/server.js'))});
        const { socketActivationFd } = require(${JSON.stringify(path.join(distRoot, 'src/protocol/socket-activation.js'))});
        const { good } = require(${JSON.stringify(path.join(distRoot, 'src/scsi/sense.js'))});
        // Test double for the backend: answers every command GOOD with a marker.
        const server = new PrHelperServer({ logger: pino({ level: 'silent' }), execute: async () => good(Buffer.from('child')) });
        server.listen({ fd: socketActivationFd() });
        process.on('SIGTERM', () => server.close().then(() => process.exit(0)));
        process.stdout.write('ready\\n');
      `;
      // sh's $$ is the pid node keeps after exec, which is what systemd puts in LISTEN_PID.
      const child = spawn('/bin/sh', ['-c', 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -e "$1"', process.execPath, script], {
        stdio: ['ignore', 'pipe', 'inherit', listener],
        cwd: path.resolve(distRoot, '..'),
      });
      // 'close' (not 'exit') so the child's stdout pipe is closed before the fd count is checked.
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      await new Promise<void>((resolve, reject) => {
        child.stdout!.once('data', () => resolve());
        child.once('exit', (code) => reject(new Error(`child exited early with ${code}`)));
      });
      const c = new PrHelperClient();
      await c.connect(activatedPath);
      const p = pipeDevice();
      const reply = await c.execute(p.writeEnd, readKeys());
      expect(reply.data.toString()).to.equal('child');
      // The child closed its copy before replying: no fd of the child refers to our pipe.
      expect(holdersOf(p.writeEnd, child.pid!)).to.equal(0);
      libc.close(p.writeEnd);
      await pipeEof(p.readEnd);
      c.close();
      child.kill('SIGTERM');
      expect(await exited).to.equal(0);
    });
  });
});
