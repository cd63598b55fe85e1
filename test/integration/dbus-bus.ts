// A private dbus-daemon per test suite, a `mpath-pr serve` process attached to it, and
// small client helpers (signal waiting, property reads) built on dbus-next.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Message, MessageType, sessionBus, type MessageBus } from 'dbus-next';
import { BUS_NAME } from '../../src/dbus/names';
import { startDbusService, type DbusService, type DbusServiceOptions } from '../../src/dbus/service';
import { startServe, tempDir, type ServeProcess } from '../support/daemon';

export interface PrivateBus {
  readonly address: string;
  readonly dir: string;
  stop(): Promise<void>;
}

/** 'open': everybody may own, call and receive everything. 'system': the system bus defaults plus the given policy files. */
export type BusPolicy = { kind: 'open' } | { kind: 'system'; include: readonly string[] };

function busConfig(socket: string, policy: BusPolicy): string {
  // Both let everyone connect, send signals and replies, and receive everything; they
  // differ in who may own names and call methods. Later rules override earlier ones.
  const shared = [
    '<allow send_type="signal"/>',
    '<allow send_requested_reply="true" send_type="method_return"/>',
    '<allow send_requested_reply="true" send_type="error"/>',
    '<allow receive_type="method_call"/>',
    '<allow receive_type="method_return"/>',
    '<allow receive_type="error"/>',
    '<allow receive_type="signal"/>',
  ];
  const rules =
    policy.kind === 'open'
      ? ['<allow user="*"/>', '<allow own="*"/>', '<allow send_type="method_call"/>', ...shared]
      : // The default policy of Debian's /usr/share/dbus-1/system.conf.
        [
          '<allow user="*"/>',
          '<deny own="*"/>',
          '<deny send_type="method_call"/>',
          ...shared,
          '<allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>',
          '<allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>',
        ];
  const includes = policy.kind === 'system' ? policy.include.map((file) => `<include>${file}</include>`) : [];
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    ${rules.join('\n    ')}
  </policy>
  ${includes.join('\n  ')}
</busconfig>
`;
}

/** Starts dbus-daemon on a socket in a fresh directory that every uid can reach. */
export async function startPrivateBus(policy: BusPolicy = { kind: 'open' }): Promise<PrivateBus> {
  const dir = tempDir('mpath-pr-dbus-');
  fs.chmodSync(dir, 0o755);
  const socket = path.join(dir, 'bus');
  const config = path.join(dir, 'bus.conf');
  fs.writeFileSync(config, busConfig(socket, policy));
  const child = spawn('dbus-daemon', [`--config-file=${config}`, '--nofork', '--print-address=1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let errors = '';
  child.stderr!.on('data', (chunk) => (errors += chunk));
  const address = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (chunk) => {
      output += chunk;
      const line = output.split('\n')[0];
      if (output.includes('\n')) resolve(line.trim());
    });
    child.on('exit', (code) => reject(new Error(`dbus-daemon exited ${code}: ${errors}`)));
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return {
    address,
    dir,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Connects a client and waits for Hello. */
export async function connectClientBus(address: string): Promise<MessageBus> {
  const bus = sessionBus({ busAddress: address });
  await new Promise<void>((resolve, reject) => {
    bus.once('connect', () => resolve());
    bus.once('error', reject);
  });
  return bus;
}

export async function call(bus: MessageBus, destination: string, objectPath: string, iface: string, member: string, signature = '', body: unknown[] = []): Promise<Message> {
  const reply = await bus.call(new Message({ destination, path: objectPath, interface: iface, member, signature, body }));
  if (!reply) throw new Error(`${member}: no reply`);
  return reply;
}

export async function getProperty(bus: MessageBus, destination: string, objectPath: string, iface: string, name: string): Promise<unknown> {
  const reply = await call(bus, destination, objectPath, 'org.freedesktop.DBus.Properties', 'Get', 'ss', [iface, name]);
  return (reply.body[0] as { value: unknown }).value;
}

/** Every signal the bus delivers to this connection from now on, for tests to wait on. */
export class SignalRecorder {
  readonly signals: Message[] = [];
  private waiters: { match: (m: Message) => boolean; resolve: (m: Message) => void }[] = [];
  private readonly listener = (msg: Message) => {
    if (msg.type !== MessageType.SIGNAL) return;
    this.signals.push(msg);
    this.waiters = this.waiters.filter((w) => {
      if (!w.match(msg)) return true;
      w.resolve(msg);
      return false;
    });
  };

  private constructor(private readonly bus: MessageBus) {
    bus.on('message', this.listener);
  }

  /** Subscribes to every signal from `sender` (a well-known name is resolved by the bus). */
  static async start(bus: MessageBus, sender: string): Promise<SignalRecorder> {
    const recorder = new SignalRecorder(bus);
    await call(bus, 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'AddMatch', 's', [`type='signal',sender='${sender}'`]);
    return recorder;
  }

  /** The first signal (already received or still to come) that matches; fails after `guardMs` so a missing signal ends the test. */
  next(match: (m: Message) => boolean, what: string, guardMs = 10_000, from = 0): Promise<Message> {
    const seen = this.signals.slice(from).find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise<Message>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} signal arrived`)), guardMs);
      this.waiters.push({
        match,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }

  get count(): number {
    return this.signals.length;
  }

  stop(): void {
    this.bus.removeListener('message', this.listener);
  }
}

export type DbusServeProcess = ServeProcess;

/** `mpath-pr serve` with extra flags; ready once it logged "mpath-pr ready". */
export function startServeWith(options: { dir: string; state: string; initiator: string; args: string[]; paths?: number }): Promise<DbusServeProcess> {
  return startServe({ ...options, readyTimeoutMs: 20_000 });
}

/** A private bus, and a client connection on it that records every signal of the service. */
export interface ObservedBus {
  readonly bus: PrivateBus;
  readonly client: MessageBus;
  readonly signals: SignalRecorder;
}

export async function startObservedBus(): Promise<ObservedBus> {
  const bus = await startPrivateBus();
  const client = await connectClientBus(bus.address);
  const signals = await SignalRecorder.start(client, BUS_NAME);
  return { bus, client, signals };
}

/** Stops the recorder and the client; the bus itself is stopped last, after what else uses it. */
export function leaveObservedBus({ client, signals }: ObservedBus): void {
  signals.stop();
  client.disconnect();
}

const NO_COMMANDS_YET = {
  stats: { connectionsAccepted: 0, connectionsActive: 0, connectionsRefused: 0, commands: 0, prIn: 0, prOut: 0, executeErrors: 0, protocolViolations: 0, connectionErrors: 0 },
};

/** The service inside the test process, on a test bus, beside a server that has run no command. */
export function startServiceInProcess(busAddress: string, options: Omit<DbusServiceOptions, 'version' | 'busAddress' | 'server'>): Promise<DbusService> {
  return startDbusService({ version: 'test', busAddress, server: NO_COMMANDS_YET, ...options });
}
