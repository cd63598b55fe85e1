// The reservation service actions: RESERVE, RELEASE and CLEAR (SPC-4 'Reserving',
// 'Releasing' and 'Clearing').

import { PrType } from '../scsi/constants';
import type { PrOutParameters } from '../scsi/parameter-list';
import { Sense } from '../scsi/sense';
import { isReservationHolder } from './access';
import { conflict, Draft, fail, holdsKey, success, type Step } from './draft';
import type { EngineOptions } from './options';
import { ALL_REGISTRANTS, isAllRegistrantsType, nexusKey, type Nexus, type PrState } from './state';

/** RESERVE (SPC-4 'Reserving'). Not counted in PRgeneration. */
export function reserve(state: PrState, nexus: Nexus, p: PrOutParameters, type: number, scope: number, options: EngineOptions): Step {
  const self = nexusKey(nexus);
  if (!holdsKey(state, self, p.reservationKey)) return conflict();
  const res = state.reservation;
  if (res) {
    // The holder re-reserving with the same type and scope is a no-op; anything else,
    // from the holder or not, conflicts.
    if (isReservationHolder(state, self) && res.type === type && res.scope === scope) return success();
    return conflict();
  }
  const draft = new Draft(state, options);
  draft.reservation = { holder: isAllRegistrantsType(type) ? ALL_REGISTRANTS : self, type, scope };
  return success(draft);
}

/** RELEASE (SPC-4 'Releasing'). Not counted in PRgeneration. */
export function release(state: PrState, nexus: Nexus, p: PrOutParameters, type: number, scope: number, options: EngineOptions): Step {
  const self = nexusKey(nexus);
  if (!holdsKey(state, self, p.reservationKey)) return conflict();
  const res = state.reservation;
  // No reservation, or a registrant that does not hold it: GOOD, nothing happens.
  if (!res || !isReservationHolder(state, self)) return success();
  if (res.type !== type || res.scope !== scope) return fail(Sense.INVALID_RELEASE_OF_PERSISTENT_RESERVATION);
  const draft = new Draft(state, options);
  draft.reservation = null;
  // "If the released persistent reservation is either a registrants only type or an all
  // registrants type, the device server shall establish a unit attention condition for
  // the initiator port associated with every registered I_T nexus other than I_T nexus
  // on which the PERSISTENT RESERVE OUT command with RELEASE service action was
  // received, with the additional sense code set to RESERVATIONS RELEASED."
  if (res.type !== PrType.WRITE_EXCLUSIVE && res.type !== PrType.EXCLUSIVE_ACCESS) {
    draft.addUnitAttentionForOthers(self, 'RESERVATIONS_RELEASED');
  }
  return success(draft);
}

/** CLEAR (SPC-4 'Clearing'): every registration and the reservation go. */
export function clear(state: PrState, nexus: Nexus, p: PrOutParameters, options: EngineOptions): Step {
  const self = nexusKey(nexus);
  if (!holdsKey(state, self, p.reservationKey)) return conflict();
  const draft = new Draft(state, options);
  draft.addUnitAttentionForOthers(self, 'RESERVATIONS_PREEMPTED');
  draft.registrations = [];
  draft.reservation = null;
  draft.bumpGeneration();
  return success(draft);
}
