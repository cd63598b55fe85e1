// SPC-4 persistent-reservation behaviour of the engine, one service action at a time:
// every success, every RESERVATION CONFLICT and ILLEGAL REQUEST case, unit attentions,
// PRgeneration, READ FULL STATUS and REPORT CAPABILITIES.

import { executeBytes } from '../support/pr-bytes';
import { expect } from 'chai';
import { encodePrInCdb, encodePrOutCdb } from '../../src/scsi/cdb';
import { PrInAction, PrOutAction, PrType, Status } from '../../src/scsi/constants';
import { encodePrOutParameters, encodeRegisterAndMoveParameters } from '../../src/scsi/parameter-list';
import { decodeReadKeys } from '../../src/scsi/pr-in-data';
import { Sense } from '../../src/scsi/sense';
import {
  capabilities,
  defaultEngineOptions,
  initialState,
  isRegistered,
  nexusKey,
  parseState,
  readKeys,
  registrationsOf,
  serializeState,
} from '../../src/engine';
import { transportIdKey } from '../../src/scsi/transport-id';
import { expectCheck, expectConflict, expectGood, expectUnitAttention, HOST_A, HOST_B, HOST_C, iscsi, Lu, nexus, reservedLu } from './engine-harness';

const A = nexus(HOST_A);
const B = nexus(HOST_B);
const C = nexus(HOST_C);
const A2 = nexus(HOST_A, 2);
const B2 = nexus(HOST_B, 2);
const KA = 0xaaaan;
const KB = 0xbbbbn;
const KC = 0xccccn;

function threeRegistered(): Lu {
  const lu = new Lu();
  expectGood(lu.register(A, 0n, KA));
  expectGood(lu.register(B, 0n, KB));
  expectGood(lu.register(C, 0n, KC));
  return lu;
}

/** Runs a command that must fail and checks the state did not move. */
function unchanged(lu: Lu, command: () => void): void {
  const before = serializeState(lu.state);
  command();
  expect(serializeState(lu.state)).to.equal(before);
}

describe('engine: SPC-4 persistent reservations', () => {
  describe('REGISTER', () => {
    it('registers an unregistered nexus with RK=0 and bumps PRgeneration', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA));
      expect(lu.readKeys(A)).to.deep.equal({ generation: 1, keys: [KA] });
      expect(isRegistered(lu.state, A)).to.equal(true);
      expect(isRegistered(lu.state, A2)).to.equal(false);
    });

    it('conflicts for an unregistered nexus with a non-zero RK', () => {
      const lu = new Lu();
      unchanged(lu, () => expectConflict(lu.register(A, 1n, KA)));
    });

    it('does nothing, successfully, for an unregistered nexus with SARK=0 (PRgeneration still counts it)', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, 0n));
      expect(lu.state.registrations).to.have.length(0);
      expect(lu.state.generation).to.equal(1);
    });

    it('conflicts on a wrong RK from a registered nexus (libiscsi ProutRegister.Simple)', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA));
      unchanged(lu, () => expectConflict(lu.register(A, KA + 1n, KB)));
      unchanged(lu, () => expectConflict(lu.register(A, 0n, KB)));
    });

    it('changes the key, and unregisters with SARK=0', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA));
      expectGood(lu.register(A, KA, KB));
      expect(readKeys(lu.state)).to.deep.equal({ generation: 2, keys: [KB] });
      expectGood(lu.register(A, KB, 0n));
      expect(readKeys(lu.state)).to.deep.equal({ generation: 3, keys: [] });
    });

    it('keeps the reservation when the holder changes its key', () => {
      const lu = threeRegistered();
      expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE));
      expectGood(lu.register(A, KA, 0x1234n));
      expect(lu.readReservation(B).reservation).to.deep.equal({ key: 0x1234n, scope: 0, type: PrType.WRITE_EXCLUSIVE });
    });

    it('refuses SPEC_I_PT from a registered nexus with INVALID FIELD IN PARAMETER LIST', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA));
      unchanged(lu, () => expectCheck(lu.register(A, KA, KB, { specIPT: true, transportIds: [HOST_B] }), Sense.INVALID_FIELD_IN_PARAMETER_LIST));
    });

    it('releases a registrants-only reservation when its holder unregisters, telling the other registrants', () => {
      const lu = threeRegistered();
      expectGood(lu.reserve(A, KA, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY));
      expectGood(lu.register(A, KA, 0n));
      expect(lu.state.reservation).to.equal(null);
      expect(lu.pendingUnitAttentions(B)).to.deep.equal(['RESERVATIONS_RELEASED']);
      expect(lu.pendingUnitAttentions(C)).to.deep.equal(['RESERVATIONS_RELEASED']);
      expect(lu.pendingUnitAttentions(A)).to.deep.equal([]);
    });

    it('releases a WE reservation silently when its holder unregisters', () => {
      const lu = threeRegistered();
      expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE));
      expectGood(lu.register(A, KA, 0n));
      expect(lu.state.reservation).to.equal(null);
      expect(lu.state.unitAttentions).to.deep.equal({});
    });
  });

  describe('REGISTER AND IGNORE EXISTING KEY', () => {
    it('ignores the RK for registered and unregistered nexuses', () => {
      const lu = new Lu();
      expectGood(lu.registerIgnore(A, KA, {}, 0x999n));
      expectGood(lu.registerIgnore(A, KB, {}, 0x777n));
      expect(readKeys(lu.state)).to.deep.equal({ generation: 2, keys: [KB] });
      expectGood(lu.registerIgnore(A, 0n));
      expect(readKeys(lu.state)).to.deep.equal({ generation: 3, keys: [] });
    });

    it('refuses SPEC_I_PT with INVALID FIELD IN PARAMETER LIST (SPEC_I_PT is for REGISTER only)', () => {
      const lu = new Lu();
      unchanged(lu, () => expectCheck(lu.registerIgnore(A, KA, { specIPT: true, transportIds: [HOST_B] }), Sense.INVALID_FIELD_IN_PARAMETER_LIST));
    });
  });

  describe('ALL_TG_PT', () => {
    it('registers the initiator on every target port of the LU, and READ FULL STATUS reports them as one ALL_TG_PT descriptor', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA, { allTgPt: true }));
      expect(isRegistered(lu.state, A)).to.equal(true);
      expect(isRegistered(lu.state, A2)).to.equal(true);
      expect(registrationsOf(lu.state, transportIdKey(HOST_A)).map((r) => r.targetPort)).to.deep.equal([1, 2]);
      expect(lu.readKeys(B).keys, 'READ KEYS lists each registered I_T nexus').to.deep.equal([KA, KA]);
      // SPC-4 full status descriptor: ALL_TG_PT=1 "represents all the I_T nexuses" of the
      // initiator port with every target port; RELATIVE TARGET PORT IDENTIFIER is then undefined (0).
      expect(lu.readFullStatus(B)).to.deep.equal({
        generation: 1,
        descriptors: [{ key: KA, allTgPt: true, holder: false, scope: 0, type: 0, relativeTargetPort: 0, transportId: HOST_A }],
      });
      expect(lu.state.generation).to.equal(1);
    });

    it('READ FULL STATUS keeps R_HOLDER on the merged descriptor under an all-registrants reservation', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA, { allTgPt: true }));
      expectGood(lu.register(B, 0n, KB));
      expectGood(lu.reserve(A2, KA, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS));
      const type = PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
      expect(lu.readFullStatus(B).descriptors).to.deep.equal([
        { key: KA, allTgPt: true, holder: true, scope: 0, type, relativeTargetPort: 0, transportId: HOST_A },
        { key: KB, allTgPt: false, holder: true, scope: 0, type, relativeTargetPort: 1, transportId: HOST_B },
      ]);
    });

    for (const [holderName, holder, other] of [['port 1', A, A2], ['port 2', A2, A]] as const) {
      it(`READ FULL STATUS reports each nexus singly (ALL_TG_PT=0) when the one on ${holderName} alone holds a Write Exclusive reservation`, () => {
        const lu = new Lu();
        expectGood(lu.register(A, 0n, KA, { allTgPt: true }));
        expectGood(lu.reserve(holder, KA, PrType.WRITE_EXCLUSIVE));
        // SPC-4: ALL_TG_PT=1 needs every nexus it stands for to be a holder or none to be;
        // R_HOLDER and the holder's own RELATIVE TARGET PORT IDENTIFIER identify it.
        const descriptors = lu.readFullStatus(B).descriptors;
        expect(descriptors).to.have.deep.members([
          { key: KA, allTgPt: false, holder: true, scope: 0, type: PrType.WRITE_EXCLUSIVE, relativeTargetPort: holder.targetPort, transportId: HOST_A },
          { key: KA, allTgPt: false, holder: false, scope: 0, type: 0, relativeTargetPort: other.targetPort, transportId: HOST_A },
        ]);
        expect(descriptors).to.have.length(2);
        expectGood(lu.release(holder, KA, PrType.WRITE_EXCLUSIVE));
        expect(lu.readFullStatus(B).descriptors, 'merged again once nobody holds it').to.deep.equal([
          { key: KA, allTgPt: true, holder: false, scope: 0, type: 0, relativeTargetPort: 0, transportId: HOST_A },
        ]);
      });
    }

    it('READ FULL STATUS reports the nexuses singly once they no longer cover every target port of the LU', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA, { allTgPt: true }));
      expectGood(lu.register(A2, KA, 0n));
      expect(lu.readFullStatus(B).descriptors, 'one port unregistered').to.deep.equal([
        { key: KA, allTgPt: false, holder: false, scope: 0, type: 0, relativeTargetPort: 1, transportId: HOST_A },
      ]);
      const twoPorts = new Lu();
      expectGood(twoPorts.register(A, 0n, KA, { allTgPt: true }));
      const grown = new Lu(defaultEngineOptions([1, 2, 3]));
      grown.state = twoPorts.state;
      expect(grown.readFullStatus(B).descriptors.map((d) => [d.allTgPt, d.relativeTargetPort]), 'the LU gained target port 3').to.deep.equal([
        [false, 1],
        [false, 2],
      ]);
    });

    for (const [what, reRegister] of [
      ['REGISTER', (lu: Lu, sark: bigint) => lu.register(A2, KA, sark)],
      ['REGISTER AND IGNORE EXISTING KEY', (lu: Lu, sark: bigint) => lu.registerIgnore(A2, sark)],
    ] as const) {
      it(`${what} with ALL_TG_PT=0 on a nexus registered with ALL_TG_PT=1 makes that registration single-nexus`, () => {
        const lu = new Lu();
        expectGood(lu.register(A, 0n, KA, { allTgPt: true }));
        expectGood(reRegister(lu, KC));
        expect(lu.state.registrations.map((r) => [r.targetPort, r.key, r.allTgPt])).to.deep.equal([
          [1, KA, true],
          [2, KC, false],
        ]);
        expect(lu.readFullStatus(B).descriptors.map((d) => [d.relativeTargetPort, d.key, d.allTgPt])).to.deep.equal([
          [1, KA, false],
          [2, KC, false],
        ]);
        // Even back on the shared key, port 2's registration was made with ALL_TG_PT=0.
        expectGood(lu.register(A2, KC, KA));
        expect(lu.state.registrations.map((r) => [r.targetPort, r.key, r.allTgPt])).to.deep.equal([
          [1, KA, true],
          [2, KA, false],
        ]);
        expect(lu.readFullStatus(B).descriptors.map((d) => [d.relativeTargetPort, d.allTgPt])).to.deep.equal([
          [1, false],
          [2, false],
        ]);
        // A new REGISTER with ALL_TG_PT=1 re-keys every port and merges them again.
        expectGood(lu.register(A, KA, KB, { allTgPt: true }));
        expect(lu.state.registrations.map((r) => [r.targetPort, r.key, r.allTgPt])).to.deep.equal([
          [1, KB, true],
          [2, KB, true],
        ]);
        expect(lu.readFullStatus(B).descriptors.map((d) => [d.relativeTargetPort, d.key, d.allTgPt])).to.deep.equal([[0, KB, true]]);
      });
    }

    it('REGISTER AND MOVE makes the destination nexus a single-nexus registration', () => {
      const lu = new Lu();
      expectGood(lu.register(B, 0n, KB, { allTgPt: true }));
      expectGood(lu.register(A, 0n, KA));
      expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE));
      expectGood(lu.registerAndMove(A, KA, KB, HOST_B, 1));
      expect(lu.state.registrations.filter((r) => transportIdKey(r.initiator) === transportIdKey(HOST_B)).map((r) => [r.targetPort, r.allTgPt])).to.deep.equal([
        [1, false],
        [2, true],
      ]);
    });

    it('unregisters on every port with ALL_TG_PT=1, and only on the receiving port without it', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA, { allTgPt: true }));
      expectGood(lu.register(A2, KA, 0n));
      expect(registrationsOf(lu.state, transportIdKey(HOST_A)).map((r) => r.targetPort)).to.deep.equal([1]);
      expectGood(lu.register(A2, 0n, KA, { allTgPt: true }));
      expectGood(lu.register(A, KA, 0n, { allTgPt: true }));
      expect(lu.state.registrations).to.have.length(0);
    });

    it('is ignored by RESERVE', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA));
      expectGood(lu.out(A, PrOutAction.RESERVE, KA, 0n, PrType.WRITE_EXCLUSIVE, { allTgPt: true }));
      expect(lu.state.reservation).to.deep.equal({ holder: nexusKey(A), type: PrType.WRITE_EXCLUSIVE, scope: 0 });
    });
  });

  describe('SPEC_I_PT', () => {
    it('registers the sender and every listed initiator on the receiving port', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA, { specIPT: true, transportIds: [HOST_B, HOST_C] }));
      expect(lu.state.registrations.map((r) => [transportIdKey(r.initiator), r.targetPort, r.key])).to.deep.equal([
        [transportIdKey(HOST_A), 1, KA],
        [transportIdKey(HOST_B), 1, KA],
        [transportIdKey(HOST_C), 1, KA],
      ]);
      expect(lu.state.generation).to.equal(1);
    });

    it('registers them on every port with ALL_TG_PT', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA, { specIPT: true, allTgPt: true, transportIds: [HOST_B, { protocol: 'fc', portName: 0x5001n }] }));
      expect(lu.state.registrations).to.have.length(6);
      expect(isRegistered(lu.state, nexus({ protocol: 'fc', portName: 0x5001n }, 2))).to.equal(true);
    });

    it('ignores the sender named in its own list, and duplicates', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA, { specIPT: true, transportIds: [HOST_A, HOST_B, iscsi('IQN.2026-01.TEST:HOST-B')] }));
      expect(lu.state.registrations).to.have.length(2);
    });

    it('refuses a list naming an already registered nexus, registering nobody', () => {
      const lu = new Lu();
      expectGood(lu.register(C, 0n, KC));
      unchanged(lu, () => expectCheck(lu.register(A, 0n, KA, { specIPT: true, transportIds: [HOST_B, HOST_C] }), Sense.INVALID_FIELD_IN_PARAMETER_LIST));
    });

    it('is refused for every service action but REGISTER', () => {
      const lu = threeRegistered();
      for (const action of [PrOutAction.RESERVE, PrOutAction.RELEASE, PrOutAction.CLEAR, PrOutAction.PREEMPT, PrOutAction.PREEMPT_AND_ABORT]) {
        unchanged(lu, () => expectCheck(lu.out(A, action, KA, KB, PrType.WRITE_EXCLUSIVE, { specIPT: true, transportIds: [] }), Sense.INVALID_FIELD_IN_PARAMETER_LIST));
      }
    });
  });

  describe('registration resources', () => {
    it('answers INSUFFICIENT REGISTRATION RESOURCES beyond maxRegistrations, all or nothing', () => {
      const lu = new Lu({ ...defaultEngineOptions([1, 2]), maxRegistrations: 2 });
      expectGood(lu.register(A, 0n, KA));
      expectGood(lu.register(B, 0n, KB));
      unchanged(lu, () => expectCheck(lu.register(C, 0n, KC), Sense.INSUFFICIENT_REGISTRATION_RESOURCES));
      expectGood(lu.register(B, KB, 0n));
      unchanged(lu, () => expectCheck(lu.register(B, 0n, KB, { allTgPt: true }), Sense.INSUFFICIENT_REGISTRATION_RESOURCES));
      unchanged(lu, () => expectCheck(lu.register(B, 0n, KB, { specIPT: true, transportIds: [HOST_C] }), Sense.INSUFFICIENT_REGISTRATION_RESOURCES));
      expectGood(lu.register(B, 0n, KB));
    });
  });

  describe('APTPL', () => {
    it('records the APTPL bit of the latest registering command and reports it as PTPL_A', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA, { aptpl: true }));
      expect(lu.state.aptpl).to.equal(true);
      expect(lu.state.registrations[0].aptpl).to.equal(true);
      expect(lu.reportCapabilities(A).ptplA).to.equal(true);
      expectGood(lu.register(B, 0n, KB));
      expect(lu.reportCapabilities(A).ptplA).to.equal(false);
    });

    it('is ignored by RESERVE', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA));
      expectGood(lu.out(A, PrOutAction.RESERVE, KA, 0n, PrType.WRITE_EXCLUSIVE, { aptpl: true }));
      expect(lu.state.aptpl).to.equal(false);
    });
  });

  describe('RESERVE', () => {
    it('reserves for a registered nexus with its key, without bumping PRgeneration', () => {
      const lu = threeRegistered();
      expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY));
      expect(lu.readReservation(B)).to.deep.equal({ generation: 3, reservation: { key: KA, scope: 0, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY } });
    });

    it('conflicts for an unregistered nexus or a wrong key', () => {
      const lu = threeRegistered();
      unchanged(lu, () => expectConflict(lu.reserve(nexus(iscsi('iqn.x')), 0n, PrType.WRITE_EXCLUSIVE)));
      unchanged(lu, () => expectConflict(lu.reserve(A, KB, PrType.WRITE_EXCLUSIVE)));
    });

    it('is a no-op for the holder with the same type, and a conflict with another type or for others', () => {
      const lu = threeRegistered();
      expectGood(lu.reserve(A, KA, PrType.EXCLUSIVE_ACCESS));
      const outcome = executeBytes(lu.state, A, encodePrOutCdb({ action: PrOutAction.RESERVE, type: PrType.EXCLUSIVE_ACCESS, parameterListLength: 24 }), encodePrOutParameters({ reservationKey: KA, serviceActionKey: 0n, specIPT: false, allTgPt: false, aptpl: false, transportIds: [] }), lu.options);
      expect(outcome.result.status).to.equal(Status.GOOD);
      expect(outcome.changed).to.equal(false);
      unchanged(lu, () => expectConflict(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE)));
      unchanged(lu, () => expectConflict(lu.reserve(B, KB, PrType.EXCLUSIVE_ACCESS)));
    });

    for (const type of [0, 2, 4, 9, 0xf]) {
      it(`refuses type ${type} with INVALID FIELD IN CDB`, () => {
        const lu = threeRegistered();
        unchanged(lu, () => expectCheck(lu.reserve(A, KA, type), Sense.INVALID_FIELD_IN_CDB));
      });
    }

    it('refuses a scope other than LU_SCOPE with INVALID FIELD IN CDB', () => {
      const lu = threeRegistered();
      for (const action of [PrOutAction.RESERVE, PrOutAction.RELEASE, PrOutAction.PREEMPT, PrOutAction.PREEMPT_AND_ABORT]) {
        unchanged(lu, () => expectCheck(lu.out(A, action, KA, KB, PrType.WRITE_EXCLUSIVE, {}, 1), Sense.INVALID_FIELD_IN_CDB));
      }
    });
  });

  describe('RELEASE', () => {
    it('releases for the holder without bumping PRgeneration; no UA for WE/EA', () => {
      const lu = threeRegistered();
      expectGood(lu.reserve(A, KA, PrType.EXCLUSIVE_ACCESS));
      expectGood(lu.release(A, KA, PrType.EXCLUSIVE_ACCESS));
      expect(lu.state.reservation).to.equal(null);
      expect(lu.state.generation).to.equal(3);
      expect(lu.state.unitAttentions).to.deep.equal({});
    });

    for (const type of [PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS]) {
      it(`gives every other registrant RESERVATIONS RELEASED for type ${type}`, () => {
        const lu = threeRegistered();
        expectGood(lu.reserve(A, KA, type));
        expectGood(lu.release(A, KA, type));
        expect(lu.state.unitAttentions).to.deep.equal({ [nexusKey(B)]: ['RESERVATIONS_RELEASED'], [nexusKey(C)]: ['RESERVATIONS_RELEASED'] });
      });
    }

    it('is GOOD and changes nothing without a reservation or from a non-holder', () => {
      const lu = threeRegistered();
      unchanged(lu, () => expectGood(lu.release(A, KA, PrType.WRITE_EXCLUSIVE)));
      expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE));
      unchanged(lu, () => expectGood(lu.release(B, KB, PrType.WRITE_EXCLUSIVE)));
      unchanged(lu, () => expectGood(lu.release(B, KB, PrType.EXCLUSIVE_ACCESS)));
    });

    it('answers the holder with the wrong type with INVALID RELEASE OF PERSISTENT RESERVATION', () => {
      const lu = threeRegistered();
      expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE));
      unchanged(lu, () => expectCheck(lu.release(A, KA, PrType.EXCLUSIVE_ACCESS), Sense.INVALID_RELEASE_OF_PERSISTENT_RESERVATION));
    });

    it('conflicts for an unregistered nexus or a wrong key', () => {
      const lu = threeRegistered();
      expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE));
      unchanged(lu, () => expectConflict(lu.release(A, KB, PrType.WRITE_EXCLUSIVE)));
      unchanged(lu, () => expectConflict(lu.release(A2, KA, PrType.WRITE_EXCLUSIVE)));
    });
  });

  describe('CLEAR', () => {
    it('removes every registration and the reservation, preempting the others (libiscsi ProutClear.Simple)', () => {
      const lu = threeRegistered();
      expectGood(lu.reserve(B, KB, PrType.WRITE_EXCLUSIVE));
      expectGood(lu.clear(A, KA));
      expect(lu.state.registrations).to.deep.equal([]);
      expect(lu.state.reservation).to.equal(null);
      expect(lu.state.generation).to.equal(4);
      expect(lu.state.unitAttentions).to.deep.equal({ [nexusKey(B)]: ['RESERVATIONS_PREEMPTED'], [nexusKey(C)]: ['RESERVATIONS_PREEMPTED'] });
    });

    it('conflicts for an unregistered nexus or a wrong key', () => {
      const lu = threeRegistered();
      unchanged(lu, () => expectConflict(lu.clear(A, KB)));
      unchanged(lu, () => expectConflict(lu.clear(A2, KA)));
    });
  });

  for (const abort of [false, true]) {
    describe(abort ? 'PREEMPT AND ABORT' : 'PREEMPT', () => {
      it('removes the registrations with SARK when nothing is reserved (libiscsi ProutPreempt.RemoveRegistration)', () => {
        const lu = threeRegistered();
        expectGood(lu.preempt(A, KA, KB, PrType.WRITE_EXCLUSIVE, abort));
        expect(readKeys(lu.state)).to.deep.equal({ generation: 4, keys: [KA, KC] });
        expect(lu.state.reservation).to.equal(null);
        expect(lu.state.unitAttentions).to.deep.equal({ [nexusKey(B)]: ['REGISTRATIONS_PREEMPTED'] });
      });

      it('refuses SARK=0 without an all-registrants reservation (INVALID FIELD IN PARAMETER LIST)', () => {
        const lu = threeRegistered();
        unchanged(lu, () => expectCheck(lu.preempt(A, KA, 0n, PrType.WRITE_EXCLUSIVE, abort), Sense.INVALID_FIELD_IN_PARAMETER_LIST));
        expectGood(lu.reserve(B, KB, PrType.WRITE_EXCLUSIVE));
        unchanged(lu, () => expectCheck(lu.preempt(A, KA, 0n, PrType.WRITE_EXCLUSIVE, abort), Sense.INVALID_FIELD_IN_PARAMETER_LIST));
      });

      it('conflicts when SARK names no registration, or the sender is not registered or gives a wrong key', () => {
        const lu = threeRegistered();
        unchanged(lu, () => expectConflict(lu.preempt(A, KA, 0x42n, PrType.WRITE_EXCLUSIVE, abort)));
        unchanged(lu, () => expectConflict(lu.preempt(A, KC, KB, PrType.WRITE_EXCLUSIVE, abort)));
        unchanged(lu, () => expectConflict(lu.preempt(A2, KA, KB, PrType.WRITE_EXCLUSIVE, abort)));
      });

      it('takes over the holder’s reservation with the new type, telling the preempted and the others', () => {
        const lu = threeRegistered();
        expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY));
        expectGood(lu.preempt(B, KB, KA, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, abort));
        expect(lu.state.reservation).to.deep.equal({ holder: nexusKey(B), type: PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, scope: 0 });
        expect(readKeys(lu.state).keys).to.deep.equal([KB, KC]);
        expect(lu.state.unitAttentions).to.deep.equal({ [nexusKey(A)]: ['REGISTRATIONS_PREEMPTED'], [nexusKey(C)]: ['RESERVATIONS_RELEASED'] });
        expect(lu.state.generation).to.equal(4);
      });

      it('tells only the preempted when the type stays the same (fence_scsi style)', () => {
        const lu = threeRegistered();
        expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY));
        expectGood(lu.preempt(B, KB, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, abort));
        expect(lu.state.unitAttentions).to.deep.equal({ [nexusKey(A)]: ['REGISTRATIONS_PREEMPTED'] });
      });

      it('removes a non-holder’s registration and leaves the reservation alone', () => {
        const lu = threeRegistered();
        expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE));
        expectGood(lu.preempt(B, KB, KC, PrType.EXCLUSIVE_ACCESS, abort));
        expect(lu.state.reservation).to.deep.equal({ holder: nexusKey(A), type: PrType.WRITE_EXCLUSIVE, scope: 0 });
        expect(readKeys(lu.state).keys).to.deep.equal([KA, KB]);
      });

      it('with SARK=0 preempts an all-registrants reservation and every other registration', () => {
        const lu = threeRegistered();
        expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS));
        expectGood(lu.preempt(B, KB, 0n, PrType.WRITE_EXCLUSIVE, abort));
        expect(lu.state.reservation).to.deep.equal({ holder: nexusKey(B), type: PrType.WRITE_EXCLUSIVE, scope: 0 });
        expect(readKeys(lu.state).keys).to.deep.equal([KB]);
        expect(lu.state.unitAttentions).to.deep.equal({ [nexusKey(A)]: ['REGISTRATIONS_PREEMPTED'], [nexusKey(C)]: ['REGISTRATIONS_PREEMPTED'] });
      });

      it('with a non-zero SARK removes only those registrations under an all-registrants reservation', () => {
        const lu = threeRegistered();
        expectGood(lu.reserve(A, KA, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS));
        expectGood(lu.preempt(B, KB, KC, PrType.WRITE_EXCLUSIVE, abort));
        expect(lu.state.reservation?.type).to.equal(PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS);
        expect(readKeys(lu.state).keys).to.deep.equal([KA, KB]);
      });

      it('self-preempts: the holder changes type, keeps its registration, and drops others sharing its key', () => {
        const lu = new Lu();
        expectGood(lu.register(A, 0n, KA, { allTgPt: true }));
        expectGood(lu.register(B, 0n, KB));
        expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE));
        expectGood(lu.preempt(A, KA, KA, PrType.EXCLUSIVE_ACCESS, abort));
        expect(lu.state.reservation).to.deep.equal({ holder: nexusKey(A), type: PrType.EXCLUSIVE_ACCESS, scope: 0 });
        expect(lu.state.registrations.map((r) => nexusKey(r))).to.deep.equal([nexusKey(A), nexusKey(B)]);
        expect(lu.state.unitAttentions).to.deep.equal({ [nexusKey(A2)]: ['REGISTRATIONS_PREEMPTED'], [nexusKey(B)]: ['RESERVATIONS_RELEASED'] });
      });
    });
  }

  it('PREEMPT AND ABORT leaves the same state as PREEMPT', () => {
    const run = (abort: boolean): string => {
      const lu = threeRegistered();
      expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY));
      expectGood(lu.preempt(C, KC, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, abort));
      return serializeState(lu.state);
    };
    expect(run(true)).to.equal(run(false));
  });

  describe('REGISTER AND MOVE', () => {
    const held = (type: number = PrType.WRITE_EXCLUSIVE): Lu => reservedLu([A, KA], type, [C, KC]);

    it('registers the destination I_T nexus and moves the reservation to it', () => {
      const lu = held(PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY);
      expectGood(lu.registerAndMove(A, KA, KB, HOST_B, 2));
      expect(lu.state.reservation).to.deep.equal({ holder: nexusKey(B2), type: PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, scope: 0 });
      expect(isRegistered(lu.state, A)).to.equal(true);
      expect(lu.readReservation(C).reservation).to.deep.equal({ key: KB, scope: 0, type: PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY });
      expect(lu.state.generation).to.equal(3);
    });

    it('unregisters the sender with UNREG and records APTPL', () => {
      const lu = held();
      expectGood(lu.registerAndMove(A, KA, KB, HOST_B, 1, { unreg: true, aptpl: true }));
      expect(isRegistered(lu.state, A)).to.equal(false);
      expect(lu.state.reservation?.holder).to.equal(nexusKey(B));
      expect(lu.state.aptpl).to.equal(true);
    });

    it('re-keys a destination that is already registered', () => {
      const lu = held();
      expectGood(lu.registerAndMove(A, KA, 0x77n, HOST_C, 1));
      expect(readKeys(lu.state).keys).to.deep.equal([KA, 0x77n]);
      expect(lu.state.reservation?.holder).to.equal(nexusKey(C));
    });

    it('conflicts for a non-holder, an unregistered sender, a wrong key, and all-registrants reservations', () => {
      const lu = held();
      unchanged(lu, () => expectConflict(lu.registerAndMove(C, KC, KB, HOST_B, 1)));
      unchanged(lu, () => expectConflict(lu.registerAndMove(B, 0n, KB, HOST_B, 2)));
      unchanged(lu, () => expectConflict(lu.registerAndMove(A, KC, KB, HOST_B, 1)));
      const ar = held(PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS);
      unchanged(ar, () => expectConflict(ar.registerAndMove(A, KA, KB, HOST_B, 1)));
    });

    it('answers the ILLEGAL REQUEST cases', () => {
      const lu = held();
      unchanged(lu, () => expectCheck(lu.registerAndMove(A, KA, 0n, HOST_B, 1), Sense.INVALID_FIELD_IN_PARAMETER_LIST));
      unchanged(lu, () => expectCheck(lu.registerAndMove(A, KA, KB, HOST_B, 3), Sense.INVALID_FIELD_IN_PARAMETER_LIST));
      unchanged(lu, () => expectCheck(lu.registerAndMove(A, KA, KB, HOST_A, 2), Sense.INVALID_FIELD_IN_PARAMETER_LIST));
      unchanged(lu, () => expectCheck(lu.registerAndMove(A, KA, KB, iscsi('IQN.2026-01.TEST:HOST-A'), 1), Sense.INVALID_FIELD_IN_PARAMETER_LIST));
      const free = new Lu();
      expectGood(free.register(A, 0n, KA));
      unchanged(free, () => expectCheck(free.registerAndMove(A, KA, KB, HOST_B, 1), Sense.INVALID_FIELD_IN_CDB));
      const full = held();
      full.options = { ...full.options, maxRegistrations: 2 };
      unchanged(full, () => expectCheck(full.registerAndMove(A, KA, KB, HOST_B, 1), Sense.INSUFFICIENT_REGISTRATION_RESOURCES));
    });

    it('answers a list length that disagrees with the CDB or the TransportID length', () => {
      const lu = held();
      const params = encodeRegisterAndMoveParameters({ reservationKey: KA, serviceActionKey: KB, unreg: false, aptpl: false, relativeTargetPort: 1, transportId: HOST_B });
      const cut = params.subarray(0, params.length - 4);
      unchanged(lu, () => expectCheck(lu.run(A, encodePrOutCdb({ action: PrOutAction.REGISTER_AND_MOVE, parameterListLength: cut.length }), cut), Sense.PARAMETER_LIST_LENGTH_ERROR));
    });
  });

  describe('command framing', () => {
    it('answers every PR IN service action 0..3 and refuses the rest (libiscsi PrinServiceactionRange)', () => {
      const lu = threeRegistered();
      for (let action = 0; action < 32; action++) {
        const result = lu.prIn(A, action);
        if (action <= 3) expectGood(result);
        else expectCheck(result, Sense.INVALID_FIELD_IN_CDB);
      }
    });

    it('refuses REPLACE LOST RESERVATION and reserved PR OUT service actions with INVALID FIELD IN CDB', () => {
      const lu = threeRegistered();
      for (const action of [PrOutAction.REPLACE_LOST_RESERVATION, 9, 0x1f]) unchanged(lu, () => expectCheck(lu.out(A, action, KA, 0n, 1), Sense.INVALID_FIELD_IN_CDB));
    });

    it('refuses other opcodes with INVALID OPCODE and short CDBs with INVALID FIELD IN CDB', () => {
      const lu = new Lu();
      expectCheck(lu.run(A, Buffer.from([0x00, 0, 0, 0, 0, 0])), Sense.INVALID_OPCODE);
      expectCheck(lu.run(A, Buffer.alloc(0)), Sense.INVALID_OPCODE);
      expectCheck(lu.run(A, Buffer.from([0x5e, 0, 0, 0, 0, 0, 0, 0x10])), Sense.INVALID_FIELD_IN_CDB);
    });

    it('accepts the 16-byte CDB the qemu-pr-helper protocol carries', () => {
      const lu = threeRegistered();
      const cdb = Buffer.concat([encodePrInCdb({ action: PrInAction.READ_KEYS, allocationLength: 100 }), Buffer.alloc(6)]);
      expectGood(lu.run(A, cdb));
    });

    it('answers parameter list length errors', () => {
      const lu = threeRegistered();
      const params = encodePrOutParameters({ reservationKey: KA, serviceActionKey: 0n, specIPT: false, allTgPt: false, aptpl: false, transportIds: [] });
      const cdb = (length: number) => encodePrOutCdb({ action: PrOutAction.RESERVE, type: PrType.WRITE_EXCLUSIVE, parameterListLength: length });
      unchanged(lu, () => expectCheck(lu.run(A, cdb(23), params), Sense.PARAMETER_LIST_LENGTH_ERROR));
      unchanged(lu, () => expectCheck(lu.run(A, cdb(0), Buffer.alloc(0)), Sense.PARAMETER_LIST_LENGTH_ERROR));
      unchanged(lu, () => expectCheck(lu.run(A, cdb(25), Buffer.concat([params, Buffer.alloc(1)])), Sense.PARAMETER_LIST_LENGTH_ERROR));
      // The CDB promises more than the transport delivered.
      unchanged(lu, () => expectCheck(lu.run(A, cdb(24), params.subarray(0, 20)), Sense.PARAMETER_LIST_LENGTH_ERROR));
      unchanged(lu, () => expectCheck(lu.run(A, cdb(0xffffffff), params), Sense.PARAMETER_LIST_LENGTH_ERROR));
      // Extra bytes beyond the CDB's length are not part of the list.
      expectGood(lu.run(A, cdb(24), Buffer.concat([params, Buffer.alloc(8)])));
    });

    it('honours the PR IN allocation length while the header reports the full length', () => {
      const lu = threeRegistered();
      const result = lu.prIn(A, PrInAction.READ_KEYS, 12);
      expectGood(result);
      expect(result.dataIn.length).to.equal(12);
      expect(decodeReadKeys(result.dataIn)).to.deep.equal({ ok: true, value: { generation: 3, keys: [] }, truncated: true });
      expect(result.dataIn.readUInt32BE(4)).to.equal(24);
      expect(lu.prIn(A, PrInAction.READ_FULL_STATUS, 0).dataIn.length).to.equal(0);
    });
  });

  describe('unit attentions', () => {
    it('reports a pending unit attention first, consumes it, and then runs commands normally', () => {
      const lu = threeRegistered();
      expectGood(lu.clear(A, KA));
      expectUnitAttention(lu.prIn(B, PrInAction.READ_KEYS), 'RESERVATIONS_PREEMPTED');
      expect(lu.pendingUnitAttentions(B)).to.deep.equal([]);
      expect(lu.readKeys(B)).to.deep.equal({ generation: 4, keys: [] });
      // The UA preempts a PR OUT too, which then has not run.
      expectUnitAttention(lu.register(C, 0n, KC), 'RESERVATIONS_PREEMPTED');
      expect(isRegistered(lu.state, C)).to.equal(false);
      expectGood(lu.register(C, 0n, KC));
    });

    it('queues different conditions in order and does not repeat an identical pending one', () => {
      const lu = threeRegistered();
      expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY));
      expectGood(lu.release(A, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY));
      expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY));
      expectGood(lu.release(A, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY));
      expectGood(lu.preempt(A, KA, KC, PrType.WRITE_EXCLUSIVE, false));
      expect(lu.pendingUnitAttentions(C)).to.deep.equal(['RESERVATIONS_RELEASED', 'REGISTRATIONS_PREEMPTED']);
      expectUnitAttention(lu.prIn(C, 0), 'RESERVATIONS_RELEASED');
      expectUnitAttention(lu.prIn(C, 0), 'REGISTRATIONS_PREEMPTED');
      expectGood(lu.prIn(C, 0));
    });

    it('establishes none when unitAttentions is off', () => {
      const lu = new Lu({ ...defaultEngineOptions([1, 2]), unitAttentions: false });
      expectGood(lu.register(A, 0n, KA));
      expectGood(lu.register(B, 0n, KB));
      expectGood(lu.clear(A, KA));
      expect(lu.state.unitAttentions).to.deep.equal({});
    });

    it('keeps pending unit attentions per I_T nexus, not per host', () => {
      const lu = new Lu();
      expectGood(lu.register(A, 0n, KA));
      expectGood(lu.register(B, 0n, KB, { allTgPt: true }));
      expectGood(lu.clear(A, KA));
      expect(Object.keys(lu.state.unitAttentions)).to.deep.equal([nexusKey(B), nexusKey(B2)]);
      expectUnitAttention(lu.prIn(B2, 0), 'RESERVATIONS_PREEMPTED');
      expect(lu.pendingUnitAttentions(B)).to.deep.equal(['RESERVATIONS_PREEMPTED']);
    });
  });

  it('counts PRgeneration for REGISTER, REGISTER AND IGNORE, CLEAR, PREEMPT(-AND-ABORT), REGISTER AND MOVE only', () => {
    const lu = new Lu();
    const steps: Array<[string, () => void, number]> = [
      ['REGISTER', () => expectGood(lu.register(A, 0n, KA)), 1],
      ['REGISTER AND IGNORE', () => expectGood(lu.registerIgnore(B, KB)), 2],
      ['RESERVE', () => expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE)), 2],
      ['RELEASE', () => expectGood(lu.release(A, KA, PrType.WRITE_EXCLUSIVE)), 2],
      ['READ KEYS', () => expectGood(lu.prIn(A, 0)), 2],
      ['failed REGISTER', () => expectConflict(lu.register(A, KB, KC)), 2],
      ['RESERVE again', () => expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE)), 2],
      ['REGISTER AND MOVE', () => expectGood(lu.registerAndMove(A, KA, KC, HOST_C, 2)), 3],
      ['PREEMPT', () => expectGood(lu.preempt(B, KB, KC, PrType.WRITE_EXCLUSIVE, false)), 4],
      ['PREEMPT AND ABORT', () => expectGood(lu.preempt(B, KB, KA, PrType.WRITE_EXCLUSIVE, true)), 5],
      ['CLEAR', () => expectGood(lu.clear(B, KB)), 6],
    ];
    for (const [what, step, generation] of steps) {
      step();
      expect(lu.state.generation, what).to.equal(generation);
    }
  });

  it('READ FULL STATUS lists every I_T nexus with key, holder flag, type, port and TransportID', () => {
    const lu = new Lu();
    const fcHost = { protocol: 'fc', portName: 0x21000024ff000001n } as const;
    expectGood(lu.register(nexus(fcHost, 2), 0n, KC));
    expectGood(lu.register(A, 0n, KA, { allTgPt: true }));
    expectGood(lu.reserve(A2, KA, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY));
    // A2 alone holds the reservation, so A's nexuses cannot share an ALL_TG_PT=1 descriptor.
    expect(lu.readFullStatus(B)).to.deep.equal({
      generation: 2,
      descriptors: [
        { key: KC, allTgPt: false, holder: false, scope: 0, type: 0, relativeTargetPort: 2, transportId: fcHost },
        { key: KA, allTgPt: false, holder: false, scope: 0, type: 0, relativeTargetPort: 1, transportId: HOST_A },
        { key: KA, allTgPt: false, holder: true, scope: 0, type: PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, relativeTargetPort: 2, transportId: HOST_A },
      ],
    });
    expectGood(lu.release(A2, KA, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY));
    expectUnitAttention(lu.prIn(A, 0), 'RESERVATIONS_RELEASED');
    expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS));
    const all = lu.readFullStatus(A2).descriptors;
    expect(all.map((d) => [d.holder, d.type, d.allTgPt, d.relativeTargetPort])).to.deep.equal([
      [true, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, false, 2],
      [true, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, true, 0],
    ]);
  });

  it('REPORT CAPABILITIES describes what the engine does', () => {
    const lu = new Lu();
    expect(lu.reportCapabilities(A)).to.deep.equal({
      replaceLostReservation: false,
      crh: false,
      sipC: true,
      atpC: true,
      ptplC: true,
      tmv: true,
      allowCommands: 0,
      ptplA: false,
      types: [7, 6, 5, 3, 1, 8],
    });
    expect(capabilities({ ...defaultEngineOptions([1]), allowCommands: 1 }).allowCommands).to.equal(1);
    const short = lu.prIn(A, PrInAction.REPORT_CAPABILITIES, 2);
    expect(short.dataIn).to.deep.equal(Buffer.from([0x00, 0x08]));
  });

  describe('state JSON', () => {
    it('round-trips exactly, bigints as hex', () => {
      const lu = new Lu();
      expectGood(lu.register(nexus({ protocol: 'sas', sasAddress: (1n << 64n) - 1n }), 0n, (1n << 64n) - 1n, { aptpl: true }));
      expectGood(lu.register(nexus(iscsi('iqn.x', '23D000000001'), 2), 0n, 1n, { allTgPt: true }));
      expectGood(lu.reserve(nexus(iscsi('iqn.x', '23D000000001'), 2), 1n, PrType.EXCLUSIVE_ACCESS));
      expectGood(lu.registerIgnore(A, KA));
      expectGood(lu.preempt(A, KA, 1n, PrType.EXCLUSIVE_ACCESS, false));
      const text = serializeState(lu.state);
      expect(text).to.contain('"0xffffffffffffffff"');
      expect(parseState(text)).to.deep.equal(lu.state);
      expect(serializeState(parseState(text))).to.equal(text);
      expect(parseState(serializeState(initialState()))).to.deep.equal(initialState());
    });

    const broken: Array<[string, (o: Record<string, unknown>) => unknown]> = [
      ['not JSON', () => '{'],
      ['a wrong version', (o) => ({ ...o, version: 2 })],
      ['a negative generation', (o) => ({ ...o, generation: -1 })],
      ['a numeric key', (o) => ({ ...o, registrations: [{ ...(o.registrations as object[])[0], key: 5 }] })],
      ['an unknown protocol', (o) => ({ ...o, registrations: [{ ...(o.registrations as object[])[0], initiator: { protocol: 'spi' } }] })],
      ['an iSCSI name that cannot be encoded', (o) => ({ ...o, registrations: [{ ...(o.registrations as object[])[0], initiator: { protocol: 'iscsi', name: 'has space' } }] })],
      ['target port 0', (o) => ({ ...o, registrations: [{ ...(o.registrations as object[])[0], targetPort: 0 }] })],
      ['duplicate nexuses', (o) => ({ ...o, registrations: [(o.registrations as object[])[0], (o.registrations as object[])[0]] })],
      ['an unregistered holder', (o) => ({ ...o, reservation: { holder: 'iscsi:nobody@1', type: 1, scope: 0 } })],
      ['an obsolete type', (o) => ({ ...o, reservation: { holder: nexusKey(A), type: 2, scope: 0 } })],
      ['an unknown unit attention', (o) => ({ ...o, unitAttentions: { x: ['POWER_ON'] } })],
    ];
    for (const [what, mutate] of broken) {
      it(`refuses ${what} with a StateFormatError`, () => {
        const lu = new Lu();
        expectGood(lu.register(A, 0n, KA));
        expectGood(lu.reserve(A, KA, PrType.WRITE_EXCLUSIVE));
        const mutated = mutate(JSON.parse(serializeState(lu.state)));
        const text = typeof mutated === 'string' ? mutated : JSON.stringify(mutated);
        expect(() => parseState(text)).to.throw(/invalid PR state/);
      });
    }
  });
});
