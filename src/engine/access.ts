// Read-only questions about a PrState, used by the engine itself, the emulated backend,
// the CLI and the D-Bus service.

import { PrType } from '../scsi/constants';
import type { FullStatusDescriptor, ReadFullStatusData, ReadKeysData, ReadReservationData } from '../scsi/pr-in-data';
import { transportIdKey } from '../scsi/transport-id';
import { ALL_REGISTRANTS, isAllRegistrantsType, nexusKey, registrationKey, type Nexus, type PrState, type Registration } from './state';

export function findRegistration(state: PrState, key: string): Registration | undefined {
  return state.registrations.find((r) => registrationKey(r) === key);
}

export function isRegistered(state: PrState, nexus: Nexus): boolean {
  return findRegistration(state, nexusKey(nexus)) !== undefined;
}

/** Every registration of one initiator port (all its target ports); `initiatorKey` is a transportIdKey. */
export function registrationsOf(state: PrState, initiatorKey: string): Registration[] {
  const wanted = initiatorKey.toLowerCase();
  return state.registrations.filter((r) => transportIdKey(r.initiator).toLowerCase() === wanted);
}

/**
 * SPC-4 'Persistent reservation holder': for the all-registrants types every registered
 * I_T nexus is a reservation holder; otherwise only the nexus that reserved.
 */
export function isReservationHolder(state: PrState, key: string): boolean {
  const res = state.reservation;
  if (!res) return false;
  if (res.holder === ALL_REGISTRANTS) return findRegistration(state, key) !== undefined;
  return res.holder === key;
}

export function readKeys(state: PrState): ReadKeysData {
  return { generation: state.generation, keys: state.registrations.map((r) => r.key) };
}

/**
 * READ RESERVATION. For the all-registrants types the RESERVATION KEY is zero
 * (SPC-4 READ RESERVATION parameter data: "the RESERVATION KEY field shall be set to zero").
 */
export function readReservation(state: PrState): ReadReservationData {
  const res = state.reservation;
  if (!res) return { generation: state.generation };
  const key = res.holder === ALL_REGISTRANTS ? 0n : (findRegistration(state, res.holder)?.key ?? 0n);
  return { generation: state.generation, reservation: { key, scope: res.scope, type: res.type } };
}

/** READ FULL STATUS: one descriptor per registered I_T nexus, holders flagged R_HOLDER. */
export function readFullStatus(state: PrState): ReadFullStatusData {
  const descriptors: FullStatusDescriptor[] = state.registrations.map((r) => {
    const holder = isReservationHolder(state, registrationKey(r));
    return {
      key: r.key,
      allTgPt: r.allTgPt,
      holder,
      // SPC-4 READ FULL STATUS: SCOPE and TYPE are defined only when R_HOLDER is one.
      scope: holder ? state.reservation!.scope : 0,
      type: holder ? state.reservation!.type : 0,
      relativeTargetPort: r.targetPort,
      transportId: r.initiator,
    };
  });
  return { generation: state.generation, descriptors };
}

export type MediumAccessKind = 'read' | 'write';

/**
 * Whether a READ or WRITE from `nexus` is allowed, per SPC-4 table 'SPC commands that
 * are allowed in the presence of various reservations' (READ and WRITE rows). The holder is always allowed. Otherwise:
 *
 * | type  | read: registered / not | write: registered / not |
 * |-------|------------------------|-------------------------|
 * | WE    | allowed / allowed      | conflict / conflict     |
 * | EA    | conflict / conflict    | conflict / conflict     |
 * | WE-RO | allowed / allowed      | allowed / conflict      |
 * | EA-RO | allowed / conflict     | allowed / conflict      |
 * | WE-AR | allowed / allowed      | allowed / conflict      |
 * | EA-AR | allowed / conflict     | allowed / conflict      |
 */
export function mediumAccess(state: PrState, nexus: Nexus, kind: MediumAccessKind): 'allowed' | 'conflict' {
  const res = state.reservation;
  if (!res) return 'allowed';
  const key = nexusKey(nexus);
  if (isReservationHolder(state, key)) return 'allowed';
  const registered = findRegistration(state, key) !== undefined;
  switch (res.type) {
    case PrType.WRITE_EXCLUSIVE:
      return kind === 'read' ? 'allowed' : 'conflict';
    case PrType.EXCLUSIVE_ACCESS:
      return 'conflict';
    case PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY:
    case PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS:
      return kind === 'read' || registered ? 'allowed' : 'conflict';
    case PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY:
    case PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS:
      return registered ? 'allowed' : 'conflict';
    default:
      return 'conflict';
  }
}

export { isAllRegistrantsType };
