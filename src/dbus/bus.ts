// Reaching the bus: which address, connecting with a deadline, and the error that means
// "no usable bus" (the daemon then serves without D-Bus).

import { sessionBus, type MessageBus } from 'dbus-next';

export const SYSTEM_BUS_SOCKET_ADDRESS = 'unix:path=/var/run/dbus/system_bus_socket';

/** --dbus-address, else DBUS_SYSTEM_BUS_ADDRESS, else the system bus socket. */
export function resolveBusAddress(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return explicit || env.DBUS_SYSTEM_BUS_ADDRESS || SYSTEM_BUS_SOCKET_ADDRESS;
}

export class DbusUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DbusUnavailableError';
  }
}

/**
 * Connects and says Hello, or rejects within timeoutMs. dbus-next reports an unreachable
 * bus only as an 'error' event and leaves pending calls hanging, hence the race here.
 */
export async function connectBus(address: string, timeoutMs = 5000): Promise<MessageBus> {
  let bus: MessageBus;
  try {
    bus = sessionBus({ busAddress: address });
  } catch (error) {
    throw new DbusUnavailableError(`bad bus address ${address}: ${(error as Error).message}`);
  }
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        bus.once('connect', () => resolve());
        bus.once('error', (error: Error) => reject(error));
      }),
      timeoutMs,
    );
  } catch (error) {
    // Later errors from the dead stream must not become an unhandled 'error' event.
    bus.on('error', () => undefined);
    try {
      bus.disconnect();
    } catch {
      // already gone
    }
    throw new DbusUnavailableError(`cannot connect to D-Bus at ${address}: ${(error as Error).message}`);
  }
  return bus;
}

/** The promise's outcome, or a rejection after ms (dbus-next calls can wait forever on a dead bus). */
export function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
