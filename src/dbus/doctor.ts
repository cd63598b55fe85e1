// Doctor(device, repair): a per-path consistency report for one device, as JSON.
// Emulated LUs are checked path by path against the key the host's "multipathd"
// remembers; other devices get the PR IN view (all a real device tells us through its
// map). Repair only re-registers the host's own key on active paths that lost it while
// the key is still registered through another path, which is what multipathd does when
// a path comes back. It never re-registers a host whose key is gone everywhere: that host
// was preempted, and undoing a fence is not a repair.

import type { EmulatedBackend } from '../backends/emulated/emulated-backend';
import { registrationKey, ALL_REGISTRANTS, type PrState } from '../engine/state';
import { prTypeName } from '../scsi/constants';
import { transportIdKey } from '../scsi/transport-id';
import { emulatedPathName, type DeviceSnapshot } from './device-state';
import { formatKey } from './names';

export interface DoctorPath {
  readonly name: string;
  readonly state: string;
  /** The key registered through this path, or null. */
  readonly registered: string | null;
  readonly holdsReservation: boolean;
}

export interface DoctorReport {
  readonly device: string;
  readonly backend: string;
  readonly generation: number;
  readonly keys: string[];
  readonly reservation: { readonly holderKey: string; readonly type: number; readonly typeName: string } | null;
  /** Emulated LUs: the key this host remembers for the LU (its prkeys entry), or null. */
  readonly knownKey?: string | null;
  readonly paths?: DoctorPath[];
  /** Problems found, one sentence each; empty when the device looks consistent. */
  readonly findings: string[];
  /** What the repair changed (empty without repair, or when there was nothing to repair). */
  readonly repaired: string[];
}

function reservationOf(snapshot: DeviceSnapshot): DoctorReport['reservation'] {
  return snapshot.reservationType === 0
    ? null
    : { holderKey: formatKey(snapshot.reservationKey), type: snapshot.reservationType, typeName: prTypeName(snapshot.reservationType) };
}

/** The report for a device only known through PR IN. */
export function doctorFromPrIn(snapshot: DeviceSnapshot, repair: boolean): DoctorReport {
  return {
    device: snapshot.path,
    backend: snapshot.backend,
    generation: snapshot.generation,
    keys: snapshot.keys.map(formatKey),
    reservation: reservationOf(snapshot),
    findings: repair ? ['repair is implemented for emulated LUs only; nothing was changed'] : [],
    repaired: [],
  };
}

/** The per-path report of an emulated LU, repaired first when asked. */
export function doctorEmulated(emulated: EmulatedBackend, lu: string, snapshotOf: (state: PrState) => DeviceSnapshot, repair: boolean): DoctorReport {
  const repaired = repair ? emulated.repairPaths(lu).map(emulatedPathName) : [];
  const state = emulated.readState(lu);
  const snapshot = snapshotOf(state);
  const known = emulated.knownKey(lu);
  const ours = state.registrations.filter((r) => transportIdKey(r.initiator) === emulated.initiatorKey);
  const holder = state.reservation?.holder;
  const findings: string[] = [];
  const paths: DoctorPath[] = emulated.paths().map((p) => {
    const registration = ours.find((r) => r.targetPort === p.index + 1);
    const name = emulatedPathName(p.index);
    const holdsReservation = registration !== undefined && holder !== undefined && (holder === ALL_REGISTRANTS || holder === registrationKey(registration));
    if (p.state !== 'active') {
      findings.push(`${name} is failed`);
      if (holdsReservation && holder !== ALL_REGISTRANTS) findings.push(`the reservation is held through failed ${name}`);
    } else if (known && !registration && ours.length > 0) {
      findings.push(`${name} is active but not registered while the host's key ${formatKey(known.key)} is registered through another path`);
    }
    if (known && registration && registration.key !== known.key) {
      findings.push(`${name} is registered with ${formatKey(registration.key)}, not the host's key ${formatKey(known.key)}`);
    }
    return { name, state: p.state, registered: registration ? formatKey(registration.key) : null, holdsReservation };
  });
  if (known && ours.length === 0) {
    findings.push(`the host's key ${formatKey(known.key)} is registered through no path: it was preempted or unregistered by another host (not repaired: that would undo a fence)`);
  }
  return {
    device: lu,
    backend: 'emulated',
    generation: snapshot.generation,
    keys: snapshot.keys.map(formatKey),
    reservation: reservationOf(snapshot),
    knownKey: known ? formatKey(known.key) : null,
    paths,
    findings,
    repaired,
  };
}
