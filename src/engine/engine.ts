// The SPC-4 persistent-reservation device server for one logical unit (SPC-4
// 'Persistent reservations' and the PERSISTENT RESERVE IN/OUT commands; clause titles
// are cited rather than numbers, which differ between revisions). Deterministic and free of I/O: `execute` maps
// (state, nexus, CDB, parameter list) to (new state, SCSI result). Where LIO
// (drivers/target/target_core_pr.c) answers differently from SPC-4, SPC-4 wins and the
// clause is cited next to the code.
//
// This module is the dispatcher; the service actions live in registration.ts (REGISTER,
// REGISTER AND IGNORE EXISTING KEY, REGISTER AND MOVE), reservation.ts (RESERVE, RELEASE,
// CLEAR) and preemption.ts (PREEMPT [AND ABORT]), each changing a Draft (draft.ts).

import { prOutAction } from '../scsi/actions';
import { ALL_PR_TYPES, isPrType, LU_SCOPE } from '../scsi/constants';
import { PR_OUT_BASIC_PARAMETER_LENGTH } from '../scsi/parameter-list';
import type { PrCommand, PrInCommand, PrOutCommand } from '../scsi/pr-command';
import {
  encodeReadFullStatus,
  encodeReadKeys,
  encodeReadReservation,
  encodeReportCapabilities,
  type Capabilities,
} from '../scsi/pr-in-data';
import { checkCondition, Sense, type ScsiResult } from '../scsi/sense';
import { encodeTransportId } from '../scsi/transport-id';
import { readFullStatus, readKeys, readReservation } from './access';
import { fail, success, type Step } from './draft';
import type { EngineOptions } from './options';
import { preempt } from './preemption';
import { register, registerAndMove } from './registration';
import { clear, release, reserve } from './reservation';
import { nexusKey, type Nexus, type PrState } from './state';

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

// ---- entry point ----

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
