// What the D-Bus service shows about one device, as plain data: built from the emulated
// engine's state (which knows every path's registration) or from PR IN (all a real
// device tells us), and compared field by field to decide which properties changed.

import { readKeys, readReservation, type PrExecutor } from '../backends/pr-commands';
import type { HostPath } from '../backends/emulated/store';
import { ALL_REGISTRANTS, registrationKey, type PrState } from '../engine/state';
import { transportIdKey } from '../scsi/transport-id';
import { formatKey } from './names';

/** One path of this host to the device: its name, its state, and the key registered through it. */
export interface PathView {
  readonly name: string;
  readonly state: string;
  /** formatKey() of the key registered through this path, '' when none or unknown. */
  readonly key: string;
}

/** The Device1 properties of one device. */
export interface DeviceSnapshot {
  readonly path: string;
  readonly wwid: string;
  readonly backend: string;
  readonly generation: number;
  /** Every registered key, in READ KEYS order (one per registered I_T nexus). */
  readonly keys: readonly bigint[];
  /** The reservation holder's key; 0 with no reservation (and for all-registrants types, as READ RESERVATION reports). */
  readonly reservationKey: bigint;
  /** The reservation type, 0 with no reservation. */
  readonly reservationType: number;
  readonly paths: readonly PathView[];
}

/** The Device1 property names, in the order they are declared. */
export const DEVICE_PROPERTIES = ['Path', 'Wwid', 'Backend', 'Generation', 'Keys', 'ReservationKey', 'ReservationType', 'Paths'] as const;
export type DevicePropertyName = (typeof DEVICE_PROPERTIES)[number];

/** The snapshot as D-Bus values (signatures s, s, s, u, at, t, u, a(sss)). */
export function deviceProperties(s: DeviceSnapshot): Record<DevicePropertyName, unknown> {
  return {
    Path: s.path,
    Wwid: s.wwid,
    Backend: s.backend,
    Generation: s.generation >>> 0,
    Keys: [...s.keys],
    ReservationKey: s.reservationKey,
    ReservationType: s.reservationType,
    Paths: s.paths.map((p) => [p.name, p.state, p.key]),
  };
}

/** The D-Bus properties whose values differ between two snapshots, with the new values. */
export function changedProperties(before: DeviceSnapshot | undefined, after: DeviceSnapshot): Partial<Record<DevicePropertyName, unknown>> {
  const next = deviceProperties(after);
  if (!before) return next;
  const previous = deviceProperties(before);
  const changed: Partial<Record<DevicePropertyName, unknown>> = {};
  for (const name of DEVICE_PROPERTIES) {
    if (!sameValue(previous[name], next[name])) changed[name] = next[name];
  }
  return changed;
}

function sameValue(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => sameValue(v, b[i]));
  return a === b;
}

/** True when the holder or the type of the reservation differs. */
export function reservationChanged(before: DeviceSnapshot | undefined, after: DeviceSnapshot): boolean {
  if (!before) return after.reservationType !== 0;
  return before.reservationKey !== after.reservationKey || before.reservationType !== after.reservationType;
}

/** The holder key as the ReservationChanged signal carries it: formatKey, or '' with no reservation. */
export function holderKeyText(s: DeviceSnapshot): string {
  return s.reservationType === 0 ? '' : formatKey(s.reservationKey);
}

/** Path names for emulated paths: the simulated host's path index. */
export function emulatedPathName(index: number): string {
  return `path${index}`;
}

/**
 * The snapshot of an emulated LU from the engine's state, for this host (the paths are
 * this host's I_T nexuses: path i reaches the LU through relative target port i+1).
 */
export function emulatedSnapshot(lu: string, state: PrState, host: { initiatorKey: string; paths: readonly HostPath[] }): DeviceSnapshot {
  let reservationKey = 0n;
  if (state.reservation && state.reservation.holder !== ALL_REGISTRANTS) {
    reservationKey = state.registrations.find((r) => registrationKey(r) === state.reservation!.holder)?.key ?? 0n;
  }
  const paths = host.paths.map((p) => {
    const registration = state.registrations.find((r) => r.targetPort === p.index + 1 && transportIdKey(r.initiator) === host.initiatorKey);
    return { name: emulatedPathName(p.index), state: p.state, key: registration ? formatKey(registration.key) : '' };
  });
  return {
    path: lu,
    wwid: '',
    backend: 'emulated',
    generation: state.generation,
    keys: state.registrations.map((r) => r.key),
    reservationKey,
    reservationType: state.reservation?.type ?? 0,
    paths,
  };
}

/** The snapshot of any device from READ KEYS and READ RESERVATION; paths come from the caller (sysfs). */
export async function prInSnapshot(
  run: PrExecutor,
  base: { path: string; wwid: string; backend: string; paths: readonly PathView[] },
): Promise<DeviceSnapshot> {
  const keys = await readKeys(run);
  const reservation = await readReservation(run);
  return {
    ...base,
    generation: keys.generation,
    keys: keys.keys,
    reservationKey: reservation.reservation?.key ?? 0n,
    reservationType: reservation.reservation?.type ?? 0,
  };
}
