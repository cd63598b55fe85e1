// What the mpath backend hands to libmpathpersist (hosted in the worker child,
// mpath-worker-client.ts): every PR OUT but the registrations, and PR IN when no path
// answers. Two hazards of multipath-tools 0.9.4 are handled before and after the call:
//
// - RELEASE: 0.9.4 answers a reservation that survives the RELEASE with READ FULL STATUS +
//   CLEAR + re-registration, i.e. it clears another node's reservation. SPC-4 makes RELEASE
//   by a non-holder a no-op, so READ RESERVATION comes first: unless our key holds it (or
//   it is an all-registrants type) the answer is given here (GOOD when our key is
//   registered, RESERVATION CONFLICT when not) and the library is not called. The holder
//   releasing with the wrong type is answered INVALID RELEASE OF PERSISTENT RESERVATION
//   here for the same reason (the reservation would survive and 0.9.4 would CLEAR).
// - PREEMPT / PREEMPT AND ABORT of our own key, or of an all-registrants reservation: the
//   library sends it on one path, which removes the registrations of every other path;
//   afterwards every answering path is re-registered with REGISTER AND IGNORE.
//
// Outcomes of the library call map to SCSI as qemu-pr-helper's mpath_reconstruct_sense
// (mpath-result.ts), with TEST UNIT READY over SG_IO on the map fd. A worker that dies
// during a command answers CHECK CONDITION, ABORTED COMMAND / LOGICAL UNIT COMMUNICATION
// FAILURE (0B/08/00), which is what QEMU shows a guest when libmpathpersist fails.

import { MPATH_PR, mpathPrName } from '../../../ffi/libmpathpersist';
import { sgIo } from '../../../ffi/sg-io';
import type { DevNumber } from '../../device';
import { PrOutAction, PrType, Status } from '../../scsi/constants';
import { resultFromSgIo } from '../../scsi/errno-sense';
import { checkCondition, good, reservationConflict, Sense, type ScsiResult } from '../../scsi/sense';
import type { DeviceHandle } from '../backend';
import type { MapDevice } from './map-device';
import { hex, logReport } from './mpath-log';
import { libraryFlags, type MpathInPlan, type MpathOutPlan } from './mpath-plan';
import { describeMpathResult, mpathResultToScsi } from './mpath-result';
import type { MpathWorkerClient, WorkerLogger, WorkerOutcome } from './mpath-worker-client';
import type { MapTarget } from './mpath-worker-protocol';
import { nothingRepaired, type PathRepair, type PathServices } from './path-agreement';
import type { PathIo } from './path-io';

const TEST_UNIT_READY = Buffer.from([0, 0, 0, 0, 0, 0]);
const ALL_REGISTRANTS_TYPES: readonly number[] = [PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS];

type Holder = { readonly key: bigint; readonly type: number };

/** How the library is reached for a map. */
export interface LibraryAccess {
  /** The worker that carries the map's library calls. */
  readonly workerFor: (rdev: DevNumber) => MpathWorkerClient;
  /** libmpathpersist verbosity (0..4). */
  readonly verbosity: number;
  /** SCSI timeout for TEST UNIT READY on the map. */
  readonly sgTimeoutMs: number;
}

export class LibraryCalls {
  private readonly paths: PathIo;
  private readonly logger?: WorkerLogger;

  constructor(
    private readonly services: PathServices,
    private readonly library: LibraryAccess,
  ) {
    this.paths = services.paths;
    this.logger = services.logger;
  }

  /** PR IN through the library, for when no path answers it. */
  async prIn(device: DeviceHandle, mapDevice: MapDevice, plan: MpathInPlan): Promise<ScsiResult> {
    this.logger?.info({ map: mapDevice.name }, 'mpath: no path of the map answered PR IN; asking libmpathpersist');
    const outcome = await this.library.workerFor(mapDevice.rdev).call({
      kind: 'in',
      target: targetOf(device, mapDevice),
      serviceAction: plan.serviceAction,
      allocationLength: plan.allocationLength,
      verbose: this.library.verbosity,
    });
    return this.resultOf(device, mapDevice.name, outcome, `PR IN ${plan.serviceAction}`);
  }

  /** RESERVE, RELEASE, CLEAR, PREEMPT and PREEMPT AND ABORT. */
  async prOut(device: DeviceHandle, mapDevice: MapDevice, plan: MpathOutPlan): Promise<ScsiResult> {
    const map = mapDevice.name;
    const sa = plan.serviceAction;
    let before: Holder | undefined;
    if (sa === PrOutAction.RELEASE || sa === PrOutAction.PREEMPT || sa === PrOutAction.PREEMPT_AND_ABORT) {
      const reservation = await this.paths.readReservationOnAnyPath(mapDevice.paths);
      if (!reservation.ok) return reservation.result;
      before = reservation.holder;
    }
    if (sa === PrOutAction.RELEASE) {
      const answered = await this.releaseWithoutLibrary(mapDevice, plan, before);
      if (answered) return answered;
    }

    const outcome = await this.library.workerFor(mapDevice.rdev).call({
      kind: 'out',
      target: targetOf(device, mapDevice),
      serviceAction: sa,
      scope: plan.scope,
      type: plan.type,
      params: { key: plan.reservationKey, serviceActionKey: plan.serviceActionKey, flags: libraryFlags(plan) },
      verbose: this.library.verbosity,
    });
    const result = await this.resultOf(device, map, outcome, `PR OUT ${sa}`);
    if (result.status !== Status.GOOD) return result;

    if (sa === PrOutAction.CLEAR) this.services.returningPaths.cancel(mapDevice.rdev);
    const repair = await this.reRegisterAfterPreempt(mapDevice, plan, before);
    logReport(this.logger, { map, rc: outcome.kind === 'reply' ? outcome.rc : undefined, repairedPaths: repair.repaired, unreachablePaths: repair.unreachable });
    if (!repair.ok) return repair.result;
    return result;
  }

  /**
   * RELEASE answered here when the library would do harm: by a non-holder (SPC-4: nothing to
   * release; only an unregistered I_T nexus gets RESERVATION CONFLICT), or by the holder with
   * another type. Undefined when the library is to carry it.
   */
  private async releaseWithoutLibrary(mapDevice: MapDevice, plan: MpathOutPlan, before: Holder | undefined): Promise<ScsiResult | undefined> {
    const map = mapDevice.name;
    const holdsIt = before !== undefined && (before.key === plan.reservationKey || ALL_REGISTRANTS_TYPES.includes(before.type));
    if (!holdsIt) {
      const keys = await this.paths.readKeysOnAnyPath(mapDevice.paths);
      if (!keys.ok) return keys.result;
      const registered = keys.keys.includes(plan.reservationKey);
      logReport(this.logger, { map, repairedPaths: [], unreachablePaths: [], releaseShortCircuited: true });
      this.logger?.info(
        { map, key: hex(plan.reservationKey), holder: before ? hex(before.key) : null, registered },
        'mpath: RELEASE by a non-holder answered without libmpathpersist (0.9.4 would CLEAR the other reservation)',
      );
      return registered ? good() : reservationConflict();
    }
    if (before && before.key === plan.reservationKey && before.type !== plan.type && !ALL_REGISTRANTS_TYPES.includes(before.type)) {
      // SPC-4: the holder releasing with another type gets INVALID RELEASE OF PERSISTENT
      // RESERVATION and the reservation stays. 0.9.4 would see the reservation survive its
      // RELEASE and CLEAR the logical unit, dropping every other node's registration.
      this.logger?.info({ map, key: hex(plan.reservationKey), held: before.type, asked: plan.type }, 'mpath: RELEASE with the wrong type refused without libmpathpersist');
      return checkCondition(Sense.INVALID_RELEASE_OF_PERSISTENT_RESERVATION);
    }
    return undefined;
  }

  /** After a PREEMPT the library sent on one path, which removed the registrations of every other path: our key goes back on each. */
  private async reRegisterAfterPreempt(mapDevice: MapDevice, plan: MpathOutPlan, before: Holder | undefined): Promise<PathRepair> {
    const sa = plan.serviceAction;
    if ((sa !== PrOutAction.PREEMPT && sa !== PrOutAction.PREEMPT_AND_ABORT) || plan.reservationKey === 0n) return nothingRepaired();
    const selfPreempt = plan.serviceActionKey === plan.reservationKey;
    const allRegistrants = before !== undefined && ALL_REGISTRANTS_TYPES.includes(before.type);
    if (!selfPreempt && !allRegistrants) return nothingRepaired();
    const flags = { aptpl: plan.aptpl, allTgPt: plan.allTgPt };
    const repair = await this.paths.withOpenPaths(mapDevice.paths, (paths) => this.services.agreement.reRegisterEveryPath(paths, plan.reservationKey, flags));
    if (repair.ok) {
      await this.services.multipathd.pointPrKeyAt(mapDevice.name, { key: plan.reservationKey, aptpl: plan.aptpl });
      await this.services.multipathd.setPrStatus(mapDevice.name, true);
    }
    return repair;
  }

  private async resultOf(device: DeviceHandle, map: string, outcome: WorkerOutcome, what: string): Promise<ScsiResult> {
    switch (outcome.kind) {
      case 'reply': {
        if (outcome.rc !== MPATH_PR.SUCCESS) {
          this.logger?.info({ map, rc: outcome.rc, elapsedMs: outcome.elapsedMs }, `mpath: ${what}: ${describeMpathResult(outcome.rc)}`);
        } else {
          this.logger?.debug({ map, elapsedMs: outcome.elapsedMs }, `mpath: ${what}: ${mpathPrName(outcome.rc)}`);
        }
        if (outcome.rc === MPATH_PR.SUCCESS && outcome.refused) {
          this.logger?.warn({ map, reason: outcome.refused }, `mpath: ${what}: answer refused`);
          return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
        }
        return mpathResultToScsi(outcome.rc, {
          testUnitReady: async () => resultFromSgIo(await sgIo(device.fd, { cdb: TEST_UNIT_READY, direction: 'none', timeoutMs: this.library.sgTimeoutMs })),
          dataIn: outcome.wire ? Buffer.from(outcome.wire) : undefined,
        });
      }
      case 'error':
        this.logger?.warn({ map, reason: outcome.message }, `mpath: ${what}: not sent`);
        return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
      case 'died':
      case 'unavailable':
        this.logger?.error({ map, reason: outcome.reason }, `mpath: ${what}: libmpathpersist worker ${outcome.kind}`);
        return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    }
  }
}

/** The map as the worker names it: its dev_t, and the node the guest's fd was opened on. */
function targetOf(device: DeviceHandle, mapDevice: MapDevice): MapTarget {
  return { major: mapDevice.rdev.major, minor: mapDevice.rdev.minor, path: device.path };
}
