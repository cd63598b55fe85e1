// @lab {"fabric": "tcm_loop", "paths": 2, "secondHost": true}
// @lab {"fabric": "iscsi", "paths": 2, "secondHost": true}
//
// The backend contract (test/contract/pr-backend-contract.ts) against LIO: the sg
// backend on one path of host A, the blkpr backend on one path and on the dm-multipath
// map, and the mpath backend (libmpathpersist, multipathd) on the map, each with host B's
// device (a second initiator, outside multipath) as the other host. Cases a backend or
// the fabric cannot run are pending with the reason; commands a backend refuses by design
// are checked to be refused as documented. sg_persist reads which key each of host A's
// nexuses holds, so the REGISTER cases check every path, not only the count.

import * as fs from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { BlkprBackend } from '../../src/backends/blkpr/blkpr-backend';
import { createMpathBackend } from '../../src/backends/mpath/mpath-backend';
import { SgBackend } from '../../src/backends/sg/sg-backend';
import { bindBackend } from '../../src/backends/pr-commands';
import type { PrBackend } from '../../src/backends/backend';
import { describeDeviceFd } from '../../src/device';
import { Sense } from '../../src/scsi/sense';
import { relativeTargetPortOf } from '../../src/scsi/vpd';
import {
  describePrBackendContract,
  type ContractCase,
  type ContractFixture,
  type DocumentedRefusal,
  type NexusKeys,
  type RefusableCase,
} from '../contract/pr-backend-contract';
import { labTopology, multipathd, readFullStatus } from './harness/lab-guest';

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

/**
 * The keys each of `paths` (host A's I_T nexuses) holds, from sg_persist's READ FULL
 * STATUS: a registration belongs to a path when it was made through the path's target port
 * (VPD page 83h) by the path's initiator port.
 */
function nexusKeysOf(paths: readonly string[]): () => Promise<NexusKeys[]> {
  return async () => {
    const entries = readFullStatus(topology.pathDevices[0]).entries;
    return paths.map((device) => {
      const name = path.basename(device);
      const port = relativeTargetPortOf(fs.readFileSync(`/sys/class/block/${name}/device/vpd_pg83`));
      if (port === undefined) throw new Error(`${device} reports no relative target port in VPD page 83h`);
      const initiator = topology.pathInitiators[topology.pathDevices.indexOf(device)];
      // tcm_loop names a nexus naa.<hex>, which READ FULL STATUS shows as a SAS address; iSCSI by its IQN.
      const transportId = topology.fabric === 'tcm_loop' ? `SAS address: 0x${initiator.replace(/^naa\./, '')}` : initiator;
      const keys = entries.filter((e) => e.relativeTargetPort === port && e.transportId.includes(transportId)).map((e) => e.key);
      return { nexus: `${name} (target port ${port})`, keys };
    });
  };
}

interface LabBackend {
  /** Host A's device: one path or the map. */
  readonly device: string;
  /** Host A's paths behind `device`, one I_T nexus each. */
  readonly paths: readonly string[];
  readonly hostA: () => PrBackend;
  /** Host A's backend outlives the case (its owner closes it), as the daemon keeps one. */
  readonly hostAOutlivesCase?: boolean;
  /** Host B's backend on its plain disk; the same kind as host A's unless that one needs a map. */
  readonly hostB?: () => PrBackend;
  readonly unsupported?: Partial<Record<ContractCase, string>>;
  readonly refused?: Partial<Record<RefusableCase, DocumentedRefusal>>;
  /** After each case, once the LU is clear and the backends closed. */
  readonly afterCase?: () => void;
}

function labFixture(setup: LabBackend): () => Promise<ContractFixture> {
  return async () => {
    checkHostBIsolated();
    const fds = [fs.openSync(setup.device, 'r+'), fs.openSync(setup.device, 'r'), fs.openSync(hostBDevice, 'r+')];
    const backendA = setup.hostA();
    const backendB = (setup.hostB ?? setup.hostA)();
    return {
      hostA: bindBackend(backendA, describeDeviceFd(fds[0])),
      hostAReadOnly: bindBackend(backendA, describeDeviceFd(fds[1])),
      hostB: bindBackend(backendB, describeDeviceFd(fds[2])),
      registrations: { A: setup.paths.length, B: 1 },
      unsupported: {
        ...setup.unsupported,
        ...(topology.fabric === 'tcm_loop' ? { 'preempt-abort': PREEMPT_ABORT_DEADLOCK } : {}),
      },
      refused: setup.refused,
      hostANexusKeys: nexusKeysOf(setup.paths),
      cleanup: async () => {
        if (!setup.hostAOutlivesCase) await backendA.close();
        await backendB.close();
        for (const fd of fds) fs.closeSync(fd);
        setup.afterCase?.();
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

// What the mpath backend refuses on a map by design (src/backends/mpath/mpath-plan.ts).
const MPATH_REFUSALS: Partial<Record<RefusableCase, DocumentedRefusal>> = {
  'register-spec-i-pt': {
    condition: Sense.INVALID_FIELD_IN_PARAMETER_LIST,
    reason: 'libmpathpersist 0.9.4 sends the TransportIDs on the first path only, so SPEC_I_PT is refused on maps',
  },
  'register-and-move': {
    condition: Sense.INVALID_FIELD_IN_CDB,
    reason: "struct prout_param_descriptor cannot carry REGISTER AND MOVE's parameter list, so it is refused on maps (as qemu-pr-helper does)",
  },
};

const mpathLog = pino({ level: 'debug' }, pino.destination({ dest: path.join(topology.outputDir, 'contract-lab', 'mpath-backend.log'), mkdir: true, sync: true }));

/** One mpath backend for every case, as the daemon keeps one: its libmpathpersist worker starts once, not per case. */
let mpath: PrBackend | undefined;
function mpathBackend(): PrBackend {
  if (mpath) return mpath;
  const created = createMpathBackend({ logger: mpathLog });
  if (!created.ok) throw new Error(`the mpath backend cannot run in the lab: ${created.reason}`);
  mpath = created.backend;
  return mpath;
}

/** The backend tells multipathd its key; no case may hand that to the next case or suite. */
function forgetMultipathdKey(): void {
  multipathd(`unsetprkey map ${topology.mpathName}`);
  multipathd(`unsetprstatus map ${topology.mpathName}`);
}

const fabric = topology.fabric;
const pathA = topology.pathDevices[0];
const mapDevice = topology.mpathDevice;
const mapPaths = topology.pathDevices;

describePrBackendContract(`sg on ${pathA} (${fabric}, LIO)`, labFixture({ device: pathA, paths: [pathA], hostA: () => new SgBackend(), unsupported: LIO_DEVIATIONS }));
describePrBackendContract(`blkpr on ${pathA} (${fabric}, LIO)`, labFixture({ device: pathA, paths: [pathA], hostA: () => new BlkprBackend(), unsupported: BLKPR_LIMITS }));
describePrBackendContract(
  `blkpr on ${mapDevice} (${fabric}, LIO, ${mapPaths.length} paths)`,
  labFixture({ device: mapDevice, paths: mapPaths, hostA: () => new BlkprBackend(), unsupported: BLKPR_LIMITS }),
);
describe('mpath backend, one instance for every case', function () {
  after(async function () {
    await mpath?.close();
    mpath = undefined;
  });
  describePrBackendContract(
    `mpath on ${mapDevice} (${fabric}, LIO, ${mapPaths.length} paths; host B by sg)`,
    labFixture({
      device: mapDevice,
      paths: mapPaths,
      hostA: mpathBackend,
      hostAOutlivesCase: true,
      // Host B's disk is no map; it is the other node, whatever speaks for it.
      hostB: () => new SgBackend(),
      refused: MPATH_REFUSALS,
      afterCase: forgetMultipathdKey,
    }),
  );
});
