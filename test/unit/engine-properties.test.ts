// Property tests for the PR engine: random command sequences, well-formed and garbage,
// from 3 initiators over 2 target ports, checking the invariants SPC-4 implies after
// every step.

import { executeBytes } from '../support/pr-bytes';
import { expect } from 'chai';
import fc from 'fast-check';
import { encodePrInCdb, encodePrOutCdb } from '../../src/scsi/cdb';
import { PrInAction, PrOutAction, Status } from '../../src/scsi/constants';
import { encodePrOutParameters, encodeRegisterAndMoveParameters } from '../../src/scsi/parameter-list';
import { decodeReadFullStatus, decodeReadKeys } from '../../src/scsi/pr-in-data';
import { decodeSense, SenseKey } from '../../src/scsi';
import { transportIdKey, type TransportId } from '../../src/scsi/transport-id';
import {
  ALL_REGISTRANTS,
  defaultEngineOptions,
  initialState,
  isAllRegistrantsType,
  isReservationHolder,
  mediumAccess,
  nexusKey,
  parseState,
  registrationKey,
  serializeState,
  type Nexus,
  type PrState,
} from '../../src/engine';

const INITIATORS: TransportId[] = [
  { protocol: 'iscsi', name: 'iqn.2026-01.test:host-a', isid: '23d000000001' },
  { protocol: 'fc', portName: 0x21000024ff000002n },
  { protocol: 'sas', sasAddress: 0x500605b000000003n },
];
/** Named in SPEC_I_PT lists and REGISTER AND MOVE besides the three initiators. */
const OUTSIDER: TransportId = { protocol: 'iscsi', name: 'iqn.2026-01.test:outsider' };
const ID_POOL = [...INITIATORS, OUTSIDER];
const PORTS = [1, 2];
const NEXUSES: Nexus[] = INITIATORS.flatMap((initiator) => PORTS.map((targetPort) => ({ initiator, targetPort })));
const OPTIONS = { ...defaultEngineOptions(PORTS), maxRegistrations: 7 };

/**
 * A key, or a symbolic one resolved against the state when the command runs, so that
 * sequences reach registered, reserved and preempting states often instead of mostly
 * bouncing off RESERVATION CONFLICT.
 */
type KeyChoice = bigint | 'own' | { registrant: number };

type Command =
  | { kind: 'out'; nexus: number; action: number; type: number; scope: number; rk: KeyChoice; sark: KeyChoice; specIPT: boolean; allTgPt: boolean; aptpl: boolean; ids: number[]; flip?: [number, number] }
  | { kind: 'move'; nexus: number; rk: KeyChoice; sark: KeyChoice; destination: number; port: number; unreg: boolean; aptpl: boolean }
  | { kind: 'in'; nexus: number; action: number; allocationLength: number }
  | { kind: 'garbage'; nexus: number; cdb: Uint8Array; data: Uint8Array };

const key: fc.Arbitrary<KeyChoice> = fc.oneof(
  { weight: 2, arbitrary: fc.constantFrom<KeyChoice>(0n, 1n, 2n, 3n, 0xffffffffffffffffn) },
  { weight: 3, arbitrary: fc.constant<KeyChoice>('own') },
  { weight: 2, arbitrary: fc.nat(10).map((registrant): KeyChoice => ({ registrant })) },
);

/** Service action keys: mostly non-zero, so REGISTER registers and PREEMPT names someone. */
const serviceActionKey: fc.Arbitrary<KeyChoice> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<KeyChoice>(1n, 2n, 3n, 0xffffffffffffffffn) },
  { weight: 1, arbitrary: fc.constant<KeyChoice>(0n) },
  { weight: 2, arbitrary: fc.nat(10).map((registrant): KeyChoice => ({ registrant })) },
);

function resolveKey(choice: KeyChoice, state: PrState, nexus: Nexus): bigint {
  if (typeof choice === 'bigint') return choice;
  if (choice === 'own') return state.registrations.find((r) => registrationKey(r) === nexusKey(nexus))?.key ?? 0n;
  const regs = state.registrations;
  return regs.length === 0 ? BigInt(1 + (choice.registrant % 3)) : regs[choice.registrant % regs.length].key;
}
/**
 * 0..5 name a nexus directly; 6..11 name "a registered nexus" and 12..14 "the
 * reservation holder" (resolved against the state, falling back to a direct pick), so
 * commands often come from registrants and holders.
 */
const nexusIndex = fc.integer({ min: 0, max: 2 * NEXUSES.length + 2 });

function pickNexus(choice: number, state: PrState): Nexus {
  const direct = NEXUSES[choice % NEXUSES.length];
  if (choice < NEXUSES.length) return direct;
  const holder = state.reservation?.holder;
  const regs = state.registrations.filter((r) => choice < 2 * NEXUSES.length || registrationKey(r) === holder || holder === ALL_REGISTRANTS);
  if (regs.length === 0) return direct;
  const r = regs[choice % regs.length];
  return { initiator: r.initiator, targetPort: r.targetPort };
}

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  { weight: 8, arbitrary: fc.record({
    kind: fc.constant('out' as const),
    nexus: nexusIndex,
    action: fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(PrOutAction.REGISTER, PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY) },
      { weight: 12, arbitrary: fc.integer({ min: 0, max: 6 }) },
      { weight: 1, arbitrary: fc.integer({ min: 8, max: 31 }) },
    ),
    type: fc.oneof({ weight: 9, arbitrary: fc.constantFrom(1, 3, 5, 6, 7, 8) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 15 }) }),
    scope: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 15 }) }),
    rk: key,
    sark: serviceActionKey,
    specIPT: fc.oneof({ weight: 17, arbitrary: fc.constant(false) }, { weight: 3, arbitrary: fc.constant(true) }),
    allTgPt: fc.boolean(),
    aptpl: fc.boolean(),
    ids: fc.array(fc.integer({ min: 0, max: ID_POOL.length - 1 }), { maxLength: 3 }),
    // Now and then one byte of the parameter list is corrupted.
    flip: fc.oneof(
      { weight: 7, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.tuple(fc.nat(80), fc.integer({ min: 1, max: 255 })) },
    ),
  }) },
  { weight: 1, arbitrary: fc.record({
    kind: fc.constant('move' as const),
    nexus: nexusIndex,
    rk: key,
    sark: serviceActionKey,
    destination: fc.integer({ min: 0, max: ID_POOL.length - 1 }),
    port: fc.integer({ min: 0, max: 3 }),
    unreg: fc.boolean(),
    aptpl: fc.boolean(),
  }) },
  { weight: 2, arbitrary: fc.record({
    kind: fc.constant('in' as const),
    nexus: nexusIndex,
    action: fc.integer({ min: 0, max: 5 }),
    allocationLength: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.constant(0xffff)),
  }) },
  { weight: 1, arbitrary: fc.record({
    kind: fc.constant('garbage' as const),
    nexus: nexusIndex,
    cdb: fc.tuple(fc.constantFrom(0x5e, 0x5f, 0x00, 0xff), fc.uint8Array({ maxLength: 15 })).map(([op, rest]) => Uint8Array.from([op, ...rest])),
    data: fc.uint8Array({ maxLength: 80 }),
  }) },
);

function build(command: Command, state: PrState, nexus: Nexus): { cdb: Uint8Array; data: Uint8Array } {
  switch (command.kind) {
    case 'out': {
      const params = encodePrOutParameters({
        reservationKey: resolveKey(command.rk, state, nexus),
        serviceActionKey: resolveKey(command.sark, state, nexus),
        specIPT: command.specIPT,
        allTgPt: command.allTgPt,
        aptpl: command.aptpl,
        transportIds: command.specIPT ? command.ids.map((i) => ID_POOL[i]) : [],
      });
      if (command.flip && command.flip[0] < params.length) params[command.flip[0]] ^= command.flip[1];
      return { cdb: encodePrOutCdb({ action: command.action, type: command.type, scope: command.scope, parameterListLength: params.length }), data: params };
    }
    case 'move': {
      const params = encodeRegisterAndMoveParameters({
        reservationKey: resolveKey(command.rk, state, nexus),
        serviceActionKey: resolveKey(command.sark, state, nexus),
        unreg: command.unreg,
        aptpl: command.aptpl,
        relativeTargetPort: command.port,
        transportId: ID_POOL[command.destination],
      });
      return { cdb: encodePrOutCdb({ action: PrOutAction.REGISTER_AND_MOVE, parameterListLength: params.length }), data: params };
    }
    case 'in':
      return { cdb: encodePrInCdb({ action: command.action, allocationLength: command.allocationLength }), data: new Uint8Array(0) };
    case 'garbage':
      return { cdb: command.cdb, data: command.data };
  }
}

function checkInvariants(state: PrState): void {
  const keys = state.registrations.map(registrationKey);
  expect(new Set(keys).size, 'one registration per I_T nexus').to.equal(keys.length);
  expect(state.registrations.every((r) => r.key !== 0n), 'no registration has key 0').to.equal(true);
  expect(state.registrations.length).to.be.at.most(OPTIONS.maxRegistrations);
  const res = state.reservation;
  if (res) {
    if (isAllRegistrantsType(res.type)) {
      expect(res.holder).to.equal(ALL_REGISTRANTS);
      expect(state.registrations.length, 'an all-registrants reservation needs registrants').to.be.greaterThan(0);
    } else {
      expect(keys, 'the holder is registered').to.include(res.holder);
    }
  }
  for (const [nexus, list] of Object.entries(state.unitAttentions)) {
    expect(list.length, `UA list for ${nexus}`).to.be.greaterThan(0);
    expect(new Set(list).size).to.equal(list.length);
  }
  // JSON round trip is exact.
  const text = serializeState(state);
  expect(parseState(text)).to.deep.equal(state);
  expect(serializeState(parseState(text))).to.equal(text);
  // READ KEYS and READ FULL STATUS, as a nexus without pending UAs sees them, match the registrations.
  const quiet = { ...state, unitAttentions: {} };
  const keysIn = executeBytes(quiet, NEXUSES[0], encodePrInCdb({ action: PrInAction.READ_KEYS, allocationLength: 0xffff }), new Uint8Array(0), OPTIONS);
  const decodedKeys = decodeReadKeys(keysIn.result.dataIn);
  expect(decodedKeys.ok && decodedKeys.value.keys).to.deep.equal(state.registrations.map((r) => r.key));
  expect(decodedKeys.ok && decodedKeys.value.generation).to.equal(state.generation);
  const statusIn = executeBytes(quiet, NEXUSES[1], encodePrInCdb({ action: PrInAction.READ_FULL_STATUS, allocationLength: 0xffff }), new Uint8Array(0), OPTIONS);
  const status = decodeReadFullStatus(statusIn.result.dataIn);
  expect(status.ok).to.equal(true);
  if (status.ok) {
    // An ALL_TG_PT=1 descriptor stands for the initiator port's nexus on every target
    // port (RELATIVE TARGET PORT IDENTIFIER 0), all with its key and R_HOLDER; expanded,
    // the descriptors name each registered nexus exactly once.
    const described = status.value.descriptors.flatMap((d) => {
      if (d.allTgPt) expect(d.relativeTargetPort, 'ALL_TG_PT=1 descriptor port').to.equal(0);
      const ports = d.allTgPt ? PORTS : [d.relativeTargetPort];
      return ports.map((targetPort) => `${nexusKey({ initiator: d.transportId, targetPort })} ${d.key} ${d.holder}`);
    });
    const registered = state.registrations.map((r) => `${registrationKey(r)} ${r.key} ${isReservationHolder(state, registrationKey(r))}`);
    expect([...described].sort()).to.deep.equal([...registered].sort());
    // A merged descriptor only for registrations all made with ALL_TG_PT=1.
    for (const d of status.value.descriptors.filter((x) => x.allTgPt)) {
      const own = state.registrations.filter((r) => transportIdKey(r.initiator) === transportIdKey(d.transportId));
      expect(own.every((r) => r.allTgPt), 'merged registrations were all made with ALL_TG_PT=1').to.equal(true);
    }
  }
  // A holder may always read and write.
  for (const n of NEXUSES) {
    if (isReservationHolder(state, nexusKey(n))) expect([mediumAccess(state, n, 'read'), mediumAccess(state, n, 'write')]).to.deep.equal(['allowed', 'allowed']);
  }
}

describe('engine: properties over random command sequences (3 initiators x 2 target ports)', () => {
  it('never throws, keeps its invariants, and never moves PRgeneration backwards', () => {
    fc.assert(
      fc.property(fc.array(commandArb, { minLength: 10, maxLength: 60 }), (commands) => {
        let state = initialState();
        for (const command of commands) {
          const nexus = pickNexus(command.nexus, state);
          const { cdb, data } = build(command, state, nexus);
          const before = state;
          const outcome = executeBytes(state, nexus, cdb, data, OPTIONS);
          const { result } = outcome;
          expect([Status.GOOD, Status.CHECK_CONDITION, Status.RESERVATION_CONFLICT]).to.include(result.status);
          expect(outcome.changed).to.equal(outcome.state !== before);
          if (result.status === Status.RESERVATION_CONFLICT) expect(outcome.changed, 'a conflict changes nothing').to.equal(false);
          if (result.status === Status.CHECK_CONDITION) {
            const sense = decodeSense(result.sense);
            expect(sense).to.not.equal(undefined);
            // Only reporting a unit attention (which consumes it) changes state on CHECK CONDITION.
            if (sense!.key !== SenseKey.UNIT_ATTENTION) expect(outcome.changed).to.equal(false);
          }
          if (result.status !== Status.GOOD) expect(result.dataIn.length).to.equal(0);
          if (command.kind === 'in') expect(result.dataIn.length).to.be.at.most(command.allocationLength);
          if (cdb[0] === 0x5e && result.status === Status.GOOD) expect(outcome.changed, 'PR IN never changes state').to.equal(false);
          const step = outcome.state.generation - before.generation;
          expect(step === 0 || step === 1, `generation moved by ${step}`).to.equal(true);
          state = outcome.state;
          checkInvariants(state);
        }
      }),
      { numRuns: 120 },
    );
  });

  it('is deterministic: the same commands give the same states', () => {
    fc.assert(
      fc.property(fc.array(commandArb, { maxLength: 25 }), (commands) => {
        const run = (): string[] => {
          let state = initialState();
          return commands.map((command) => {
            const nexus = pickNexus(command.nexus, state);
            const { cdb, data } = build(command, state, nexus);
            const outcome = executeBytes(state, nexus, cdb, data, OPTIONS);
            state = outcome.state;
            return `${outcome.result.status}:${outcome.result.sense.toString('hex')}:${outcome.result.dataIn.toString('hex')}:${serializeState(state)}`;
          });
        };
        expect(run()).to.deep.equal(run());
      }),
      { numRuns: 40 },
    );
  });

  it('does not mutate the state it is given', () => {
    fc.assert(
      fc.property(fc.array(commandArb, { maxLength: 25 }), (commands) => {
        let state = initialState();
        for (const command of commands) {
          const nexus = pickNexus(command.nexus, state);
          const { cdb, data } = build(command, state, nexus);
          const snapshot = serializeState(state);
          const outcome = executeBytes(state, nexus, cdb, data, OPTIONS);
          expect(serializeState(state)).to.equal(snapshot);
          state = outcome.state;
        }
      }),
      { numRuns: 40 },
    );
  });
});
