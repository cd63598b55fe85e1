import { expect } from 'chai';
import { admitCommand, refuseWriteOnReadOnlyFd, type CommandGuard } from '../../src/backends/admission';
import type { DeviceHandle } from '../../src/backends/backend';
import { buildPrIn, buildPrOut } from '../../src/backends/pr-commands';
import { encodePrOutCdb } from '../../src/scsi/cdb';
import { PrInAction, PrType, Status } from '../../src/scsi/constants';
import { decodePrCommand } from '../../src/scsi/pr-command';
import { checkCondition, Sense, senseMatches, type ScsiResult, type SenseCondition } from '../../src/scsi/sense';
import { decoded } from '../support/pr-bytes';

const handle = (writable: boolean): DeviceHandle => ({ fd: 3, path: '/x', writable });
const PR_IN = buildPrIn(PrInAction.READ_KEYS);
const REGISTER = buildPrOut({ action: 'register', serviceActionKey: 0xa1n });
const EMPTY = Buffer.alloc(0);

function expectSense(result: ScsiResult | undefined, condition: SenseCondition): void {
  expect(result?.status).to.equal(Status.CHECK_CONDITION);
  expect(senseMatches(result!.sense, condition)).to.equal(true);
}

describe('decoding a PR command once (src/scsi/pr-command.ts)', function () {
  it('decodes PR IN: service action, its name, the allocation length, the 10-byte CDB', function () {
    const command = decoded(Buffer.concat([PR_IN, Buffer.alloc(6)]));
    expect(command).to.deep.include({ direction: 'in', code: 0, action: 'read-keys', allocationLength: 8192 });
    expect(command.cdb.length).to.equal(10);
  });
  it('decodes PR OUT: action name, TYPE, SCOPE, SPEC_I_PT and the parameter list once', function () {
    const { cdb, dataOut } = buildPrOut({ action: 'preempt-abort', reservationKey: 0xb1n, serviceActionKey: 0xa1n, type: PrType.EXCLUSIVE_ACCESS });
    const command = decoded(cdb, dataOut);
    expect(command).to.deep.include({ direction: 'out', code: 5, action: 'preempt-abort', type: PrType.EXCLUSIVE_ACCESS, scope: 0, specIPT: false });
    expect(command.direction === 'out' && command.parameters.ok && command.parameters.value.serviceActionKey).to.equal(0xa1n);
  });
  it('takes exactly the announced parameter list; bytes beyond it are not part of the list', function () {
    const command = decoded(REGISTER.cdb, Buffer.concat([REGISTER.dataOut, Buffer.alloc(8, 0xff)]));
    expect(command.direction === 'out' && command.parameterList.length).to.equal(24);
    expect(command.direction === 'out' && command.parameters.ok).to.equal(true);
  });
  it('keeps a reserved service action and a bad parameter list for the device server to answer', function () {
    const reserved = decoded(encodePrOutCdb({ action: 0x1f, parameterListLength: 24 }), Buffer.alloc(24));
    expect(reserved).to.deep.include({ direction: 'out', code: 0x1f, action: undefined });
    const shortList = decoded(encodePrOutCdb({ action: 0, parameterListLength: 4 }), Buffer.alloc(4));
    expect(shortList.direction === 'out' && !shortList.parameters.ok && shortList.parameters.sense).to.equal(Sense.PARAMETER_LIST_LENGTH_ERROR);
  });
  it('answers framing errors itself: opcode, short CDB, data-out on PR IN, a list shorter than announced', function () {
    const cases: [Uint8Array, Uint8Array, SenseCondition][] = [
      [EMPTY, EMPTY, Sense.INVALID_OPCODE],
      [Buffer.from([0x12, 0, 0, 0, 0x24, 0]), EMPTY, Sense.INVALID_OPCODE],
      [Buffer.from([0x5e, 0, 0, 0, 0, 0]), EMPTY, Sense.INVALID_FIELD_IN_CDB],
      [PR_IN, Buffer.alloc(4), Sense.INVALID_FIELD_IN_CDB],
      [REGISTER.cdb, Buffer.alloc(20), Sense.PARAMETER_LIST_LENGTH_ERROR],
    ];
    for (const [cdb, dataOut, condition] of cases) {
      const outcome = decodePrCommand(cdb, dataOut);
      expect(outcome.ok, Buffer.from(cdb).toString('hex')).to.equal(false);
      if (!outcome.ok) expectSense(outcome.result, condition);
    }
  });
});

describe('admission (src/backends/admission.ts, the one stage before any backend)', function () {
  it('refuses PR OUT on a read-only handle with INVALID OPERATION CODE, as qemu-pr-helper does', function () {
    const admission = admitCommand(handle(false), REGISTER.cdb, REGISTER.dataOut);
    expect(admission.ok).to.equal(false);
    if (!admission.ok) expectSense(admission.result, Sense.INVALID_OPCODE);
    expectSense(refuseWriteOnReadOnlyFd(handle(false), decoded(REGISTER.cdb, REGISTER.dataOut), undefined), Sense.INVALID_OPCODE);
  });
  it('allows PR IN on a read-only handle and PR OUT on a writable one', function () {
    expect(admitCommand(handle(false), PR_IN, EMPTY).ok).to.equal(true);
    expect(admitCommand(handle(true), REGISTER.cdb, REGISTER.dataOut).ok).to.equal(true);
  });
  it('an empty CDB is an invalid opcode, whatever the handle', function () {
    const admission = admitCommand(handle(false), EMPTY, EMPTY);
    expect(admission.ok).to.equal(false);
    if (!admission.ok) expectSense(admission.result, Sense.INVALID_OPCODE);
  });
  it('runs the caller guards after decoding and the read-only rule, and names the one that refused', function () {
    const seen: string[] = [];
    const allowNothing: CommandGuard = function allowNothing(_device, command) {
      seen.push(command.direction);
      return checkCondition(Sense.LOGICAL_UNIT_NOT_SUPPORTED);
    };
    const readOnly = admitCommand(handle(false), REGISTER.cdb, REGISTER.dataOut, [allowNothing]);
    expect(readOnly.ok).to.equal(false);
    expect(seen).to.deep.equal([]);
    const refused = admitCommand(handle(true), PR_IN, EMPTY, [allowNothing]);
    expect(refused.ok).to.equal(false);
    if (!refused.ok) {
      expectSense(refused.result, Sense.LOGICAL_UNIT_NOT_SUPPORTED);
      expect(refused.reason).to.match(/allowNothing/);
      expect(refused.command?.direction).to.equal('in');
    }
    expect(seen).to.deep.equal(['in']);
  });
});
