import { decodePrCommand } from '../../src/scsi/pr-command';
import { expect } from 'chai';
import { BlockPrType } from '../../ffi/block-pr';
import { KernelPrType, scsiTypeToKernel, translatePrOut, type Translation } from '../../src/backends/blkpr/translate';
import { encodePrOutCdb } from '../../src/scsi/cdb';
import { PrOutAction, PrType } from '../../src/scsi/constants';
import { encodePrOutParameters } from '../../src/scsi/parameter-list';
import { Sense, senseMatches, type SenseCondition } from '../../src/scsi/sense';

const KEY = 0x1122334455667788n;
const SA_KEY = 0x99aabbccddeeff00n;

function params(options: { key?: bigint; saKey?: bigint; aptpl?: boolean; allTgPt?: boolean } = {}): Buffer {
  return encodePrOutParameters({
    reservationKey: options.key ?? KEY,
    serviceActionKey: options.saKey ?? SA_KEY,
    specIPT: false,
    allTgPt: options.allTgPt ?? false,
    aptpl: options.aptpl ?? false,
    transportIds: [],
  });
}

function translate(action: number, options: { type?: number; scope?: number; data?: Buffer; length?: number } = {}): Translation {
  const data = options.data ?? params();
  const cdb = encodePrOutCdb({ action, scope: options.scope ?? 0, type: options.type ?? 0, parameterListLength: options.length ?? data.length });
  return translateBytes(cdb, data);
}

/** Through the one decoder, as the backend receives commands: framing errors are the decoder's answer. */
function translateBytes(cdb: Uint8Array, data: Uint8Array): Translation {
  const outcome = decodePrCommand(cdb, data);
  if (!outcome.ok) return outcome;
  if (outcome.command.direction !== 'out') throw new Error('not a PR OUT command');
  return translatePrOut(outcome.command);
}

function expectRefusal(t: Translation, sense: SenseCondition, reason: RegExp): void {
  expect(t.ok).to.equal(false);
  if (t.ok) return;
  expect(senseMatches(t.result.sense, sense), reason.source).to.equal(true);
  expect(t.reason).to.match(reason);
}

describe('blkpr: PR OUT → IOC_PR_* translation', function () {
  it('KernelPrType is <linux/pr.h> enum pr_type (as ffi/block-pr.ts declares it)', function () {
    expect(KernelPrType).to.deep.equal(BlockPrType);
  });

  it('maps every SCSI type code to the kernel enum, explicitly', function () {
    expect(scsiTypeToKernel(PrType.WRITE_EXCLUSIVE)).to.equal(1);
    expect(scsiTypeToKernel(PrType.EXCLUSIVE_ACCESS)).to.equal(2);
    expect(scsiTypeToKernel(PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY)).to.equal(3);
    expect(scsiTypeToKernel(PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY)).to.equal(4);
    expect(scsiTypeToKernel(PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS)).to.equal(5);
    expect(scsiTypeToKernel(PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS)).to.equal(6);
    for (const bad of [0, 2, 4, 9, 15]) expect(scsiTypeToKernel(bad), String(bad)).to.equal(undefined);
  });

  describe('supported service actions', function () {
    it('REGISTER → register {oldKey, newKey}', function () {
      expect(translate(PrOutAction.REGISTER)).to.deep.equal({ ok: true, operation: { op: 'register', oldKey: KEY, newKey: SA_KEY, ignoreExistingKey: false } });
    });
    it('REGISTER with service action key 0 is an unregister', function () {
      const t = translate(PrOutAction.REGISTER, { data: params({ saKey: 0n }) });
      expect(t.ok && t.operation).to.deep.equal({ op: 'register', oldKey: KEY, newKey: 0n, ignoreExistingKey: false });
    });
    it('REGISTER AND IGNORE EXISTING KEY → register with PR_FL_IGNORE_KEY', function () {
      const t = translate(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, { data: params({ key: 0n }) });
      expect(t.ok && t.operation).to.deep.equal({ op: 'register', oldKey: 0n, newKey: SA_KEY, ignoreExistingKey: true });
    });
    it('REGISTER with APTPL=1 or APTPL=0 is accepted (6.1 sd always sends APTPL=1)', function () {
      expect(translate(PrOutAction.REGISTER, { data: params({ aptpl: true }) }).ok).to.equal(true);
      expect(translate(PrOutAction.REGISTER, { data: params({ aptpl: false }) }).ok).to.equal(true);
    });
    it('REGISTER ignores scope and type', function () {
      expect(translate(PrOutAction.REGISTER, { scope: 3, type: 9 }).ok).to.equal(true);
    });
    for (const [scsi, kernel] of [[1, 1], [3, 2], [5, 3], [6, 4], [7, 5], [8, 6]]) {
      it(`RESERVE type ${scsi} → reserve with kernel type ${kernel}`, function () {
        const t = translate(PrOutAction.RESERVE, { type: scsi });
        expect(t.ok && t.operation).to.deep.equal({ op: 'reserve', key: KEY, type: kernel });
      });
    }
    it('RELEASE → release {key, type}', function () {
      const t = translate(PrOutAction.RELEASE, { type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY });
      expect(t.ok && t.operation).to.deep.equal({ op: 'release', key: KEY, type: KernelPrType.WRITE_EXCLUSIVE_REG_ONLY });
    });
    it('CLEAR → clear {key}, whatever the type field says', function () {
      const t = translate(PrOutAction.CLEAR, { type: 0 });
      expect(t.ok && t.operation).to.deep.equal({ op: 'clear', key: KEY });
    });
    it('PREEMPT → preempt {key, victimKey, type}', function () {
      const t = translate(PrOutAction.PREEMPT, { type: PrType.EXCLUSIVE_ACCESS });
      expect(t.ok && t.operation).to.deep.equal({ op: 'preempt', key: KEY, victimKey: SA_KEY, type: KernelPrType.EXCLUSIVE_ACCESS, abort: false });
    });
    it('PREEMPT AND ABORT → preempt with abort', function () {
      const t = translate(PrOutAction.PREEMPT_AND_ABORT, { type: PrType.WRITE_EXCLUSIVE });
      expect(t.ok && t.operation).to.deep.equal({ op: 'preempt', key: KEY, victimKey: SA_KEY, type: KernelPrType.WRITE_EXCLUSIVE, abort: true });
    });
  });

  describe('what IOC_PR_* cannot express', function () {
    it('REGISTER AND MOVE → INVALID FIELD IN CDB', function () {
      expectRefusal(translate(PrOutAction.REGISTER_AND_MOVE), Sense.INVALID_FIELD_IN_CDB, /REGISTER AND MOVE/);
    });
    it('REPLACE LOST RESERVATION and undefined actions → INVALID FIELD IN CDB', function () {
      expectRefusal(translate(PrOutAction.REPLACE_LOST_RESERVATION), Sense.INVALID_FIELD_IN_CDB, /service action 0x8/);
      expectRefusal(translate(0x1f), Sense.INVALID_FIELD_IN_CDB, /service action 0x1f/);
    });
    it('SPEC_I_PT → INVALID FIELD IN PARAMETER LIST', function () {
      const data = Buffer.concat([params(), Buffer.from([0, 0, 0, 0])]);
      data[20] |= 0x08;
      expectRefusal(translate(PrOutAction.REGISTER, { data }), Sense.INVALID_FIELD_IN_PARAMETER_LIST, /SPEC_I_PT/);
    });
    it('ALL_TG_PT on REGISTER and REGISTER AND IGNORE → INVALID FIELD IN PARAMETER LIST', function () {
      expectRefusal(translate(PrOutAction.REGISTER, { data: params({ allTgPt: true }) }), Sense.INVALID_FIELD_IN_PARAMETER_LIST, /ALL_TG_PT/);
      expectRefusal(
        translate(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, { data: params({ allTgPt: true }) }),
        Sense.INVALID_FIELD_IN_PARAMETER_LIST,
        /ALL_TG_PT/,
      );
    });
    it('ALL_TG_PT is ignored on the other actions (SPC-4)', function () {
      expect(translate(PrOutAction.RESERVE, { type: 1, data: params({ allTgPt: true }) }).ok).to.equal(true);
    });
    for (const bad of [0, 2, 4, 9, 15]) {
      it(`type ${bad} on RESERVE/RELEASE/PREEMPT → INVALID FIELD IN CDB`, function () {
        for (const action of [PrOutAction.RESERVE, PrOutAction.RELEASE, PrOutAction.PREEMPT, PrOutAction.PREEMPT_AND_ABORT]) {
          expectRefusal(translate(action, { type: bad }), Sense.INVALID_FIELD_IN_CDB, /not a persistent reservation type/);
        }
      });
    }
    it('a scope other than LU_SCOPE on a typed action → INVALID FIELD IN CDB', function () {
      expectRefusal(translate(PrOutAction.RESERVE, { type: 1, scope: 1 }), Sense.INVALID_FIELD_IN_CDB, /scope 1/);
    });
  });

  describe('parameter list length', function () {
    it('a CDB length that differs from the data sent → PARAMETER LIST LENGTH ERROR', function () {
      expectRefusal(translate(PrOutAction.REGISTER, { length: 28 }), Sense.PARAMETER_LIST_LENGTH_ERROR, /announces 28/);
    });
    it('fewer than 24 bytes → PARAMETER LIST LENGTH ERROR', function () {
      expectRefusal(translate(PrOutAction.REGISTER, { data: Buffer.alloc(20) }), Sense.PARAMETER_LIST_LENGTH_ERROR, /less than 24/);
    });
    it('more than 24 bytes without SPEC_I_PT → PARAMETER LIST LENGTH ERROR', function () {
      expectRefusal(translate(PrOutAction.REGISTER, { data: Buffer.alloc(32) }), Sense.PARAMETER_LIST_LENGTH_ERROR, /exactly 24/);
    });
    it('a CDB shorter than 10 bytes → INVALID FIELD IN CDB', function () {
      const t = translateBytes(Buffer.from([0x5f, 0, 0, 0, 0, 0]), params());
      expectRefusal(t, Sense.INVALID_FIELD_IN_CDB, /CDB is 6 bytes/);
    });
  });
});
