// Differential fidelity between the SPC-4 engine and a real target (LIO): one list of
// named scenarios, each a sequence of PR commands from two initiators A and B on one LU;
// a runner that plays a scenario through "an executor per initiator" and records, per
// step, the status, the sense and the PR IN data in a form that can be compared across
// targets (generation relative to the scenario's start, keys and descriptors sorted,
// TransportIDs named A/B); and the comparison with its list of explained differences.
//
// Used by test/lab/differential.lab.ts (engine and LIO in one process in the lab VM) and
// test/unit/differential-engine.test.ts (the engine against the captured LIO results).

import { encodePrInCdb, encodePrOutCdb } from '../../src/scsi/cdb';
import { Opcode, PrInAction, PrOutAction, PrType, Status, prTypeName, statusName } from '../../src/scsi/constants';
import { prInActionByCode, prOutActionByCode } from '../../src/scsi/actions';
import { encodePrOutParameters, encodeRegisterAndMoveParameters } from '../../src/scsi/parameter-list';
import { decodeReadFullStatus, decodeReadKeys, decodeReadReservation, decodeReportCapabilities } from '../../src/scsi/pr-in-data';
import { decodeSense, type ScsiResult } from '../../src/scsi/sense';
import { parseTransportId, type TransportId } from '../../src/scsi/transport-id';
import { executeBytes } from '../support/pr-bytes';
import { defaultEngineOptions, initialState, type Nexus, type PrState } from '../../src/engine';
import type { PrExecutor } from '../../src/backends/pr-commands';

export type Initiator = 'A' | 'B';
export const INITIATORS: readonly Initiator[] = ['A', 'B'];

export interface Step {
  initiator: Initiator;
  /** What the step does, for reports: "REGISTER rk=0 sark=a1". */
  label: string;
  cdb: Buffer;
  dataOut: Buffer;
}

/** What a scenario needs to know about the two initiators (learned from the target in the lab). */
export interface ScenarioContext {
  transportIds: Record<Initiator, TransportId>;
  /** The relative target port each initiator's I_T nexus goes through. */
  targetPorts: Record<Initiator, number>;
  /** Every relative target port of the LU (ALL_TG_PT registers on each). */
  luTargetPorts: number[];
}

export interface Scenario {
  name: string;
  /** Fabrics it may run on; absent = any. PREEMPT AND ABORT deadlocks LIO over tcm_loop. */
  fabrics?: readonly string[];
  steps(ctx: ScenarioContext): Step[];
}

// ---- step builders ----

const KA = 0xa1n;
const KA2 = 0xa2n;
const KB = 0xb1n;
const BAD = 0xdeadn;

const hex = (key: bigint) => key.toString(16);

interface OutOptions {
  rk?: bigint;
  sark?: bigint;
  type?: number;
  scope?: number;
  aptpl?: boolean;
  allTgPt?: boolean;
  specIPT?: boolean;
  transportIds?: TransportId[];
  /** Send this PARAMETER LIST LENGTH and that many bytes (cut or zero-padded). */
  parameterListLength?: number;
}

function out(initiator: Initiator, action: number, o: OutOptions = {}): Step {
  let dataOut = encodePrOutParameters({
    reservationKey: o.rk ?? 0n,
    serviceActionKey: o.sark ?? 0n,
    specIPT: o.specIPT ?? (o.transportIds !== undefined && o.transportIds.length > 0),
    allTgPt: o.allTgPt ?? false,
    aptpl: o.aptpl ?? false,
    transportIds: o.transportIds ?? [],
  });
  if (o.parameterListLength !== undefined) {
    const sized = Buffer.alloc(o.parameterListLength);
    dataOut.copy(sized, 0, 0, Math.min(dataOut.length, sized.length));
    dataOut = sized;
  }
  const type = o.type ?? 0;
  const scope = o.scope ?? 0;
  const flags = [o.aptpl ? 'APTPL' : '', o.allTgPt ? 'ALL_TG_PT' : '', o.transportIds?.length ? `SPEC_I_PT(${o.transportIds.length})` : ''].filter(Boolean);
  const label = [
    prOutActionByCode(action)?.title ?? `PR OUT SA ${action.toString(16)}h`,
    `rk=${hex(o.rk ?? 0n)}`,
    `sark=${hex(o.sark ?? 0n)}`,
    type ? `type=${type}` : '',
    scope ? `scope=${scope}` : '',
    ...flags,
    o.parameterListLength !== undefined ? `len=${o.parameterListLength}` : '',
  ]
    .filter(Boolean)
    .join(' ');
  return { initiator, label, cdb: encodePrOutCdb({ action, type, scope, parameterListLength: dataOut.length }), dataOut };
}

const register = (i: Initiator, rk: bigint, sark: bigint, o: OutOptions = {}) => out(i, PrOutAction.REGISTER, { ...o, rk, sark });
const registerIgnore = (i: Initiator, sark: bigint, o: OutOptions = {}) => out(i, PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, { ...o, sark });
const reserve = (i: Initiator, rk: bigint, type: number, o: OutOptions = {}) => out(i, PrOutAction.RESERVE, { ...o, rk, type });
const release = (i: Initiator, rk: bigint, type: number, o: OutOptions = {}) => out(i, PrOutAction.RELEASE, { ...o, rk, type });
const clear = (i: Initiator, rk: bigint) => out(i, PrOutAction.CLEAR, { rk });
const preempt = (i: Initiator, rk: bigint, sark: bigint, type: number, o: OutOptions = {}) => out(i, PrOutAction.PREEMPT, { ...o, rk, sark, type });
const preemptAbort = (i: Initiator, rk: bigint, sark: bigint, type: number) => out(i, PrOutAction.PREEMPT_AND_ABORT, { rk, sark, type });

function prIn(initiator: Initiator, action: number, allocationLength = 1024): Step {
  const name = prInActionByCode(action)?.title ?? `PR IN SA ${action.toString(16)}h`;
  return { initiator, label: `${name}${allocationLength === 1024 ? '' : ` alloc=${allocationLength}`}`, cdb: encodePrInCdb({ action, allocationLength }), dataOut: Buffer.alloc(0) };
}
const keys = (i: Initiator, alloc?: number) => prIn(i, PrInAction.READ_KEYS, alloc);
const reservation = (i: Initiator, alloc?: number) => prIn(i, PrInAction.READ_RESERVATION, alloc);
const caps = (i: Initiator, alloc?: number) => prIn(i, PrInAction.REPORT_CAPABILITIES, alloc);
const fullStatus = (i: Initiator, alloc?: number) => prIn(i, PrInAction.READ_FULL_STATUS, alloc);

function move(i: Initiator, ctx: ScenarioContext, o: { rk: bigint; sark: bigint; to: Initiator; port?: number; unreg?: boolean; aptpl?: boolean }): Step {
  const dataOut = encodeRegisterAndMoveParameters({
    reservationKey: o.rk,
    serviceActionKey: o.sark,
    unreg: o.unreg ?? false,
    aptpl: o.aptpl ?? false,
    relativeTargetPort: o.port ?? ctx.targetPorts[o.to],
    transportId: ctx.transportIds[o.to],
  });
  return {
    initiator: i,
    label: `REGISTER AND MOVE rk=${hex(o.rk)} sark=${hex(o.sark)} to=${o.to}@${o.port ?? ctx.targetPorts[o.to]}${o.unreg ? ' UNREG' : ''}`,
    cdb: encodePrOutCdb({ action: PrOutAction.REGISTER_AND_MOVE, type: PrType.WRITE_EXCLUSIVE, parameterListLength: dataOut.length }),
    dataOut,
  };
}

const { WRITE_EXCLUSIVE: WE, EXCLUSIVE_ACCESS: EA, WRITE_EXCLUSIVE_REGISTRANTS_ONLY: WE_RO, EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: EA_RO } = PrType;
const { WRITE_EXCLUSIVE_ALL_REGISTRANTS: WE_AR, EXCLUSIVE_ACCESS_ALL_REGISTRANTS: EA_AR } = PrType;
const ALL_TYPES = [WE, EA, WE_RO, EA_RO, WE_AR, EA_AR];
const isAllRegistrants = (type: number) => type === WE_AR || type === EA_AR;
const bothRegistered = (): Step[] => [register('A', 0n, KA), register('B', 0n, KB)];

// ---- the scenarios ----

export const SCENARIOS: readonly Scenario[] = [
  { name: 'register: first registration, seen from both initiators', steps: () => [register('A', 0n, KA), keys('A'), keys('B'), fullStatus('A'), register('B', 0n, KB), keys('A'), fullStatus('B')] },
  { name: 'register: wrong current key conflicts, right key changes it', steps: () => [register('A', 0n, KA), register('A', BAD, KA2), keys('B'), register('A', KA, KA2), keys('B')] },
  { name: 'register: unregistered nexus with a non-zero current key conflicts', steps: () => [register('A', BAD, KA), keys('A')] },
  { name: 'register: unregistered nexus with SARK=0 does nothing (generation?)', steps: () => [register('A', 0n, 0n), keys('A'), registerIgnore('A', 0n), keys('A')] },
  { name: 'register: the same key again', steps: () => [register('A', 0n, KA), register('A', KA, KA), keys('A')] },
  { name: 'register: unregister with SARK=0', steps: () => [...bothRegistered(), register('A', KA, 0n), keys('B'), fullStatus('B')] },
  { name: 'register and ignore: replaces any key, SARK=0 unregisters', steps: () => [registerIgnore('A', KA), keys('B'), registerIgnore('A', KA2), keys('B'), registerIgnore('A', 0n), keys('B')] },

  ...ALL_TYPES.map(
    (type): Scenario => ({
      name: `reserve ${prTypeName(type)}: holders, conflicts, release and its attentions`,
      steps: () => [
        ...bothRegistered(),
        reserve('A', KA, type),
        reservation('B'),
        fullStatus('A'),
        reserve('B', KB, type),
        reserve('A', KA, type === WE ? EA : WE),
        release('B', KB, type),
        reservation('A'),
        release('A', KA, type),
        keys('B'),
        keys('B'),
        reservation('A'),
      ],
    }),
  ),
  { name: 'reserve: same type again by the holder is a no-op', steps: () => [register('A', 0n, KA), reserve('A', KA, WE), reserve('A', KA, WE), reservation('A')] },
  { name: 'reserve: unregistered initiator and wrong key conflict', steps: () => [register('A', 0n, KA), reserve('B', KB, WE), reserve('A', BAD, WE), reservation('A')] },

  { name: 'release: wrong type by the holder', steps: () => [register('A', 0n, KA), reserve('A', KA, WE), release('A', KA, EA), reservation('A')] },
  { name: 'release: wrong key by the holder', steps: () => [register('A', 0n, KA), reserve('A', KA, WE), release('A', BAD, WE), reservation('A')] },
  { name: 'release: unregistered initiator', steps: () => [register('A', 0n, KA), reserve('A', KA, WE), release('B', KB, WE), reservation('A')] },
  { name: 'release: no reservation', steps: () => [register('A', 0n, KA), release('A', KA, WE), reservation('A')] },

  ...[WE, WE_RO, WE_AR].map(
    (type): Scenario => ({
      name: `unregister the holder of ${prTypeName(type)}`,
      steps: () => [...bothRegistered(), reserve('A', KA, type), register('A', KA, 0n), reservation('B'), reservation('B'), fullStatus('B')],
    }),
  ),

  { name: 'clear: everything goes, others get RESERVATIONS PREEMPTED', steps: () => [...bothRegistered(), reserve('A', KA, EA_RO), clear('B', KB), keys('A'), keys('A'), reservation('A'), keys('B')] },
  { name: 'clear: wrong key and unregistered initiator conflict', steps: () => [register('A', 0n, KA), clear('A', BAD), clear('B', KB), keys('A')] },

  { name: "preempt: the holder's key, with a new type", steps: () => [...bothRegistered(), reserve('A', KA, WE), preempt('B', KB, KA, EA), keys('A'), keys('A'), reservation('B'), reserve('A', KA, WE)] },
  {
    name: "preempt and abort: the holder's key, with a new type",
    fabrics: ['iscsi'],
    steps: () => [...bothRegistered(), reserve('A', KA, WE), preemptAbort('B', KB, KA, EA), keys('A'), keys('A'), reservation('B'), fullStatus('B')],
  },
  { name: 'preempt: a non-holder registration while a reservation stands', steps: () => [...bothRegistered(), reserve('B', KB, WE), preempt('B', KB, KA, WE), keys('A'), keys('A'), reservation('B')] },
  { name: 'preempt: registrations when there is no reservation', steps: () => [...bothRegistered(), preempt('B', KB, KA, WE), reservation('B'), keys('A'), keys('A')] },
  { name: 'preempt: SARK=0 with no reservation', steps: () => [...bothRegistered(), preempt('B', KB, 0n, WE), keys('A')] },
  { name: 'preempt: SARK=0 with a Write Exclusive reservation', steps: () => [...bothRegistered(), reserve('A', KA, WE), preempt('B', KB, 0n, WE), reservation('A')] },
  { name: 'preempt: SARK=0 with an all-registrants reservation', steps: () => [...bothRegistered(), reserve('A', KA, WE_AR), preempt('B', KB, 0n, WE), keys('A'), keys('A'), reservation('B'), fullStatus('B')] },
  { name: 'preempt: a key under an all-registrants reservation', steps: () => [...bothRegistered(), reserve('A', KA, EA_AR), preempt('B', KB, KA, EA_AR), keys('A'), keys('A'), reservation('B'), fullStatus('B')] },
  { name: 'preempt: a key nobody holds', steps: () => [...bothRegistered(), reserve('A', KA, WE), preempt('B', KB, BAD, WE), keys('B')] },
  { name: 'preempt: own key, changing the type', steps: () => [...bothRegistered(), reserve('A', KA, WE), preempt('A', KA, KA, EA), keys('B'), keys('B'), reservation('A'), keys('A')] },
  { name: 'preempt: from an unregistered initiator', steps: () => [register('A', 0n, KA), reserve('A', KA, WE), preempt('B', KB, KA, WE), reservation('A')] },
  {
    name: 'unit attentions: two queued for one initiator, in order',
    steps: () => [...bothRegistered(), reserve('A', KA, WE_RO), preempt('A', KA, KA, EA_RO), preempt('A', KA, KB, EA_RO), keys('B'), keys('B'), keys('B')],
  },

  { name: 'ALL_TG_PT: register on every target port, then re-register without it', steps: () => [register('A', 0n, KA, { allTgPt: true }), fullStatus('B'), keys('B'), register('A', KA, KA2), fullStatus('B'), register('A', KA, 0n, { allTgPt: true }), keys('B')] },
  { name: 'SPEC_I_PT: register B along with A', steps: (ctx) => [register('A', 0n, KA, { transportIds: [ctx.transportIds.B] }), keys('B'), fullStatus('B'), reserve('B', KA, WE), reservation('A')] },
  { name: 'SPEC_I_PT: from a registered nexus', steps: (ctx) => [register('A', 0n, KA), register('A', KA, KA2, { transportIds: [ctx.transportIds.B] }), keys('B')] },
  { name: 'SPEC_I_PT: naming an already registered nexus', steps: (ctx) => [register('B', 0n, KB), register('A', 0n, KA, { transportIds: [ctx.transportIds.B] }), fullStatus('B')] },
  { name: 'SPEC_I_PT: set on RESERVE', steps: (ctx) => [register('A', 0n, KA), reserve('A', KA, WE, { transportIds: [ctx.transportIds.B] }), reservation('A')] },

  { name: 'register and move: to B', steps: (ctx) => [register('A', 0n, KA), reserve('A', KA, WE), move('A', ctx, { rk: KA, sark: KB, to: 'B' }), reservation('B'), fullStatus('B'), keys('A')] },
  { name: 'register and move: to B with UNREG', steps: (ctx) => [register('A', 0n, KA), reserve('A', KA, WE_RO), move('A', ctx, { rk: KA, sark: KB, to: 'B', unreg: true }), reservation('B'), fullStatus('B'), keys('A')] },
  { name: 'register and move: no reservation', steps: (ctx) => [register('A', 0n, KA), move('A', ctx, { rk: KA, sark: KB, to: 'B' }), keys('B')] },
  { name: 'register and move: not the holder', steps: (ctx) => [...bothRegistered(), reserve('B', KB, WE), move('A', ctx, { rk: KA, sark: KB, to: 'B' }), reservation('A')] },
  { name: 'register and move: unregistered sender', steps: (ctx) => [register('B', 0n, KB), reserve('B', KB, WE), move('A', ctx, { rk: KA, sark: KA2, to: 'B' }), reservation('B')] },
  { name: 'register and move: all-registrants reservation', steps: (ctx) => [register('A', 0n, KA), reserve('A', KA, WE_AR), move('A', ctx, { rk: KA, sark: KB, to: 'B' }), reservation('A'), keys('A')] },
  { name: 'register and move: to itself', steps: (ctx) => [register('A', 0n, KA), reserve('A', KA, WE), move('A', ctx, { rk: KA, sark: KA2, to: 'A' }), reservation('A')] },
  { name: 'register and move: SARK=0', steps: (ctx) => [register('A', 0n, KA), reserve('A', KA, WE), move('A', ctx, { rk: KA, sark: 0n, to: 'B' }), reservation('A')] },
  { name: 'register and move: wrong key', steps: (ctx) => [register('A', 0n, KA), reserve('A', KA, WE), move('A', ctx, { rk: BAD, sark: KB, to: 'B' }), reservation('A')] },

  { name: 'APTPL: PTPL_A follows the last registration, and CLEAR', steps: () => [caps('A'), register('A', 0n, KA, { aptpl: true }), caps('A'), register('A', KA, KA, { aptpl: false }), caps('B'), register('A', KA, KA, { aptpl: true }), clear('A', KA), caps('A')] },
  { name: 'REPORT CAPABILITIES from both initiators', steps: () => [caps('A'), caps('B'), caps('A', 4), caps('A', 0)] },

  {
    name: 'bad SCOPE on RESERVE, RELEASE and PREEMPT',
    steps: () => [...bothRegistered(), reserve('A', KA, WE, { scope: 1 }), reserve('A', KA, WE, { scope: 2 }), reserve('A', KA, WE), release('A', KA, WE, { scope: 1 }), preempt('B', KB, KA, WE, { scope: 1 }), reservation('B')],
  },
  { name: 'bad TYPE on RESERVE', steps: () => [register('A', 0n, KA), ...[0x0, 0x2, 0x4, 0x9, 0xf].map((type) => reserve('A', KA, type)), reservation('A')] },
  { name: 'bad TYPE on PREEMPT and RELEASE', steps: () => [...bothRegistered(), reserve('A', KA, WE), preempt('B', KB, KA, 0x2), release('A', KA, 0x0), reservation('B')] },
  {
    name: 'unknown service actions',
    steps: () => [out('A', 0x08, {}), out('A', 0x1f, {}), prIn('A', 0x04), prIn('A', 0x1f), keys('A')],
  },
  {
    name: 'PARAMETER LIST LENGTH wrong for the service action',
    steps: () => [
      out('A', PrOutAction.REGISTER, { sark: KA, parameterListLength: 0 }),
      out('A', PrOutAction.REGISTER, { sark: KA, parameterListLength: 20 }),
      out('A', PrOutAction.REGISTER, { sark: KA, parameterListLength: 28 }),
      keys('A'),
      out('A', PrOutAction.REGISTER, { sark: KA, parameterListLength: 24 }),
      out('A', PrOutAction.RESERVE, { rk: KA, type: WE, parameterListLength: 20 }),
      reservation('A'),
    ],
  },
  {
    name: 'allocation length truncation',
    steps: () => [
      ...bothRegistered(),
      reserve('A', KA, WE),
      keys('A', 0),
      keys('A', 4),
      keys('A', 8),
      keys('A', 12),
      keys('A', 16),
      reservation('A', 8),
      reservation('A', 20),
      fullStatus('A', 8),
      fullStatus('A', 30),
    ],
  },
];

// ---- results ----

export interface NormalizedDescriptor {
  initiator: string;
  relativeTargetPort: number;
  key: string;
  allTgPt: boolean;
  holder: boolean;
  scope: number;
  type: number;
}

export interface StepOutcome {
  initiator: Initiator;
  label: string;
  status: string;
  /** "KEY/ASC/ASCQ" in hex, for CHECK CONDITION. */
  sense?: string;
  /** Decoded PR IN data, comparable across targets. */
  data?: Record<string, unknown>;
}

function senseText(result: ScsiResult): string | undefined {
  if (result.status !== Status.CHECK_CONDITION) return undefined;
  const decoded = decodeSense(result.sense);
  if (!decoded) return `undecodable:${result.sense.toString('hex')}`;
  return [decoded.key, decoded.asc, decoded.ascq].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join('/');
}

/** Names an initiator A or B by its TransportID (iSCSI: by name, whatever the ISID). */
export function initiatorLabel(id: TransportId, ctx: ScenarioContext): string {
  for (const who of INITIATORS) {
    const known = ctx.transportIds[who];
    if (known.protocol === 'iscsi' && id.protocol === 'iscsi' && known.name.toLowerCase() === id.name.toLowerCase()) return who;
    if (known.protocol === 'sas' && id.protocol === 'sas' && known.sasAddress === id.sasAddress) return who;
    if (known.protocol === 'fc' && id.protocol === 'fc' && known.portName === id.portName) return who;
  }
  return `other:${JSON.stringify(id, (_, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}`;
}

function normalizeData(step: Step, result: ScsiResult, baseGeneration: number, ctx: ScenarioContext): Record<string, unknown> | undefined {
  if (step.cdb[0] !== Opcode.PERSISTENT_RESERVE_IN || result.status !== Status.GOOD) return undefined;
  const data = result.dataIn;
  const relative = (generation: number) => (generation - baseGeneration) >>> 0;
  const common = (): Record<string, unknown> => (data.length >= 8 ? { length: data.length, generation: relative(data.readUInt32BE(0)), additionalLength: data.readUInt32BE(4) } : { length: data.length, hex: data.toString('hex') });
  switch (step.cdb[1] & 0x1f) {
    case PrInAction.READ_KEYS: {
      if (data.length < 8) return common();
      const decoded = decodeReadKeys(data);
      if (!decoded.ok) return { ...common(), error: decoded.reason };
      return { ...common(), keys: decoded.value.keys.map(hex).sort() };
    }
    case PrInAction.READ_RESERVATION: {
      if (data.length < 8) return common();
      const decoded = decodeReadReservation(data);
      if (!decoded.ok) return { ...common(), error: decoded.reason };
      const r = decoded.value.reservation;
      return { ...common(), reservation: r ? { key: hex(r.key), scope: r.scope, type: r.type } : null };
    }
    case PrInAction.REPORT_CAPABILITIES: {
      const decoded = decodeReportCapabilities(data);
      if (!decoded.ok) return { length: data.length, hex: data.toString('hex'), error: decoded.reason };
      return { length: data.length, ...decoded.value };
    }
    case PrInAction.READ_FULL_STATUS: {
      if (data.length < 8) return common();
      const decoded = decodeReadFullStatus(data);
      if (!decoded.ok) return { ...common(), error: decoded.reason };
      const descriptors: NormalizedDescriptor[] = decoded.value.descriptors
        .map((d) => ({
          initiator: initiatorLabel(d.transportId, ctx),
          relativeTargetPort: d.relativeTargetPort,
          key: hex(d.key),
          allTgPt: d.allTgPt,
          holder: d.holder,
          scope: d.scope,
          type: d.type,
        }))
        // SPC-4 leaves the order of descriptors to the device server.
        .sort((x, y) => (x.initiator + x.relativeTargetPort + x.key < y.initiator + y.relativeTargetPort + y.key ? -1 : 1));
      return { ...common(), descriptors };
    }
    default:
      return { length: data.length, hex: data.toString('hex') };
  }
}

export function normalizeOutcome(step: Step, result: ScsiResult, baseGeneration: number, ctx: ScenarioContext): StepOutcome {
  const outcome: StepOutcome = { initiator: step.initiator, label: step.label, status: statusName(result.status) };
  const sense = senseText(result);
  if (sense !== undefined) outcome.sense = sense;
  const data = normalizeData(step, result, baseGeneration, ctx);
  if (data !== undefined) outcome.data = data;
  return outcome;
}

/** Plays a scenario; `baseGeneration` is the target's PRgeneration when it starts (0 for a fresh engine). */
export async function runScenario(
  scenario: Scenario,
  ctx: ScenarioContext,
  executors: Record<Initiator, PrExecutor>,
  baseGeneration: number,
): Promise<StepOutcome[]> {
  const outcomes: StepOutcome[] = [];
  for (const step of scenario.steps(ctx)) {
    const result = await executors[step.initiator](step.cdb, step.dataOut);
    outcomes.push(normalizeOutcome(step, result, baseGeneration, ctx));
  }
  return outcomes;
}

/** The engine as two initiators on one LU, with the nexuses and target ports of `ctx`. */
export function engineExecutors(ctx: ScenarioContext): { executors: Record<Initiator, PrExecutor>; state: () => PrState } {
  let state = initialState();
  const options = defaultEngineOptions(ctx.luTargetPorts);
  const executorFor = (who: Initiator): PrExecutor => {
    const nexus: Nexus = { initiator: ctx.transportIds[who], targetPort: ctx.targetPorts[who] };
    return async (cdb, dataOut) => {
      const outcome = executeBytes(state, nexus, cdb, dataOut, options);
      state = outcome.state;
      return outcome.result;
    };
  };
  return { executors: { A: executorFor('A'), B: executorFor('B') }, state: () => state };
}

export async function runEngineScenarios(ctx: ScenarioContext, fabric: string): Promise<Record<string, StepOutcome[]>> {
  const results: Record<string, StepOutcome[]> = {};
  for (const scenario of scenariosFor(fabric)) {
    results[scenario.name] = await runScenario(scenario, ctx, engineExecutors(ctx).executors, 0);
  }
  return results;
}

export function scenariosFor(fabric: string): Scenario[] {
  return SCENARIOS.filter((s) => !s.fabrics || s.fabrics.includes(fabric));
}

// ---- comparison ----

export interface Difference {
  scenario: string;
  /** 1-based step number. */
  step: number;
  label: string;
  field: string;
  lio: unknown;
  engine: unknown;
}

function flatten(outcome: StepOutcome | undefined): Record<string, unknown> {
  if (!outcome) return { missing: true };
  const flat: Record<string, unknown> = { status: outcome.status, sense: outcome.sense ?? null };
  for (const [k, v] of Object.entries(outcome.data ?? {})) flat[`data.${k}`] = v;
  return flat;
}

const canonical = (value: unknown): string => JSON.stringify(value === undefined ? null : value);

export function compareScenario(scenario: string, lio: readonly StepOutcome[], engine: readonly StepOutcome[]): Difference[] {
  const differences: Difference[] = [];
  for (let i = 0; i < Math.max(lio.length, engine.length); i++) {
    const a = flatten(lio[i]);
    const b = flatten(engine[i]);
    for (const field of [...new Set([...Object.keys(a), ...Object.keys(b)])]) {
      if (canonical(a[field]) !== canonical(b[field])) {
        differences.push({ scenario, step: i + 1, label: (lio[i] ?? engine[i])!.label, field, lio: a[field] ?? null, engine: b[field] ?? null });
      }
    }
  }
  return differences;
}

/** A recorded, explained difference (fixtures/differential/*.json). */
export interface ExplainedDifference {
  scenario: string;
  step: number;
  field: string;
  lio: unknown;
  engine: unknown;
  /** Fabrics the difference shows on; absent = every fabric. */
  fabrics?: string[];
  /** The SPC-4 clause that decides who is right. */
  clause: string;
  explanation: string;
}

export function matches(entry: ExplainedDifference, difference: Difference): boolean {
  return (
    entry.scenario === difference.scenario &&
    entry.step === difference.step &&
    entry.field === difference.field &&
    canonical(entry.lio) === canonical(difference.lio) &&
    canonical(entry.engine) === canonical(difference.engine)
  );
}

export interface Judgement {
  explained: Array<{ difference: Difference; entry: ExplainedDifference; kind: string }>;
  unexplained: Difference[];
  /** Entries for this fabric that no observed difference matched: the record is stale. */
  stale: Array<{ entry: ExplainedDifference; kind: string }>;
}

export function judge(differences: readonly Difference[], lists: Record<string, readonly ExplainedDifference[]>, fabric: string, scenarios: readonly string[]): Judgement {
  const judgement: Judgement = { explained: [], unexplained: [], stale: [] };
  const used = new Set<ExplainedDifference>();
  for (const difference of differences) {
    let found = false;
    for (const [kind, list] of Object.entries(lists)) {
      const entry = list.find((e) => (!e.fabrics || e.fabrics.includes(fabric)) && matches(e, difference));
      if (entry) {
        judgement.explained.push({ difference, entry, kind });
        used.add(entry);
        found = true;
        break;
      }
    }
    if (!found) judgement.unexplained.push(difference);
  }
  for (const [kind, list] of Object.entries(lists)) {
    for (const entry of list) {
      if ((!entry.fabrics || entry.fabrics.includes(fabric)) && scenarios.includes(entry.scenario) && !used.has(entry)) judgement.stale.push({ entry, kind });
    }
  }
  return judgement;
}

export function formatDifference(d: Difference): string {
  return `${d.scenario} — step ${d.step} (${d.label}) ${d.field}: LIO ${canonical(d.lio)} vs engine ${canonical(d.engine)}`;
}

// ---- context and captures (JSON) ----

export interface ContextJson {
  transportIds: Record<Initiator, string>;
  targetPorts: Record<Initiator, number>;
  luTargetPorts: number[];
}

/** TransportIDs as sg_persist --transport-id text, which parseTransportId reads back. */
function transportIdText(id: TransportId): string {
  switch (id.protocol) {
    case 'fc':
      return `fc,${id.portName.toString(16).padStart(16, '0')}`;
    case 'sas':
      return `sas,${id.sasAddress.toString(16).padStart(16, '0')}`;
    case 'iscsi':
      return id.isid === undefined ? `iscsi,${id.name}` : `iscsi,${id.name},i,0x${id.isid}`;
  }
}

export function contextToJson(ctx: ScenarioContext): ContextJson {
  return {
    transportIds: { A: transportIdText(ctx.transportIds.A), B: transportIdText(ctx.transportIds.B) },
    targetPorts: { ...ctx.targetPorts },
    luTargetPorts: [...ctx.luTargetPorts],
  };
}

export function contextFromJson(json: ContextJson): ScenarioContext {
  return {
    transportIds: { A: parseTransportId(json.transportIds.A), B: parseTransportId(json.transportIds.B) },
    targetPorts: { ...json.targetPorts },
    luTargetPorts: [...json.luTargetPorts],
  };
}

/** What the lab records from LIO (fixtures/differential/lio-<fabric>.json). */
export interface Capture {
  fabric: string;
  target: string;
  context: ContextJson;
  scenarios: Record<string, StepOutcome[]>;
}
