// Exporting our objects, and dispatching the method calls made to them. dbus-next calls
// an interface's method with the message body only, so the method could not tell who
// called. Our interfaces' methods are dispatched here instead, from a bus method handler
// that sees the whole message: each call gets its caller (the sender the bus daemon
// vouches for) as one more argument. Properties, Introspectable and Peer stay with
// dbus-next.

import { DBusError, Message, type MessageBus } from 'dbus-next';
import type { SpecifiedInterface } from './interface-spec';

/** Who made a method call. */
export interface BusCaller {
  /** The unique bus name of the calling connection (':1.42'), as the bus daemon stamped it. */
  readonly sender: string;
}

type Method = (...args: unknown[]) => unknown;

export class ExportedObjects {
  private readonly objects = new Map<string, SpecifiedInterface>();
  private readonly handler = (msg: Message): boolean => this.dispatch(msg);

  constructor(private readonly bus: MessageBus) {
    bus.addMethodHandler(this.handler);
  }

  export(objectPath: string, iface: SpecifiedInterface): void {
    this.objects.set(objectPath, iface);
    this.bus.export(objectPath, iface);
  }

  /** Stops dispatching; the bus answers later calls with UnknownMethod. */
  close(): void {
    this.bus.removeMethodHandler(this.handler);
  }

  /** True when the call is to one of our methods (and is answered here); false leaves it to dbus-next. */
  private dispatch(msg: Message): boolean {
    const iface = this.objects.get(msg.path);
    if (!iface || msg.interface !== iface.spec.name) return false;
    const spec = iface.spec.methods[msg.member];
    if (!spec || spec.in !== (msg.signature || '')) return false;
    const reply = (value: unknown) => this.bus.send(Message.newMethodReturn(msg, spec.out, spec.out === '' ? [] : [value]));
    const fail = (error: unknown) => this.bus.send(errorReply(msg, error));
    const caller: BusCaller = { sender: msg.sender };
    let result: unknown;
    try {
      result = ((iface as unknown as Record<string, Method>)[msg.member]).call(iface, ...msg.body, caller);
    } catch (error) {
      fail(error);
      return true;
    }
    if (result instanceof Promise) result.then(reply, fail);
    else reply(result);
    return true;
  }
}

/** A DBusError goes to the caller as is; anything else is a bug, reported the way dbus-next reports it. */
function errorReply(msg: Message, error: unknown): Message {
  const newError = Message.newError as unknown as (call: Message, name: string, text: string) => Message;
  if (error instanceof DBusError) return newError(msg, error.type, error.text);
  return newError(msg, 'com.github.dbus_next.ServiceError', `Service error: The service threw an error.\n${(error as Error)?.stack ?? String(error)}`);
}
