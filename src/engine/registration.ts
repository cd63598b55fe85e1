// The registering service actions: REGISTER, REGISTER AND IGNORE EXISTING KEY and
// REGISTER AND MOVE (SPC-4 'Registering' and 'Registering and moving the reservation').

import type { ParameterDecodeResult, PrOutParameters, RegisterAndMoveParameters } from '../scsi/parameter-list';
import { Sense } from '../scsi/sense';
import { transportIdKey } from '../scsi/transport-id';
import { luTargetPorts } from './access';
import { conflict, Draft, fail, holdsKey, success, type Step } from './draft';
import type { EngineOptions } from './options';
import { ALL_REGISTRANTS, nexusKey, type Nexus, type PrState } from './state';

/** The LU's target ports plus the one the command came in on (in case it is not listed). */
function allTargetPorts(nexus: Nexus, options: EngineOptions): number[] {
  const ports = luTargetPorts(options.targetPorts);
  if (!ports.includes(nexus.targetPort)) ports.push(nexus.targetPort);
  return ports;
}

/**
 * REGISTER and REGISTER AND IGNORE EXISTING KEY (SPC-4 'Registering', tables 'Register
 * behaviors for a REGISTER service action' and '... REGISTER AND IGNORE EXISTING KEY').
 *
 * ALL_TG_PT=1 applies the operation (new key, or unregistering) to this initiator
 * port's I_T nexus on every target port of the LU; the key check is made on the
 * receiving nexus only. With ALL_TG_PT=0 only the receiving nexus changes.
 *
 * PRgeneration counts every successful REGISTER/REGISTER AND IGNORE, including the
 * "do nothing" case of an unregistered nexus with SARK=0: SPC-4 (READ KEYS, PRGENERATION) says the
 * counter is incremented "every time a PERSISTENT RESERVE OUT command requests a
 * REGISTER … service action", excluding only failed commands. (LIO returns before
 * incrementing in that case.) The APTPL bit of any successful one is recorded ('Preserving persistent reservations and registrations':
 * "the most recently received valid APTPL value … shall govern").
 */
export function register(state: PrState, nexus: Nexus, p: PrOutParameters, ignoreKey: boolean, options: EngineOptions): Step {
  const draft = new Draft(state, options);
  const existing = draft.find(nexusKey(nexus));
  const ports = p.allTgPt ? allTargetPorts(nexus, options) : [nexus.targetPort];
  const ownNexuses = ports.map((targetPort) => ({ initiator: nexus.initiator, targetPort }));

  if (!existing) {
    if (!ignoreKey && p.reservationKey !== 0n) return conflict();
    if (p.serviceActionKey !== 0n) {
      const listed = listedNexuses(draft, nexus, p, ports);
      if (!listed) return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST);
      for (const n of ownNexuses) draft.upsert(n, p.serviceActionKey, p.allTgPt, p.aptpl);
      for (const n of listed) draft.upsert(n, p.serviceActionKey, p.allTgPt, p.aptpl);
      // All or nothing (SPC-4 'Registering': "no registrations shall be made").
      if (!draft.withinResources()) return fail(Sense.INSUFFICIENT_REGISTRATION_RESOURCES);
    }
  } else {
    if (!ignoreKey && p.reservationKey !== existing.key) return conflict();
    // SPEC_I_PT=1 from a registered I_T nexus is an error in the REGISTER table (SPC-4
    // table 'Register behaviors for a REGISTER service action'); LIO answers the same.
    if (p.specIPT) return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST);
    if (p.serviceActionKey === 0n) {
      draft.unregister(new Set(ownNexuses.map(nexusKey)), true);
    } else {
      // The flag follows this command: with ALL_TG_PT=0 only the receiving nexus is
      // re-keyed, so it no longer stands with the initiator's other nexuses and READ FULL
      // STATUS must report it as a single I_T nexus (SPC-4 full status descriptor, ALL_TG_PT).
      for (const n of ownNexuses) draft.upsert(n, p.serviceActionKey, p.allTgPt, p.aptpl);
      if (!draft.withinResources()) return fail(Sense.INSUFFICIENT_REGISTRATION_RESOURCES);
    }
  }
  draft.aptpl = p.aptpl;
  draft.bumpGeneration();
  return success(draft);
}

/**
 * The I_T nexuses SPEC_I_PT names (each TransportID on each of `ports`), without the
 * sender's own initiator port and without repeats; undefined when one is already registered.
 */
function listedNexuses(draft: Draft, nexus: Nexus, p: PrOutParameters, ports: readonly number[]): Nexus[] | undefined {
  const listed: Nexus[] = [];
  const listedKeys = new Set<string>();
  for (const id of p.transportIds) {
    for (const targetPort of ports) {
      const n = { initiator: id, targetPort };
      const k = nexusKey(n);
      // The sender's own initiator port is registered anyway; naming it is not an error.
      if (transportIdKey(id) === transportIdKey(nexus.initiator) || listedKeys.has(k)) continue;
      // A listed I_T nexus that is already registered: INVALID FIELD IN PARAMETER LIST.
      // (LIO skips such TransportIDs and SCST re-keys them.)
      if (draft.find(k)) return undefined;
      listed.push(n);
      listedKeys.add(k);
    }
  }
  return listed;
}

/**
 * REGISTER AND MOVE (SPC-4 'Registering and moving the reservation', table
 * 'Register behaviors for a REGISTER AND MOVE service action'). The CDB's SCOPE and TYPE
 * are ignored; the reservation keeps its own.
 */
export function registerAndMove(state: PrState, nexus: Nexus, decoded: ParameterDecodeResult<RegisterAndMoveParameters>, options: EngineOptions): Step {
  if (!decoded.ok) return fail(decoded.sense);
  const p = decoded.value;
  const self = nexusKey(nexus);
  // Unregistered sender: RESERVATION CONFLICT per the table. (LIO answers LOGICAL UNIT
  // COMMUNICATION FAILURE here.)
  if (!holdsKey(state, self, p.reservationKey)) return conflict();
  if (p.serviceActionKey === 0n) return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST);
  if (!options.targetPorts.includes(p.relativeTargetPort)) return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST);
  // "If ... the TransportID ... is the same as the initiator port of the I_T nexus for
  // the command received ... INVALID FIELD IN PARAMETER LIST."
  if (transportIdKey(p.transportId) === transportIdKey(nexus.initiator)) return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST);
  const res = state.reservation;
  // No reservation to move: ILLEGAL REQUEST, INVALID FIELD IN CDB, as LIO answers.
  if (!res) return fail(Sense.INVALID_FIELD_IN_CDB);
  // An all-registrants reservation cannot be moved: RESERVATION CONFLICT.
  if (res.holder === ALL_REGISTRANTS) return conflict();
  if (res.holder !== self) return conflict();

  const draft = new Draft(state, options);
  const destination: Nexus = { initiator: p.transportId, targetPort: p.relativeTargetPort };
  // REGISTER AND MOVE registers (or re-keys) only the destination I_T nexus, so that
  // registration is a single-nexus one whatever made it before.
  draft.upsert(destination, p.serviceActionKey, false, p.aptpl);
  if (!draft.withinResources()) return fail(Sense.INSUFFICIENT_REGISTRATION_RESOURCES);
  draft.reservation = { holder: nexusKey(destination), type: res.type, scope: res.scope };
  if (p.unreg) draft.unregister(new Set([self]), false);
  draft.aptpl = p.aptpl;
  draft.bumpGeneration();
  return success(draft);
}
