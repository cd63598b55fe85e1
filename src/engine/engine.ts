// The SPC-4 persistent-reservation device server for one logical unit (SPC-4
// 'Persistent reservations' and the PERSISTENT RESERVE IN/OUT commands; clause titles
// are cited rather than numbers, which differ between revisions). Deterministic and free of I/O: `execute` maps
// (state, nexus, CDB, parameter list) to (new state, SCSI result). Where LIO
// (drivers/target/target_core_pr.c) answers differently from SPC-4, SPC-4 wins and the
// clause is cited next to the code.

import { prOutAction } from '../scsi/actions';
import { ALL_PR_TYPES, isPrType, LU_SCOPE, PrType } from '../scsi/constants';
import { PR_OUT_BASIC_PARAMETER_LENGTH, type ParameterDecodeResult, type PrOutParameters, type RegisterAndMoveParameters } from '../scsi/parameter-list';
import type { PrCommand, PrInCommand, PrOutCommand } from '../scsi/pr-command';
import {
  encodeReadFullStatus,
  encodeReadKeys,
  encodeReadReservation,
  encodeReportCapabilities,
  type Capabilities,
} from '../scsi/pr-in-data';
import { checkCondition, good, reservationConflict, Sense, type ScsiResult, type SenseCondition, type SenseName } from '../scsi/sense';
import { transportIdKey, encodeTransportId } from '../scsi/transport-id';
import { findRegistration, isReservationHolder, luTargetPorts, readFullStatus, readKeys, readReservation } from './access';
import { ALL_REGISTRANTS, isAllRegistrantsType, nexusKey, registrationKey, type Nexus, type PrState, type Registration, type Reservation } from './state';

export interface EngineOptions {
  /** The LU's relative target port identifiers; ALL_TG_PT registers on each of them. */
  readonly targetPorts: readonly number[];
  /** Establish unit attentions for other nexuses (LIO does; default true). */
  readonly unitAttentions: boolean;
  /** Registrations (I_T nexuses) the LU can hold; beyond it INSUFFICIENT REGISTRATION RESOURCES. */
  readonly maxRegistrations: number;
  /**
   * ALLOW COMMANDS reported by REPORT CAPABILITIES. The engine only decides PR
   * commands and READ/WRITE medium access, so it has nothing to say about the other
   * commands the field describes: 000b ("no information") unless the backend knows better.
   */
  readonly allowCommands?: number;
}

export const DEFAULT_MAX_REGISTRATIONS = 128;

export function defaultEngineOptions(targetPorts: readonly number[]): EngineOptions {
  return { targetPorts: [...targetPorts], unitAttentions: true, maxRegistrations: DEFAULT_MAX_REGISTRATIONS };
}

export interface ExecuteOutcome {
  state: PrState;
  result: ScsiResult;
  /** True when `state` differs from the input (including a consumed unit attention). */
  changed: boolean;
}

/** What REPORT CAPABILITIES says: the truth about this engine. */
export function capabilities(options: EngineOptions, state?: PrState): Capabilities {
  return {
    replaceLostReservation: false, // REPLACE LOST RESERVATION is not implemented
    // CRH describes how SPC-2 RESERVE(6)/RELEASE(6) interact with PRs ('Exceptions to SPC-2 RESERVE and RELEASE behavior');
    // the engine implements neither command, so it cannot claim that handling.
    crh: false,
    sipC: true,
    atpC: true,
    ptplC: true,
    tmv: true,
    allowCommands: options.allowCommands ?? 0,
    ptplA: state?.aptpl ?? false,
    types: [...ALL_PR_TYPES],
  };
}

// ---- working copy ----

/** A mutable copy of PrState used while one command runs; frozen back by `toState`. */
class Draft {
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

  /** Queues a unit attention; an identical one already pending is not queued twice. */
  addUnitAttention(key: string, name: SenseName): void {
    if (!this.options.unitAttentions) return;
    const list = this.unitAttentions.get(key) ?? [];
    if (!list.includes(name)) list.push(name);
    this.unitAttentions.set(key, list);
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

// ---- entry point ----

type Step = { kind: 'done'; result: ScsiResult; draft?: Draft };

function fail(cond: SenseCondition): Step {
  return { kind: 'done', result: checkCondition(cond) };
}

function conflict(): Step {
  return { kind: 'done', result: reservationConflict() };
}

function success(draft?: Draft, dataIn?: Buffer): Step {
  return { kind: 'done', result: good(dataIn), draft };
}

function checkNexus(nexus: Nexus): void {
  if (!nexus || typeof nexus !== 'object') throw new TypeError('nexus is required');
  if (!Number.isInteger(nexus.targetPort) || nexus.targetPort < 1 || nexus.targetPort > 0xffff) {
    throw new RangeError(`nexus.targetPort must be a relative target port identifier 1..65535, got ${nexus.targetPort}`);
  }
  // Throws for an initiator that cannot appear in a TransportID (READ FULL STATUS needs it).
  encodeTransportId(nexus.initiator);
}

/**
 * Runs one admitted command (src/scsi/pr-command.ts settled its opcode and framing). Any
 * field values get a SCSI answer; only a malformed `nexus` (a caller bug, not wire input)
 * throws. PR IN data is cut to the allocation length. A pending unit attention for the
 * nexus is reported first and consumed, as LIO does: PERSISTENT RESERVE IN/OUT are not
 * among the commands SAM-5 5.14 exempts.
 */
export function execute(state: PrState, nexus: Nexus, command: PrCommand, options: EngineOptions): ExecuteOutcome {
  checkNexus(nexus);
  const self = nexusKey(nexus);
  const pending = state.unitAttentions[self];
  if (pending && pending.length > 0) {
    const [first, ...rest] = pending;
    const unitAttentions = { ...state.unitAttentions };
    if (rest.length > 0) unitAttentions[self] = rest;
    else delete unitAttentions[self];
    return { state: { ...state, unitAttentions }, result: checkCondition(Sense[first]), changed: true };
  }
  const step = command.direction === 'in' ? prIn(state, command, options) : prOut(state, nexus, command, options);
  if (!step.draft) return { state, result: step.result, changed: false };
  return { state: step.draft.toState(), result: step.result, changed: true };
}

// ---- PERSISTENT RESERVE IN ----

function prIn(state: PrState, command: PrInCommand, options: EngineOptions): Step {
  const { allocationLength } = command;
  switch (command.action) {
    case 'read-keys':
      return success(undefined, encodeReadKeys(readKeys(state), allocationLength));
    case 'read-reservation':
      return success(undefined, encodeReadReservation(readReservation(state), allocationLength));
    case 'report-capabilities':
      return success(undefined, encodeReportCapabilities(capabilities(options, state), allocationLength));
    case 'read-full-status':
      return success(undefined, encodeReadFullStatus(readFullStatus(state, options), allocationLength));
    default:
      return fail(Sense.INVALID_FIELD_IN_CDB);
  }
}

// ---- PERSISTENT RESERVE OUT ----

function prOut(state: PrState, nexus: Nexus, command: PrOutCommand, options: EngineOptions): Step {
  const { scope, type } = command;
  // REPLACE LOST RESERVATION is not implemented (RLR_C=0) and 9..1Fh are reserved.
  if (command.action === undefined || command.action === 'replace-lost') return fail(Sense.INVALID_FIELD_IN_CDB);
  if (command.parameterList.length < PR_OUT_BASIC_PARAMETER_LENGTH) return fail(Sense.PARAMETER_LIST_LENGTH_ERROR);
  if (command.action === 'register-move') return registerAndMove(state, nexus, command.parameters, options);

  if (prOutAction(command.action).usesType && (scope !== LU_SCOPE || !isPrType(type))) {
    // SPC-4 PERSISTENT RESERVE OUT CDB: only LU_SCOPE is defined; obsolete and reserved types are invalid.
    return fail(Sense.INVALID_FIELD_IN_CDB);
  }
  // SPC-4 basic PR OUT parameter list: "If the SPEC_I_PT bit is set to one for any service action except the
  // REGISTER service action, then the command shall be terminated with ... INVALID FIELD
  // IN PARAMETER LIST." Checked before the length rules, which depend on SPEC_I_PT.
  if (command.specIPT && command.action !== 'register') return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST);
  if (!command.parameters.ok) return fail(command.parameters.sense);
  const p = command.parameters.value;

  switch (command.action) {
    case 'register':
      return register(state, nexus, p, false, options);
    case 'register-ignore':
      return register(state, nexus, p, true, options);
    case 'reserve':
      return reserve(state, nexus, p, type, scope, options);
    case 'release':
      return release(state, nexus, p, type, scope, options);
    case 'clear':
      return clear(state, nexus, p, options);
    case 'preempt':
    case 'preempt-abort':
      // PREEMPT AND ABORT differs only in aborting the preempted nexuses' tasks, and
      // this device server has no task sets: the state change is the same.
      return preempt(state, nexus, p, type, scope, options);
  }
}

/** The LU's target ports plus the one the command came in on (in case it is not listed). */
function allTargetPorts(nexus: Nexus, options: EngineOptions): number[] {
  const ports = luTargetPorts(options.targetPorts);
  if (!ports.includes(nexus.targetPort)) ports.push(nexus.targetPort);
  return ports;
}

function withinResources(draft: Draft, options: EngineOptions): boolean {
  return draft.registrations.length <= options.maxRegistrations;
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
function register(state: PrState, nexus: Nexus, p: PrOutParameters, ignoreKey: boolean, options: EngineOptions): Step {
  const draft = new Draft(state, options);
  const self = nexusKey(nexus);
  const existing = draft.find(self);
  const ports = p.allTgPt ? allTargetPorts(nexus, options) : [nexus.targetPort];
  const ownNexuses = ports.map((targetPort) => ({ initiator: nexus.initiator, targetPort }));

  if (!existing) {
    if (!ignoreKey && p.reservationKey !== 0n) return conflict();
    if (p.serviceActionKey !== 0n) {
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
          if (draft.find(k)) return fail(Sense.INVALID_FIELD_IN_PARAMETER_LIST);
          listed.push(n);
          listedKeys.add(k);
        }
      }
      for (const n of ownNexuses) draft.upsert(n, p.serviceActionKey, p.allTgPt, p.aptpl);
      for (const n of listed) draft.upsert(n, p.serviceActionKey, p.allTgPt, p.aptpl);
      // All or nothing (SPC-4 'Registering': "no registrations shall be made").
      if (!withinResources(draft, options)) return fail(Sense.INSUFFICIENT_REGISTRATION_RESOURCES);
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
      if (!withinResources(draft, options)) return fail(Sense.INSUFFICIENT_REGISTRATION_RESOURCES);
    }
  }
  draft.aptpl = p.aptpl;
  draft.bumpGeneration();
  return success(draft);
}

/** RESERVE (SPC-4 'Reserving'). Not counted in PRgeneration. */
function reserve(state: PrState, nexus: Nexus, p: PrOutParameters, type: number, scope: number, options: EngineOptions): Step {
  const self = nexusKey(nexus);
  const reg = findRegistration(state, self);
  if (!reg || reg.key !== p.reservationKey) return conflict();
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
function release(state: PrState, nexus: Nexus, p: PrOutParameters, type: number, scope: number, options: EngineOptions): Step {
  const self = nexusKey(nexus);
  const reg = findRegistration(state, self);
  if (!reg || reg.key !== p.reservationKey) return conflict();
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
    for (const r of draft.registrations) {
      const k = registrationKey(r);
      if (k !== self) draft.addUnitAttention(k, 'RESERVATIONS_RELEASED');
    }
  }
  return success(draft);
}

/** CLEAR (SPC-4 'Clearing'): every registration and the reservation go. */
function clear(state: PrState, nexus: Nexus, p: PrOutParameters, options: EngineOptions): Step {
  const self = nexusKey(nexus);
  const reg = findRegistration(state, self);
  if (!reg || reg.key !== p.reservationKey) return conflict();
  const draft = new Draft(state, options);
  for (const r of draft.registrations) {
    const k = registrationKey(r);
    if (k !== self) draft.addUnitAttention(k, 'RESERVATIONS_PREEMPTED');
  }
  draft.registrations = [];
  draft.reservation = null;
  draft.bumpGeneration();
  return success(draft);
}

/**
 * PREEMPT and PREEMPT AND ABORT (SPC-4 'Preempting', figure 'Device server
 * interpretation of PREEMPT service action').
 */
function preempt(state: PrState, nexus: Nexus, p: PrOutParameters, type: number, scope: number, options: EngineOptions): Step {
  const self = nexusKey(nexus);
  const reg = findRegistration(state, self);
  if (!reg || reg.key !== p.reservationKey) return conflict();
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
    if (old.type !== type || old.scope !== scope) {
      for (const r of draft.registrations) {
        const k = registrationKey(r);
        if (k !== self) draft.addUnitAttention(k, 'RESERVATIONS_RELEASED');
      }
    }
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

/**
 * REGISTER AND MOVE (SPC-4 'Registering and moving the reservation', table
 * 'Register behaviors for a REGISTER AND MOVE service action'). The CDB's SCOPE and TYPE
 * are ignored; the reservation keeps its own.
 */
function registerAndMove(state: PrState, nexus: Nexus, decoded: ParameterDecodeResult<RegisterAndMoveParameters>, options: EngineOptions): Step {
  if (!decoded.ok) return fail(decoded.sense);
  const p = decoded.value;
  const self = nexusKey(nexus);
  const reg = findRegistration(state, self);
  // Unregistered sender: RESERVATION CONFLICT per the table. (LIO answers LOGICAL UNIT
  // COMMUNICATION FAILURE here.)
  if (!reg || reg.key !== p.reservationKey) return conflict();
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
  const destinationKey = nexusKey(destination);
  // REGISTER AND MOVE registers (or re-keys) only the destination I_T nexus, so that
  // registration is a single-nexus one whatever made it before.
  draft.upsert(destination, p.serviceActionKey, false, p.aptpl);
  if (!withinResources(draft, options)) return fail(Sense.INSUFFICIENT_REGISTRATION_RESOURCES);
  draft.reservation = { holder: destinationKey, type: res.type, scope: res.scope };
  if (p.unreg) draft.unregister(new Set([self]), false);
  draft.aptpl = p.aptpl;
  draft.bumpGeneration();
  return success(draft);
}

