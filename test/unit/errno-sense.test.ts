import { expect } from 'chai';
import { constants as osConstants } from 'os';
import { LinuxErrno } from '../../ffi/errno';
import { Status } from '../../src/scsi/constants';
import {
  DriverStatus,
  HostErrorSense,
  HostStatus,
  resultFromBlockPrReturn,
  resultFromErrno,
  resultFromHostStatus,
  resultFromSgIo,
  type SgIoOutcome,
} from '../../src/scsi/errno-sense';
import { describeSense, encodeFixedSense, Sense, type ScsiResult, type SenseCondition } from '../../src/scsi/sense';

function expectCheckCondition(result: ScsiResult, cond: SenseCondition): void {
  expect(result.status, 'status').to.equal(Status.CHECK_CONDITION);
  // Byte-exact: QEMU's scsi_build_sense layout (fixed format, 18 bytes).
  expect(result.sense.equals(encodeFixedSense(cond)), `sense ${describeSense(result.sense)}`).to.equal(true);
  expect(result.dataIn.length).to.equal(0);
}

function expectStatusOnly(result: ScsiResult, status: number): void {
  expect(result.status).to.equal(status);
  expect(result.sense.length).to.equal(0);
  expect(result.dataIn.length).to.equal(0);
}

describe('errno-sense: errno and host status to SCSI result (qemu scsi/utils.c tables)', function () {
  describe('LinuxErrno agrees with Node where Node knows the value', function () {
    for (const [name, value] of Object.entries(LinuxErrno)) {
      const nodeValue = (osConstants.errno as Record<string, number | undefined>)[name];
      if (nodeValue === undefined) continue;
      it(`${name} = ${value}`, function () {
        expect(value).to.equal(nodeValue);
      });
    }
  });

  describe('resultFromErrno (scsi_sense_from_errno)', function () {
    it('0 → GOOD', function () {
      expectStatusOnly(resultFromErrno(0), Status.GOOD);
    });
    const rows: Array<[keyof typeof LinuxErrno, SenseCondition | number, string]> = [
      ['EDOM', Status.TASK_SET_FULL, 'TASK SET FULL'],
      ['ENODEV', Sense.TARGET_FAILURE, 'TARGET FAILURE 04/44/00'],
      ['EREMOTEIO', Sense.TARGET_FAILURE, 'TARGET FAILURE 04/44/00'],
      ['EBADE', Status.RESERVATION_CONFLICT, 'RESERVATION CONFLICT'],
      ['ENODATA', Sense.READ_ERROR, 'READ ERROR 03/11/00'],
      ['ENOMEDIUM', Sense.MEDIUM_NOT_PRESENT, 'MEDIUM NOT PRESENT 02/3A/00'],
      ['ENOMEM', Sense.TARGET_FAILURE, 'TARGET FAILURE 04/44/00'],
      ['EINVAL', Sense.INVALID_FIELD_IN_CDB, 'INVALID FIELD IN CDB 05/24/00'],
      ['ENOSPC', Sense.SPACE_ALLOCATION_FAILED_WRITE_PROTECT, 'SPACE ALLOCATION FAILED WRITE PROTECT 07/27/07'],
    ];
    for (const [name, expected, title] of rows) {
      it(`${name} → ${title}`, function () {
        const result = resultFromErrno(LinuxErrno[name]);
        if (typeof expected === 'number') expectStatusOnly(result, expected);
        else expectCheckCondition(result, expected);
      });
    }
    for (const name of ['EIO', 'EPERM', 'EAGAIN', 'ENOTTY', 'EOPNOTSUPP', 'ENOTCONN', 'EINTR'] as const) {
      it(`${name} (unlisted) → I/O PROCESS TERMINATED 0B/00/06`, function () {
        expectCheckCondition(resultFromErrno(LinuxErrno[name]), Sense.IO_ERROR);
      });
    }
  });

  describe('resultFromHostStatus (scsi_sense_from_host_status)', function () {
    const rows: Array<[keyof typeof HostStatus, SenseCondition | number]> = [
      ['NO_CONNECT', HostErrorSense.LUN_NOT_RESPONDING],
      ['BUS_BUSY', Status.BUSY],
      ['TIME_OUT', HostErrorSense.COMMAND_TIMEOUT],
      ['BAD_TARGET', Sense.LUN_COMMUNICATION_FAILURE],
      ['ABORT', HostErrorSense.COMMANDS_CLEARED_BY_DEVICE_SERVER],
      ['RESET', HostErrorSense.POWER_ON_RESET],
      ['TRANSPORT_DISRUPTED', Sense.TRANSPORT_DISRUPTED],
      ['TARGET_FAILURE', Sense.TARGET_FAILURE],
      ['NEXUS_FAILURE', Status.RESERVATION_CONFLICT],
      ['ALLOC_FAILURE', Sense.SPACE_ALLOCATION_FAILED_WRITE_PROTECT],
      ['MEDIUM_ERROR', Sense.READ_ERROR],
    ];
    for (const [name, expected] of rows) {
      it(`DID_${name} (0x${HostStatus[name].toString(16)})`, function () {
        const result = resultFromHostStatus(HostStatus[name]);
        if (typeof expected === 'number') expectStatusOnly(result, expected);
        else expectCheckCondition(result, expected);
      });
    }
    it('the sense codes QEMU uses for host errors', function () {
      expect(HostErrorSense.LUN_NOT_RESPONDING).to.deep.equal({ key: 0x0b, asc: 0x05, ascq: 0x00 });
      expect(HostErrorSense.COMMAND_TIMEOUT).to.deep.equal({ key: 0x0b, asc: 0x2e, ascq: 0x02 });
      expect(HostErrorSense.COMMANDS_CLEARED_BY_DEVICE_SERVER).to.deep.equal({ key: 0x0b, asc: 0x2f, ascq: 0x02 });
      expect(HostErrorSense.POWER_ON_RESET).to.deep.equal({ key: 0x06, asc: 0x29, ascq: 0x00 });
      expect(Sense.TRANSPORT_DISRUPTED).to.deep.equal({ key: 0x0b, asc: 0x29, ascq: 0x07 });
      expect(Sense.LUN_COMMUNICATION_FAILURE).to.deep.equal({ key: 0x0b, asc: 0x08, ascq: 0x00 });
    });
    // Differs from QEMU, which answers GOOD for these: a failed command must not look successful.
    for (const name of ['ERROR', 'PARITY', 'SOFT_ERROR', 'TRANSPORT_FAILFAST', 'TRANSPORT_MARGINAL', 'REQUEUE', 'IMM_RETRY'] as const) {
      it(`DID_${name} (not in QEMU's table) → I/O PROCESS TERMINATED, not GOOD`, function () {
        expectCheckCondition(resultFromHostStatus(HostStatus[name]), Sense.IO_ERROR);
      });
    }
    it('0xff (unknown) → I/O PROCESS TERMINATED', function () {
      expectCheckCondition(resultFromHostStatus(0xff), Sense.IO_ERROR);
    });
  });

  describe('resultFromSgIo (do_sgio_worker order)', function () {
    const deviceSense = Buffer.from([0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0]); // descriptor format, as some targets send
    const base: SgIoOutcome = { status: 0, hostStatus: 0, driverStatus: 0, sense: Buffer.alloc(0), dataIn: Buffer.alloc(0) };

    it('errno wins over everything else', function () {
      expectCheckCondition(resultFromSgIo({ ...base, errno: LinuxErrno.EINVAL, hostStatus: HostStatus.BUS_BUSY }), Sense.INVALID_FIELD_IN_CDB);
    });
    it('ENOTTY (no SG_IO on this fd) → INVALID OPERATION CODE (differs from QEMU: final, not retryable)', function () {
      expectCheckCondition(resultFromSgIo({ ...base, errno: LinuxErrno.ENOTTY }), Sense.INVALID_OPCODE);
    });
    it('EOPNOTSUPP → INVALID OPERATION CODE', function () {
      expectCheckCondition(resultFromSgIo({ ...base, errno: LinuxErrno.EOPNOTSUPP }), Sense.INVALID_OPCODE);
    });
    it('EBADE from the ioctl → RESERVATION CONFLICT', function () {
      expectStatusOnly(resultFromSgIo({ ...base, errno: LinuxErrno.EBADE }), Status.RESERVATION_CONFLICT);
    });
    it('host status wins over the device status and sense', function () {
      expectCheckCondition(
        resultFromSgIo({ ...base, hostStatus: HostStatus.TRANSPORT_DISRUPTED, status: Status.CHECK_CONDITION, sense: deviceSense }),
        Sense.TRANSPORT_DISRUPTED,
      );
    });
    it('driver timeout → BUSY', function () {
      expectStatusOnly(resultFromSgIo({ ...base, driverStatus: DriverStatus.TIMEOUT }), Status.BUSY);
    });
    it('DRIVER_SENSE alone does not count as a timeout (6 is compared, not masked)', function () {
      expectStatusOnly(resultFromSgIo({ ...base, driverStatus: DriverStatus.SENSE }), Status.GOOD);
    });
    it('CHECK CONDITION returns the device sense unchanged', function () {
      const result = resultFromSgIo({ ...base, status: Status.CHECK_CONDITION, driverStatus: DriverStatus.SENSE, sense: deviceSense });
      expect(result.status).to.equal(Status.CHECK_CONDITION);
      expect(result.sense.equals(deviceSense)).to.equal(true);
      expect(result.dataIn.length).to.equal(0);
    });
    it('RESERVATION CONFLICT from the device passes through', function () {
      expectStatusOnly(resultFromSgIo({ ...base, status: Status.RESERVATION_CONFLICT }), Status.RESERVATION_CONFLICT);
    });
    it('GOOD keeps the data-in bytes and drops stray sense', function () {
      const data = Buffer.from([0, 0, 0, 1, 0, 0, 0, 0]);
      const result = resultFromSgIo({ ...base, status: Status.GOOD, dataIn: data, sense: deviceSense });
      expect(result.status).to.equal(Status.GOOD);
      expect(result.dataIn.equals(data)).to.equal(true);
      expect(result.sense.length).to.equal(0);
    });
    it('a non-GOOD status drops data-in', function () {
      expectStatusOnly(resultFromSgIo({ ...base, status: Status.BUSY, dataIn: Buffer.from([1, 2]) }), Status.BUSY);
    });
  });

  describe('resultFromBlockPrReturn (IOC_PR_* return: -errno or the SCSI result word)', function () {
    it('0 → GOOD', function () {
      expectStatusOnly(resultFromBlockPrReturn(0, 0), Status.GOOD);
    });
    it('-1/EOPNOTSUPP (no pr_ops) → INVALID OPERATION CODE', function () {
      expectCheckCondition(resultFromBlockPrReturn(-1, LinuxErrno.EOPNOTSUPP), Sense.INVALID_OPCODE);
    });
    it('-1/ENOTTY (not a block device) → INVALID OPERATION CODE', function () {
      expectCheckCondition(resultFromBlockPrReturn(-1, LinuxErrno.ENOTTY), Sense.INVALID_OPCODE);
    });
    it('-1/EINVAL (6.5+: ILLEGAL REQUEST from the target) → INVALID FIELD IN CDB', function () {
      expectCheckCondition(resultFromBlockPrReturn(-1, LinuxErrno.EINVAL), Sense.INVALID_FIELD_IN_CDB);
    });
    it('-1/EPERM (no CAP_SYS_ADMIN) → I/O PROCESS TERMINATED', function () {
      expectCheckCondition(resultFromBlockPrReturn(-1, LinuxErrno.EPERM), Sense.IO_ERROR);
    });
    it('-1 with errno 0 is still a failure', function () {
      expectCheckCondition(resultFromBlockPrReturn(-1, 0), Sense.IO_ERROR);
    });
    it('0x18 → RESERVATION CONFLICT (sd_pr_command returns the status byte)', function () {
      expectStatusOnly(resultFromBlockPrReturn(0x18, 0), Status.RESERVATION_CONFLICT);
    });
    it('0x02 (CHECK CONDITION / PR_STS_IOERR; the kernel kept the sense) → I/O PROCESS TERMINATED', function () {
      expectCheckCondition(resultFromBlockPrReturn(0x02, 0), Sense.IO_ERROR);
    });
    it('0x08000002 (pre-5.14 DRIVER_SENSE | CHECK CONDITION) → I/O PROCESS TERMINATED', function () {
      expectCheckCondition(resultFromBlockPrReturn(0x08000002, 0), Sense.IO_ERROR);
    });
    it('0x08 → BUSY', function () {
      expectStatusOnly(resultFromBlockPrReturn(0x08, 0), Status.BUSY);
    });
    it('DID_NO_CONNECT << 16 (PR_STS_PATH_FAILED) → LUN NOT RESPONDING', function () {
      expectCheckCondition(resultFromBlockPrReturn(HostStatus.NO_CONNECT << 16, 0), HostErrorSense.LUN_NOT_RESPONDING);
    });
    it('DID_TRANSPORT_DISRUPTED << 16 (PR_STS_RETRY_PATH_FAILURE) → I_T NEXUS LOSS', function () {
      expectCheckCondition(resultFromBlockPrReturn(0xe0000, 0), Sense.TRANSPORT_DISRUPTED);
    });
    it('DID_TRANSPORT_FAILFAST << 16 (PR_STS_PATH_FAST_FAILED) → I/O PROCESS TERMINATED', function () {
      expectCheckCondition(resultFromBlockPrReturn(0xf0000, 0), Sense.IO_ERROR);
    });
    it('a host byte wins over the status byte', function () {
      expectStatusOnly(resultFromBlockPrReturn((HostStatus.BUS_BUSY << 16) | 0x18, 0), Status.BUSY);
    });
  });
});
