// The working copy one PERSISTENT RESERVE OUT command changes, and the shape of a
// service action's answer. Shared by the registration, reservation and preemption steps.

import { PrType } from '../scsi/constants';
import { checkCondition, good, reservationConflict, type ScsiResult, type SenseCondition, type SenseName } from '../scsi/sense';
import { findRegistration } from './access';
import type { EngineOptions } from './options';
import { ALL_REGISTRANTS, nexusKey, registrationKey, type Nexus, type PrState, type Registration, type Reservation } from './state';

/** A mutable copy of PrState used while one command runs; frozen back by `toState`. */
export class Draft {
  generation: number;
  registrations: Registration[];
  reservation: Reservation | null;
  unitAttentions: Map<string, SenseName[]>;
  aptpl: boolean;

  constructor(state: PrState, private readonly options: EngineOptions) {
    this.generation = state.generation;
    this.registrations = [...state.registrations];
    this.reservation = state.reservation;
    this.unitAttentions = new Map(Object.entries(state.unitAttentions).map(([k, v]) => [k, [...v]]));
    this.aptpl = state.aptpl;
  }

  toState(): PrState {
    const unitAttentions: Record<string, SenseName[]> = {};
    for (const [k, v] of this.unitAttentions) if (v.length > 0) unitAttentions[k] = v;
    return { generation: this.generation, registrations: this.registrations, reservation: this.reservation, unitAttentions, aptpl: this.aptpl };
  }

  find(key: string): Registration | undefined {
    return this.registrations.find((r) => registrationKey(r) === key);
  }

  bumpGeneration(): void {
    this.generation = (this.generation + 1) >>> 0;
  }

  /** Whether the registrations still fit the LU (else INSUFFICIENT REGISTRATION RESOURCES). */
  withinResources(): boolean {
    return this.registrations.length <= this.options.maxRegistrations;
  }

  /** Queues a unit attention; an identical one already pending is not queued twice. */
  addUnitAttention(key: string, name: SenseName): void {
    if (!this.options.unitAttentions) return;
    const list = this.unitAttentions.get(key) ?? [];
    if (!list.includes(name)) list.push(name);
    this.unitAttentions.set(key, list);
  }

  /** Queues `name` for every registered I_T nexus except the sender's (`self`). */
  addUnitAttentionForOthers(self: string, name: SenseName): void {
    for (const r of this.registrations) {
      const k = registrationKey(r);
      if (k !== self) this.addUnitAttention(k, name);
    }
  }

  /** Sets (adding if needed) the registration of `nexus`, keeping its place in the list. */
  upsert(nexus: Nexus, key: bigint, allTgPt: boolean, aptpl: boolean): void {
    const k = nexusKey(nexus);
    const reg: Registration = { initiator: nexus.initiator, targetPort: nexus.targetPort, key, allTgPt, aptpl };
    const index = this.registrations.findIndex((r) => registrationKey(r) === k);
    if (index >= 0) this.registrations[index] = reg;
    else this.registrations.push(reg);
  }

  /**
   * Removes registrations, and with them the reservation when its holder goes
   * (SPC-4 'Releasing persistent reservations and removing registrations') or when an all-registrants reservation
   * loses its last registrant. Returns the keys actually removed.
   */
  unregister(keys: ReadonlySet<string>, releaseNotice: boolean): string[] {
    const removed = this.registrations.filter((r) => keys.has(registrationKey(r))).map(registrationKey);
    if (removed.length === 0) return removed;
    this.registrations = this.registrations.filter((r) => !keys.has(registrationKey(r)));
    const res = this.reservation;
    if (!res) return removed;
    if (res.holder === ALL_REGISTRANTS) {
      // An all-registrants reservation ends with its last registrant (same clause).
      if (this.registrations.length === 0) this.reservation = null;
    } else if (keys.has(res.holder)) {
      this.reservation = null;
      // Same clause: a WE-RO or EA-RO reservation released by unregistering its
      // holder gives every remaining registrant RESERVATIONS RELEASED.
      if (releaseNotice && (res.type === PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY || res.type === PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY)) {
        for (const r of this.registrations) this.addUnitAttention(registrationKey(r), 'RESERVATIONS_RELEASED');
      }
    }
    return removed;
  }
}

/** A service action's answer; `draft` is the changed state, absent when nothing changed. */
export type Step = { kind: 'done'; result: ScsiResult; draft?: Draft };

export function fail(cond: SenseCondition): Step {
  return { kind: 'done', result: checkCondition(cond) };
}

export function conflict(): Step {
  return { kind: 'done', result: reservationConflict() };
}

export function success(draft?: Draft, dataIn?: Buffer): Step {
  return { kind: 'done', result: good(dataIn), draft };
}

/**
 * Whether the I_T nexus `self` is registered with `reservationKey`. SPC-4 basic PR OUT
 * parameter list (RESERVATION KEY): every service action but REGISTER from an
 * unregistered nexus and REGISTER AND IGNORE EXISTING KEY is answered with RESERVATION
 * CONFLICT when the key is not the one registered for the nexus.
 */
export function holdsKey(state: PrState, self: string, reservationKey: bigint): boolean {
  return findRegistration(state, self)?.key === reservationKey;
}
