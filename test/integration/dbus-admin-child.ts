// Run by the D-Bus tests as another uid (65534): one D-Bus call, its outcome as one JSON
// line on stdout. argv: address, destination, path, interface, member, signature, body
// (JSON; strings of the form "bigint:N" become BigInt).

import { Message, sessionBus } from 'dbus-next';

async function main(): Promise<void> {
  const [address, destination, objectPath, iface, member, signature, bodyJson] = process.argv.slice(2);
  const body = JSON.parse(bodyJson, (_key, value) => (typeof value === 'string' && value.startsWith('bigint:') ? BigInt(value.slice(7)) : value));
  const bus = sessionBus({ busAddress: address });
  await new Promise<void>((resolve, reject) => {
    bus.once('connect', () => resolve());
    bus.once('error', reject);
  });
  try {
    const reply = await bus.call(new Message({ destination, path: objectPath, interface: iface, member, signature, body }));
    const value = reply?.body.map((v: unknown) => (v && typeof v === 'object' && 'value' in v ? (v as { value: unknown }).value : v));
    process.stdout.write(JSON.stringify({ ok: true, uid: process.getuid!(), value }, (_k, v) => (typeof v === 'bigint' ? `bigint:${v}` : v)) + '\n');
  } catch (error) {
    const e = error as { type?: string; text?: string; message: string };
    process.stdout.write(JSON.stringify({ ok: false, uid: process.getuid!(), name: e.type, message: e.text ?? e.message }) + '\n');
  }
  bus.disconnect();
}

main().catch((error) => {
  process.stdout.write(JSON.stringify({ ok: false, name: 'child-failure', message: String(error) }) + '\n');
  process.exitCode = 1;
});
