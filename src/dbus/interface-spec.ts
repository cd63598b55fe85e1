// One table per exported D-Bus interface: its read-only properties, methods and signals
// with their signatures and argument names. dbus-next is configured from it (its
// decorators do not work under TypeScript, dbusjs/node-dbus-next#101), introspection is
// completed from it, and method calls are dispatched by it (see method-calls.ts).

import { interface as dbusInterface } from 'dbus-next';

export interface MethodSpec {
  readonly in: string;
  readonly out: string;
  /** Argument names, in-args then out-args, as introspection shows them. */
  readonly args: readonly string[];
}

export interface SignalSpec {
  readonly signature: string;
  readonly args: readonly string[];
}

export interface InterfaceSpec {
  readonly name: string;
  /** Every property is read-only: name → signature. */
  readonly properties: Readonly<Record<string, string>>;
  /** Properties that change without PropertiesChanged (read them when needed). */
  readonly silentProperties?: readonly string[];
  readonly methods: Readonly<Record<string, MethodSpec>>;
  readonly signals?: Readonly<Record<string, SignalSpec>>;
}

interface IntrospectionArg {
  $: { name?: string; direction?: string; type: string };
}
interface IntrospectionMember {
  $: { name: string };
  arg?: IntrospectionArg[];
  annotation?: { $: { name: string; value: string } }[];
}
interface IntrospectionInterface {
  method?: IntrospectionMember[];
  signal?: IntrospectionMember[];
  property?: IntrospectionMember[];
}

const baseIntrospect = (dbusInterface.Interface.prototype as unknown as { $introspect(): IntrospectionInterface }).$introspect;

/**
 * dbus-next introspects arguments without names; busctl, d-feet and generated proxies
 * show the names, so they are added here (in declaration order: in-args, then out-args).
 * Properties that change without a signal say so with the standard annotation.
 */
function describeMembers(xml: IntrospectionInterface, spec: InterfaceSpec): IntrospectionInterface {
  const argNames = (name: string) => spec.methods[name]?.args ?? spec.signals?.[name]?.args;
  for (const member of [...(xml.method ?? []), ...(xml.signal ?? [])]) {
    const names = argNames(member.$.name);
    member.arg?.forEach((arg, i) => {
      if (names?.[i]) arg.$ = { name: names[i], ...arg.$ };
    });
  }
  for (const property of xml.property ?? []) {
    if (spec.silentProperties?.includes(property.$.name)) {
      property.annotation = [{ $: { name: 'org.freedesktop.DBus.Property.EmitsChangedSignal', value: 'false' } }];
    }
  }
  return xml;
}

function mapValues<V, R>(record: Readonly<Record<string, V>>, map: (value: V) => R): Record<string, R> {
  return Object.fromEntries(Object.entries(record).map(([key, value]) => [key, map(value)]));
}

/** An exported interface described by an InterfaceSpec; subclasses call declare() once. */
export abstract class SpecifiedInterface extends dbusInterface.Interface {
  constructor(readonly spec: InterfaceSpec) {
    super(spec.name);
  }

  /** Configures dbus-next's members of `cls` from its spec. */
  protected static declare(spec: InterfaceSpec): void {
    this.configureMembers({
      properties: mapValues(spec.properties, (signature) => ({ signature, access: dbusInterface.ACCESS_READ })),
      methods: mapValues(spec.methods, (method) => ({ inSignature: method.in, outSignature: method.out })),
      signals: mapValues(spec.signals ?? {}, (signal) => ({ signature: signal.signature })),
    });
  }

  $introspect(): IntrospectionInterface {
    return describeMembers(baseIntrospect.call(this), this.spec);
  }
}
