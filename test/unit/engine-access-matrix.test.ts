// libiscsi ProutReserve.Access{EA,WE,EARO,WERO,EAAR,WEAR} and Ownership{…} as engine
// tests: for each reservation type, three initiators (the holder, another registrant,
// a stranger) and what each may read, write and do with PR OUT; then who holds the
// reservation once the holder unregisters. Expectations are SPC-4 table 'SPC commands
// that are allowed in the presence of various reservations' (READ/WRITE rows).

import { expect } from 'chai';
import { PrType } from '../../src/scsi/constants';
import { mediumAccess, readReservation } from '../../src/engine';
import { expectConflict, expectGood, expectUnitAttention, HOST_A, HOST_B, HOST_C, Lu, nexus, reservedLu } from './engine-harness';

type Access = 'allowed' | 'conflict';
interface Row {
  name: string;
  type: number;
  allRegistrants: boolean;
  registrantsOnly: boolean;
  /** [read, write] for the other registrant and for the unregistered initiator. */
  registrant: [Access, Access];
  stranger: [Access, Access];
}

const A = nexus(HOST_A);
const B = nexus(HOST_B);
const C = nexus(HOST_C);
const KEY_A = 0xa1n;
const KEY_B = 0xb2n;

const ROWS: Row[] = [
  { name: 'WE', type: PrType.WRITE_EXCLUSIVE, allRegistrants: false, registrantsOnly: false, registrant: ['allowed', 'conflict'], stranger: ['allowed', 'conflict'] },
  { name: 'EA', type: PrType.EXCLUSIVE_ACCESS, allRegistrants: false, registrantsOnly: false, registrant: ['conflict', 'conflict'], stranger: ['conflict', 'conflict'] },
  { name: 'WERO', type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, allRegistrants: false, registrantsOnly: true, registrant: ['allowed', 'allowed'], stranger: ['allowed', 'conflict'] },
  { name: 'EARO', type: PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, allRegistrants: false, registrantsOnly: true, registrant: ['allowed', 'allowed'], stranger: ['conflict', 'conflict'] },
  { name: 'WEAR', type: PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, allRegistrants: true, registrantsOnly: false, registrant: ['allowed', 'allowed'], stranger: ['allowed', 'conflict'] },
  { name: 'EAAR', type: PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS, allRegistrants: true, registrantsOnly: false, registrant: ['allowed', 'allowed'], stranger: ['conflict', 'conflict'] },
];

/** A holds a reservation of `type`; B is registered too; C is a stranger. */
const reservedByA = (type: number): Lu => reservedLu([A, KEY_A], type, [B, KEY_B]);

describe('engine: access matrix per reservation type (libiscsi ProutReserve.Access/Ownership)', () => {
  it('allows every access when there is no reservation', () => {
    const lu = new Lu();
    expectGood(lu.register(A, 0n, KEY_A));
    for (const n of [A, B, C]) for (const kind of ['read', 'write'] as const) expect(mediumAccess(lu.state, n, kind)).to.equal('allowed');
  });

  for (const row of ROWS) {
    describe(`type ${row.name} (${row.type})`, () => {
      it('gives the holder read and write, and the others what SPC-4 table allows', () => {
        const lu = reservedByA(row.type);
        expect([mediumAccess(lu.state, A, 'read'), mediumAccess(lu.state, A, 'write')]).to.deep.equal(['allowed', 'allowed']);
        expect([mediumAccess(lu.state, B, 'read'), mediumAccess(lu.state, B, 'write')]).to.deep.equal(row.registrant);
        expect([mediumAccess(lu.state, C, 'read'), mediumAccess(lu.state, C, 'write')]).to.deep.equal(row.stranger);
      });

      it('reports the reservation, with key 0 for all-registrants types', () => {
        const lu = reservedByA(row.type);
        expect(lu.readReservation(C)).to.deep.equal({ generation: 2, reservation: { key: row.allRegistrants ? 0n : KEY_A, scope: 0, type: row.type } });
      });

      it('answers PR OUT from the other registrant and from the stranger', () => {
        const lu = reservedByA(row.type);
        // Another registrant re-reserving the same type holds it already only for all-registrants types.
        if (row.allRegistrants) expectGood(lu.reserve(B, KEY_B, row.type));
        else expectConflict(lu.reserve(B, KEY_B, row.type));
        // A different type conflicts for everyone but nothing changes.
        expectConflict(lu.reserve(B, KEY_B, row.type === PrType.WRITE_EXCLUSIVE ? PrType.EXCLUSIVE_ACCESS : PrType.WRITE_EXCLUSIVE));
        // The stranger is not registered: RESERVE, RELEASE, CLEAR and PREEMPT all conflict.
        expectConflict(lu.reserve(C, 0n, row.type));
        expectConflict(lu.release(C, 0n, row.type));
        expectConflict(lu.clear(C, 0n));
        expectConflict(lu.preempt(C, 0n, KEY_A, row.type));
        // The stranger may still register (registration is never blocked by a reservation).
        expectGood(lu.register(C, 0n, 0xc3n));
        expect(lu.state.reservation?.type).to.equal(row.type);
      });

      it('lets a non-holder RELEASE as a no-op, but an all-registrants holder releases for everyone', () => {
        const lu = reservedByA(row.type);
        expectGood(lu.release(B, KEY_B, row.type));
        if (row.allRegistrants) {
          expect(lu.state.reservation).to.equal(null);
          expect(lu.pendingUnitAttentions(A)).to.deep.equal(['RESERVATIONS_RELEASED']);
        } else {
          expect(lu.state.reservation?.type).to.equal(row.type);
          expect(lu.pendingUnitAttentions(A)).to.deep.equal([]);
        }
      });

      it('decides ownership when the holder unregisters', () => {
        const lu = reservedByA(row.type);
        expectGood(lu.register(A, KEY_A, 0n));
        if (row.allRegistrants) {
          // The reservation stays while any registrant remains; B now holds it alone.
          expect(lu.state.reservation?.type).to.equal(row.type);
          expect(mediumAccess(lu.state, B, 'write')).to.equal('allowed');
          // A is now a stranger to it.
          expect([mediumAccess(lu.state, A, 'read'), mediumAccess(lu.state, A, 'write')]).to.deep.equal(row.stranger);
          expect(lu.pendingUnitAttentions(B)).to.deep.equal([]);
          expectGood(lu.register(B, KEY_B, 0n));
          expect(lu.state.reservation).to.equal(null);
        } else {
          expect(lu.state.reservation).to.equal(null);
          expect(readReservation(lu.state)).to.deep.equal({ generation: 3 });
          // Only a registrants-only reservation released this way tells the other registrants.
          if (row.registrantsOnly) {
            expect(lu.pendingUnitAttentions(B)).to.deep.equal(['RESERVATIONS_RELEASED']);
            expectUnitAttention(lu.prIn(B, 0), 'RESERVATIONS_RELEASED');
          } else {
            expect(lu.pendingUnitAttentions(B)).to.deep.equal([]);
          }
          for (const n of [A, B, C]) expect(mediumAccess(lu.state, n, 'write')).to.equal('allowed');
        }
      });
    });
  }

  it('treats the holder as one I_T nexus: the same host on its other target port is only a registrant', () => {
    const lu = new Lu();
    expectGood(lu.register(A, 0n, KEY_A, { allTgPt: true }));
    expectGood(lu.reserve(A, KEY_A, PrType.EXCLUSIVE_ACCESS));
    const otherPath = nexus(HOST_A, 2);
    expect(mediumAccess(lu.state, otherPath, 'read')).to.equal('conflict');
    expectGood(lu.release(A, KEY_A, PrType.EXCLUSIVE_ACCESS));
    expectGood(lu.reserve(A, KEY_A, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY));
    expect(mediumAccess(lu.state, otherPath, 'write')).to.equal('allowed');
  });
});
