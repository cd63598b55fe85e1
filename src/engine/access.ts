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

/** The valid relative target port identifiers among `ports`, without duplicates. */
export function luTargetPorts(ports: readonly number[]): number[] {
  return [...new Set(ports.filter((p) => Number.isInteger(p) && p >= 1 && p <= 0xffff))];
}

/**
 * READ FULL STATUS (SPC-4 'READ FULL STATUS service action', full status descriptor).
 *
 * SPC-4 defines ALL_TG_PT=1 in a descriptor as: "a) this full status descriptor
 * represents all the I_T nexuses that are associated with both: A) the initiator port
 * specified by the TRANSPORTID field; and B) every target port in the SCSI target
 * device; b) all the I_T nexuses are registered with the same reservation key; and
 * c) all the I_T nexuses are either reservation holders or not reservation holders",
 * and ALL_TG_PT=0 as "this full status descriptor represents a single I_T nexus".
 * So an initiator port whose registrations were all made with ALL_TG_PT=1, cover every
 * target port of the LU (`targetPorts`) and agree on key and holder state gets ONE
 * descriptor with ALL_TG_PT=1. Its RELATIVE TARGET PORT IDENTIFIER is 0: "If the
 * ALL_TG_PT bit is set to one, the contents of the RELATIVE TARGET PORT IDENTIFIER
 * field are not defined by this standard", and 0 is what LIO reports.
 *
 * Every other registration gets its own descriptor with ALL_TG_PT=0 and its own port.
 * In particular when one of those nexuses alone holds a reservation that is not of an
 * all-registrants type, rule c) forbids the merged descriptor (R_HOLDER=1 would claim
 * every nexus holds it, and its RELATIVE TARGET PORT IDENTIFIER cannot name the holder),
 * so each nexus is reported on its own and the holder's carries R_HOLDER, SCOPE and TYPE.
 */
export function readFullStatus(state: PrState, options: { readonly targetPorts: readonly number[] }): ReadFullStatusData {
  const ports = luTargetPorts(options.targetPorts);
  const byInitiator = new Map<string, Registration[]>();
  for (const r of state.registrations) {
    const k = transportIdKey(r.initiator);
    const list = byInitiator.get(k);
    if (list) list.push(r);
    else byInitiator.set(k, [r]);
  }
  const holderOf = (r: Registration) => isReservationHolder(state, registrationKey(r));
  const describe = (r: Registration, allTgPt: boolean): FullStatusDescriptor => {
    const holder = holderOf(r);
    return {
      key: r.key,
      allTgPt,
      holder,
      // SPC-4 READ FULL STATUS: SCOPE and TYPE are defined only when R_HOLDER is one.
      scope: holder ? state.reservation!.scope : 0,
      type: holder ? state.reservation!.type : 0,
      relativeTargetPort: allTgPt ? 0 : r.targetPort,
      transportId: r.initiator,
    };
  };
  const standsForAllPorts = (group: readonly Registration[]): boolean => {
    const [first] = group;
    if (!group.every((r) => r.allTgPt && r.key === first.key && holderOf(r) === holderOf(first))) return false;
    const registered = new Set(group.map((r) => r.targetPort));
    return ports.every((p) => registered.has(p));
  };
  const descriptors: FullStatusDescriptor[] = [];
  const merged = new Set<string>();
  for (const r of state.registrations) {
    const k = transportIdKey(r.initiator);
    if (merged.has(k)) continue;
    const group = byInitiator.get(k)!;
    if (standsForAllPorts(group)) {
      // Placed where the initiator's first registration stands.
      merged.add(k);
      descriptors.push(describe(r, true));
    } else {
      descriptors.push(describe(r, false));
    }
  }
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
