import { expect } from 'chai';
import { decoded } from '../support/pr-bytes';
import { libraryFlags, planMpathCommand } from '../../src/backends/mpath/mpath-plan';
import { buildPrIn, buildPrOut } from '../../src/backends/pr-commands';
import { encodePrOutCdb } from '../../src/scsi/cdb';
import { PrInAction, PrType } from '../../src/scsi/constants';
import { Sense, senseMatches, type SenseCondition } from '../../src/scsi/sense';
import type { MpathPlan } from '../../src/backends/mpath/mpath-plan';

function expectRefusal(planned: MpathPlan | Record<string, unknown>, sense: SenseCondition): void {
  const plan = planned as MpathPlan;
  expect(plan.kind).to.equal('refuse');
  if (plan.kind !== 'refuse') return;
  expect(senseMatches(plan.result.sense, sense), plan.reason).to.equal(true);
  expect(plan.reason).to.be.a('string').and.not.equal('');
}

/** The plan for these bytes, without the command it carries (the tests compare the decisions). */
function planOf(cdb: Uint8Array, dataOut: Uint8Array): MpathPlan | Record<string, unknown> {
  const plan = planMpathCommand(decoded(cdb, dataOut));
  if (plan.kind === 'refuse') return plan;
  const { command: _command, ...decision } = plan;
  return decision;
}

describe('mpath plan (which commands go to libmpathpersist, SG_IO, or are refused)', function () {
  it('sends READ KEYS, READ RESERVATION and REPORT CAPABILITIES by SG_IO with their allocation length, the library as fallback', function () {
    for (const action of [PrInAction.READ_KEYS, PrInAction.READ_RESERVATION, PrInAction.REPORT_CAPABILITIES]) {
      expect(planOf(buildPrIn(action, 4096), new Uint8Array(0))).to.deep.equal({ kind: 'in', serviceAction: action, allocationLength: 4096, libraryFallback: true });
    }
  });

  it('answers READ FULL STATUS by SG_IO on the map, never by the overflowing library call', function () {
    expect(planOf(buildPrIn(PrInAction.READ_FULL_STATUS, 8192), new Uint8Array(0))).to.deep.equal({
      kind: 'in',
      serviceAction: PrInAction.READ_FULL_STATUS,
      allocationLength: 8192,
      libraryFallback: false,
    });
  });

  it('refuses PR IN service actions that do not exist with INVALID FIELD IN CDB', function () {
    const cdb = buildPrIn(PrInAction.READ_KEYS);
    cdb[1] = 0x04;
    expectRefusal(planOf(cdb, new Uint8Array(0)), Sense.INVALID_FIELD_IN_CDB);
  });

  it('maps a PR OUT parameter list to the library request (keys, APTPL, ALL_TG_PT, scope and type)', function () {
    const { cdb, dataOut } = buildPrOut({ action: 'preempt', reservationKey: 0x1122334455667788n, serviceActionKey: 0xabcdn, type: PrType.EXCLUSIVE_ACCESS, aptpl: true, allTgPt: true });
    const plan = planOf(cdb, dataOut);
    expect(plan).to.deep.equal({
      kind: 'out',
      serviceAction: 4,
      scope: 0,
      type: PrType.EXCLUSIVE_ACCESS,
      reservationKey: 0x1122334455667788n,
      serviceActionKey: 0xabcdn,
      aptpl: true,
      allTgPt: true,
    });
    expect(libraryFlags(plan as { aptpl: boolean; allTgPt: boolean })).to.equal(0x05);
    expect(libraryFlags({ aptpl: false, allTgPt: false })).to.equal(0);
  });

  it('refuses REGISTER AND MOVE and unknown PR OUT service actions with INVALID FIELD IN CDB', function () {
    const data = new Uint8Array(24);
    expectRefusal(planOf(encodePrOutCdb({ action: 7, parameterListLength: 24 }), data), Sense.INVALID_FIELD_IN_CDB);
    expectRefusal(planOf(encodePrOutCdb({ action: 8, parameterListLength: 24 }), data), Sense.INVALID_FIELD_IN_CDB);
    expectRefusal(planOf(encodePrOutCdb({ action: 0x1f, parameterListLength: 24 }), data), Sense.INVALID_FIELD_IN_CDB);
  });

  it('refuses a parameter list shorter than 24 bytes with PARAMETER LIST LENGTH ERROR', function () {
    expectRefusal(planOf(encodePrOutCdb({ action: 0, parameterListLength: 23 }), new Uint8Array(23)), Sense.PARAMETER_LIST_LENGTH_ERROR);
    expectRefusal(planOf(encodePrOutCdb({ action: 0, parameterListLength: 0 }), new Uint8Array(0)), Sense.PARAMETER_LIST_LENGTH_ERROR);
  });

  it('refuses SPEC_I_PT with INVALID FIELD IN PARAMETER LIST (0.9.4 applies it on one path only)', function () {
    const { cdb, dataOut } = buildPrOut({ action: 'register', serviceActionKey: 1n, transportIds: [{ protocol: 'sas', sasAddress: 0x5001405aa0000001n }] });
    expectRefusal(planOf(cdb, dataOut), Sense.INVALID_FIELD_IN_PARAMETER_LIST);
  });

  it('refuses a 28-byte list without SPEC_I_PT as the SPC-4 length rule says', function () {
    const data = new Uint8Array(28);
    expectRefusal(planOf(encodePrOutCdb({ action: 0, parameterListLength: 28 }), data), Sense.PARAMETER_LIST_LENGTH_ERROR);
  });
});
