// PREEMPT and PREEMPT AND ABORT (SPC-4 'Preempting').

import type { PrOutParameters } from '../scsi/parameter-list';
import { Sense } from '../scsi/sense';
import { findRegistration } from './access';
import { conflict, Draft, fail, holdsKey, success, type Step } from './draft';
import type { EngineOptions } from './options';
import { ALL_REGISTRANTS, isAllRegistrantsType, nexusKey, registrationKey, type Nexus, type PrState, type Reservation } from './state';

/**
 * PREEMPT and PREEMPT AND ABORT (SPC-4 'Preempting', figure 'Device server
 * interpretation of PREEMPT service action').
 */
export function preempt(state: PrState, nexus: Nexus, p: PrOutParameters, type: number, scope: number, options: EngineOptions): Step {
  const self = nexusKey(nexus);
  if (!holdsKey(state, self, p.reservationKey)) return conflict();
  const draft = new Draft(state, options);
  const sark = p.serviceActionKey;
  const res = state.reservation;

  /**
   * "Removing registrations": every I_T nexus registered with SARK goes,
   * the sender's too if its key matches (as LIO does); RESERVATION CONFLICT when none.
   */
  const removeRegistrationsOnly = (): Step => {
    const keys = new Set(draft.registrations.filter((r) => r.key === sark).map(registrationKey));
    if (keys.size === 0) return conflict();
    const removed = draft.unregister(keys, false);
    for (const k of removed) if (k !== self) draft.addUnitAttention(k, 'REGISTRATIONS_PREEMPTED');
    draft.bumpGeneration();
    return success(draft);
  };

  /** "Preempting persistent reservations": the sender takes over with the new type and scope. */
  const preemptReservation = (removeKeys: Set<string>, old: Reservation): Step => {
    removeKeys.delete(self);
    draft.reservation = null; // released first, so unregistering does not add RESERVATIONS RELEASED
    const removed = draft.unregister(removeKeys, false);
    for (const k of removed) draft.addUnitAttention(k, 'REGISTRATIONS_PREEMPTED');
    draft.reservation = { holder: isAllRegistrantsType(type) ? ALL_REGISTRANTS : self, type, scope };
    // "If the type or scope has changed, then for every I_T nexus whose reservation key
    // was not removed, except for the I_T nexus on which the PERSISTENT RESERVE OUT
    // command was received, the device server shall establish a unit attention condition
    // ... RESERVATIONS RELEASED."
    if (old.type !== type || old.scope !== scope) draft.addUnitAttentionForOthers(self, 'RESERVATIONS_RELEASED');
    draft.bumpGeneration();
    return success(draft);
  };

  if (!res) {
    // No reservation: SARK=0 cannot name a registration (INVALID FIELD IN PARAMETER LIST).
    if (sark === 0n) return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST);
    return removeRegistrationsOnly();
  }
  if (res.holder === ALL_REGISTRANTS) {
    // All-registrants: SARK=0 preempts the reservation and every other registration;
    // any other SARK removes just the registrations with that key.
    if (sark === 0n) return preemptReservation(new Set(draft.registrations.map(registrationKey)), res);
    return removeRegistrationsOnly();
  }
  const holderKey = findRegistration(state, res.holder)?.key;
  if (holderKey !== undefined && sark === holderKey) {
    return preemptReservation(new Set(draft.registrations.filter((r) => r.key === sark).map(registrationKey)), res);
  }
  if (sark === 0n) return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST);
  return removeRegistrationsOnly();
}
