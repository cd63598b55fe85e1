// The sense key of a result, in either sense format (SPC-4 4.5).

import { expect } from 'chai';
import { SenseKey, Status } from '../../src/scsi/constants';
import { checkCondition, encodeDescriptorSense, isUnitAttention, Sense, senseKeyOf, statusOnly } from '../../src/scsi/sense';

describe('sense key of a result', function () {
  it('reads fixed and descriptor sense alike', function () {
    expect(senseKeyOf(checkCondition(Sense.INVALID_FIELD_IN_CDB))).to.equal(SenseKey.ILLEGAL_REQUEST);
    const descriptor = { status: Status.CHECK_CONDITION, sense: encodeDescriptorSense(Sense.REGISTRATIONS_PREEMPTED), dataIn: Buffer.alloc(0) };
    expect(senseKeyOf(descriptor)).to.equal(SenseKey.UNIT_ATTENTION);
    expect(isUnitAttention(descriptor)).to.equal(true);
    expect(isUnitAttention(checkCondition(Sense.RESERVATIONS_RELEASED))).to.equal(true);
  });

  it('has none for another status or sense that does not decode', function () {
    expect(senseKeyOf(statusOnly(Status.RESERVATION_CONFLICT))).to.equal(undefined);
    expect(senseKeyOf({ status: Status.CHECK_CONDITION, sense: Buffer.alloc(0), dataIn: Buffer.alloc(0) })).to.equal(undefined);
    expect(senseKeyOf({ status: Status.CHECK_CONDITION, sense: Buffer.from([0x70, 0]), dataIn: Buffer.alloc(0) })).to.equal(undefined);
    expect(isUnitAttention(checkCondition(Sense.LUN_COMMUNICATION_FAILURE))).to.equal(false);
  });
});
