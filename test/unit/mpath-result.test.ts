import { expect } from 'chai';
import { MPATH_PR } from '../../ffi/libmpathpersist';
import { describeMpathResult, mpathResultToScsi, planMpathResult } from '../../src/backends/mpath/mpath-result';
import { Status } from '../../src/scsi/constants';
import { checkCondition, decodeSense, good, Sense, statusOnly, type ScsiResult, type SenseCondition } from '../../src/scsi/sense';

function triple(result: ScsiResult): string {
  const d = decodeSense(result.sense);
  return d ? [d.key, d.asc, d.ascq].map((b) => b.toString(16).padStart(2, '0')).join('/') : 'none';
}

/** A testUnitReady that records whether it was called. */
function tur(answer: ScsiResult | Error): { fn: () => Promise<ScsiResult>; calls: () => number } {
  let calls = 0;
  return {
    fn: async () => {
      calls++;
      if (answer instanceof Error) throw answer;
      return answer;
    },
    calls: () => calls,
  };
}

const NEVER = async (): Promise<ScsiResult> => {
  throw new Error('TEST UNIT READY must not be sent for this code');
};

describe('MPATH_PR_* → SCSI result (qemu-pr-helper mpath_reconstruct_sense)', function () {
  it('SUCCESS → GOOD with the data-in', async function () {
    const data = Buffer.from([1, 2, 3]);
    const r = await mpathResultToScsi(MPATH_PR.SUCCESS, { testUnitReady: NEVER, dataIn: data });
    expect(r.status).to.equal(Status.GOOD);
    expect(r.sense).to.have.length(0);
    expect(r.dataIn).to.equal(data);
    expect((await mpathResultToScsi(MPATH_PR.SUCCESS, { testUnitReady: NEVER })).dataIn).to.have.length(0);
  });

  it('RESERV_CONFLICT → RESERVATION CONFLICT, no sense', async function () {
    const r = await mpathResultToScsi(MPATH_PR.RESERV_CONFLICT, { testUnitReady: NEVER });
    expect(r.status).to.equal(Status.RESERVATION_CONFLICT);
    expect(r.sense).to.have.length(0);
  });

  /** Everything else qemu-pr-helper answers with LUN COMMUNICATION FAILURE (0b/08/00). */
  const communicationFailures: [string, number][] = [
    ...(['SYNTAX_ERROR', 'SENSE_MALFORMED', 'FILE_ERROR', 'DMMP_ERROR', 'THREAD_ERROR', 'OTHER'] as const).map((name): [string, number] => [name, MPATH_PR[name]]),
    ['RETRYABLE_ERROR (newer)', MPATH_PR.RETRYABLE_ERROR],
    ['SUCCESS_UNREGISTER (newer, internal)', MPATH_PR.SUCCESS_UNREGISTER],
    ['raw -1 (0.9.4 ioctl failure)', -1],
    ['an unknown code', 99],
  ];
  const fixed: [string, number, string][] = [
    ['SENSE_UNIT_ATTENTION → SCSI BUS RESET', MPATH_PR.SENSE_UNIT_ATTENTION, '06/29/02'],
    ['SENSE_INVALID_OP → INVALID OPCODE', MPATH_PR.SENSE_INVALID_OP, '05/20/00'],
    ['ILLEGAL_REQ → INVALID FIELD IN PARAMETER LIST', MPATH_PR.ILLEGAL_REQ, '05/26/00'],
    ['NO_SENSE → CHECK CONDITION 00/00/00', MPATH_PR.NO_SENSE, '00/00/00'],
    ...communicationFailures.map(([name, rc]): [string, number, string] => [`${name} → LUN COMMUNICATION FAILURE`, rc, '0b/08/00']),
  ];
  for (const [name, rc, expected] of fixed) {
    it(name, async function () {
      const r = await mpathResultToScsi(rc, { testUnitReady: NEVER });
      expect(r.status).to.equal(Status.CHECK_CONDITION);
      expect(triple(r)).to.equal(expected);
      expect(r.sense[0]).to.equal(0x70); // fixed format, as scsi_build_sense
      expect(r.dataIn).to.have.length(0);
    });
  }

  const recovered: [string, number, SenseCondition, string][] = [
    ['SENSE_NOT_READY', MPATH_PR.SENSE_NOT_READY, Sense.NOT_READY_CAUSE_NOT_REPORTABLE, '02/04/00'],
    ['SENSE_MEDIUM_ERROR', MPATH_PR.SENSE_MEDIUM_ERROR, Sense.READ_ERROR, '03/11/00'],
    ['SENSE_HARDWARE_ERROR', MPATH_PR.SENSE_HARDWARE_ERROR, Sense.TARGET_FAILURE, '04/44/00'],
    ['SENSE_ABORTED_COMMAND', MPATH_PR.SENSE_ABORTED_COMMAND, Sense.IO_ERROR, '0b/00/06'],
  ];
  for (const [name, rc, fallback, expected] of recovered) {
    describe(`${name} → TEST UNIT READY`, function () {
      it(`returns the device's CHECK CONDITION and sense when TUR fails`, async function () {
        const deviceSense = checkCondition(Sense.MEDIUM_NOT_PRESENT);
        const probe = tur(deviceSense);
        const r = await mpathResultToScsi(rc, { testUnitReady: probe.fn });
        expect(probe.calls()).to.equal(1);
        expect(r.status).to.equal(Status.CHECK_CONDITION);
        expect(r.sense.equals(deviceSense.sense)).to.equal(true);
        expect(r.dataIn).to.have.length(0);
      });

      it('returns a non-GOOD TUR status such as BUSY as is', async function () {
        const r = await mpathResultToScsi(rc, { testUnitReady: tur(statusOnly(Status.BUSY)).fn });
        expect(r.status).to.equal(Status.BUSY);
        expect(r.sense).to.have.length(0);
      });

      it(`falls back to ${expected} when TUR is GOOD`, async function () {
        const probe = tur(good());
        const r = await mpathResultToScsi(rc, { testUnitReady: probe.fn });
        expect(probe.calls()).to.equal(1);
        expect(r.status).to.equal(Status.CHECK_CONDITION);
        expect(triple(r)).to.equal(expected);
        expect(planMpathResult(rc)).to.deep.equal({ action: 'test-unit-ready', fallback });
      });

      it(`falls back to ${expected} when TUR cannot be sent`, async function () {
        const r = await mpathResultToScsi(rc, { testUnitReady: tur(new Error('EIO')).fn });
        expect(r.status).to.equal(Status.CHECK_CONDITION);
        expect(triple(r)).to.equal(expected);
      });
    });
  }

  it('names codes for logs', function () {
    expect(describeMpathResult(MPATH_PR.SYNTAX_ERROR)).to.match(/^MPATH_PR_SYNTAX_ERROR: .*reservation_key/);
    expect(describeMpathResult(MPATH_PR.RESERV_CONFLICT)).to.equal('MPATH_PR_RESERV_CONFLICT');
    expect(describeMpathResult(42)).to.equal('MPATH_PR_? (42)');
  });
});
