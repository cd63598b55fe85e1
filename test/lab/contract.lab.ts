// @lab {"fabric": "tcm_loop", "paths": 2, "secondHost": true}
// @lab {"fabric": "iscsi", "paths": 2, "secondHost": true}
//
// The backend contract (test/contract/pr-backend-contract.ts) against LIO: the sg
// backend on one path of host A, the blkpr backend on one path and on the dm-multipath
// map, each with host B's device (a second initiator, outside multipath) as the other
// host. Cases a backend or the fabric cannot run are pending with the reason.

import * as fs from 'node:fs';
import { BlkprBackend } from '../../src/backends/blkpr/blkpr-backend';
import { SgBackend } from '../../src/backends/sg/sg-backend';
import { bindBackend } from '../../src/backends/pr-commands';
import type { PrBackend } from '../../src/backends/backend';
import { describeDeviceFd } from '../../src/device';
import { describePrBackendContract, type ContractCase, type ContractFixture } from '../contract/pr-backend-contract';
import { labTopology, multipathd } from './harness/lab-guest';

const topology = labTopology();
if (!topology.hostB) throw new Error('contract.lab.ts needs a lab with secondHost: true');
const hostBDevice = topology.hostB.device;

const PREEMPT_ABORT_DEADLOCK =
  'PREEMPT AND ABORT deadlocks LIO over tcm_loop (core_tmr_lun_reset flushes the submission work it runs in); run on the iSCSI fabric';

// What <linux/pr.h> on 6.1 cannot express (src/backends/blkpr/translate.ts).
const BLKPR_LIMITS: Partial<Record<ContractCase, string>> = {
  'register-all-tg-pt': 'IOC_PR_REGISTER has no ALL_TG_PT flag (sd_pr_command always sends ALL_TG_PT=0); blkpr refuses it',
  'register-spec-i-pt': 'IOC_PR_REGISTER carries no TransportIDs, so SPEC_I_PT cannot be sent; blkpr refuses it',
  'register-and-move': 'there is no IOC_PR_* ioctl for REGISTER AND MOVE; blkpr refuses it',
  'release-wrong-type':
    'the IOC_PR_RELEASE ioctl discards the sense data, so INVALID RELEASE OF PERSISTENT RESERVATION reaches the caller as CHECK CONDITION ABORTED COMMAND/I/O PROCESS TERMINATED',
};

/**
 * Why nothing but the case itself may talk to host B's disk: LIO keeps one unit
 * attention per I_T nexus, and whoever sends the next command there consumes it
 * ('unit-attention-after-preempt' then sees GOOD). multipathd's path checker would if
 * the disk joined a map; udevd would through the blkid probe of the "change" event it
 * synthesizes when a writable fd on a watched disk is closed, which every fixture
 * cleanup does (guest-setup.sh removes the watch). Checked once, failing with the
 * reason, so a harness regression does not show up as a flaky GOOD.
 */
let hostBIsolation: string | undefined;
function checkHostBIsolated(): void {
  if (hostBIsolation === 'ok') return;
  const name = hostBDevice.replace(/^\/dev\//, '');
  const problems: string[] = [];
  const pathsSeen = multipathd(['show', 'paths', 'raw', 'format', '%d']).split('\n').map((line) => line.trim());
  if (pathsSeen.includes(name)) problems.push(`multipathd monitors ${name} (not blacklisted), so its checker can consume host B's attentions`);
  const devNumbers = fs.readFileSync(`/sys/class/block/${name}/dev`, 'utf8').trim();
  const watchDir = '/run/udev/watch';
  if (!fs.existsSync(watchDir)) problems.push(`${watchDir} is missing: cannot tell whether udevd watches ${name}`);
  else if (fs.existsSync(`${watchDir}/b${devNumbers}`)) problems.push(`udevd watches ${name} (b${devNumbers}): closing a writable fd makes its blkid probe consume host B's attentions`);
  hostBIsolation = problems.length === 0 ? 'ok' : problems.join('; ');
  if (hostBIsolation !== 'ok') throw new Error(`host B's disk is not isolated: ${hostBIsolation}`);
}

function labFixture(
  makeBackend: () => PrBackend,
  hostADevice: string,
  registrationsA: number,
  unsupported: Partial<Record<ContractCase, string>>,
): () => Promise<ContractFixture> {
  return async () => {
    checkHostBIsolated();
    const fds = [fs.openSync(hostADevice, 'r+'), fs.openSync(hostADevice, 'r'), fs.openSync(hostBDevice, 'r+')];
    const backendA = makeBackend();
    const backendB = makeBackend();
    return {
      hostA: bindBackend(backendA, describeDeviceFd(fds[0])),
      hostAReadOnly: bindBackend(backendA, describeDeviceFd(fds[1])),
      hostB: bindBackend(backendB, describeDeviceFd(fds[2])),
      registrations: { A: registrationsA, B: 1 },
      unsupported: {
        ...unsupported,
        ...(topology.fabric === 'tcm_loop' ? { 'preempt-abort': PREEMPT_ABORT_DEADLOCK } : {}),
      },
      cleanup: async () => {
        await backendA.close();
        await backendB.close();
        for (const fd of fds) fs.closeSync(fd);
      },
    };
  };
}

// LIO answers differently from SPC-4 here; the pass-through reports LIO's answer faithfully.
// fixtures/differential/lio-deviations.json records each deviation with its clause.
const LIO_DEVIATIONS: Partial<Record<ContractCase, string>> = {
  'release-wrong-type':
    'LIO answers RELEASE with a mismatched TYPE by RESERVATION CONFLICT, not INVALID RELEASE OF PERSISTENT RESERVATION (SPC-4 5.14.11.2.2; known LIO deviation)',
};

const fabric = topology.fabric;
const pathA = topology.pathDevices[0];

describePrBackendContract(`sg on ${pathA} (${fabric}, LIO)`, labFixture(() => new SgBackend(), pathA, 1, LIO_DEVIATIONS));
describePrBackendContract(`blkpr on ${pathA} (${fabric}, LIO)`, labFixture(() => new BlkprBackend(), pathA, 1, BLKPR_LIMITS));
describePrBackendContract(
  `blkpr on ${topology.mpathDevice} (${fabric}, LIO, ${topology.pathDevices.length} paths)`,
  labFixture(() => new BlkprBackend(), topology.mpathDevice, topology.pathDevices.length, BLKPR_LIMITS),
);
