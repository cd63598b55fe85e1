// The dm-multipath backend. Each I_T nexus of a map is a path, and the guest must look like
// one initiator to the logical unit, so what needs every path is done on every path over
// SG_IO, and the rest goes through libmpathpersist, hosted in an isolated child process
// (mpath-worker-client.ts). The known hazards of multipath-tools 0.9.4
// (shared/reference/libmpathpersist-multipathd.md §2, §6) are handled here:
//
// - REGISTER / REGISTER AND IGNORE are fanned out by this backend (register()), not by the
//   library: 0.9.4 skips paths its own checker thinks are down (a path in a short outage
//   then stays unregistered while the guest hears GOOD), "rolls back" a partial failure by
//   unregistering the paths that succeeded, and re-discovers every path of the host on each
//   call (about 100 ms). The fan-out is all-or-nothing over the paths that answer; READ FULL
//   STATUS on every path checks that each path's target port holds the key; multipathd gets the key before the first path and
//   prstatus after, as the library orders it; paths that did not answer are registered by
//   multipathd on reinstate and, for outages its checker never saw, by the returning-path
//   watch (returning-paths.ts).
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
// - PR IN goes by SG_IO on the first path that answers (the data describes the LU, any path
//   gives the whole answer), never on the map, where the kernel retries forever while
//   queue_if_no_path holds I/O; the library is the fallback when no path answers.
//
// Outcomes of the library call map to SCSI as qemu-pr-helper's mpath_reconstruct_sense
// (mpath-result.ts), with TEST UNIT READY over SG_IO on the map fd. A worker that dies
// during a command answers CHECK CONDITION, ABORTED COMMAND / LOGICAL UNIT COMMUNICATION
// FAILURE (0B/08/00), which is what QEMU shows a guest when libmpathpersist fails.

import { loadLibmpathpersist, MPATH_PR, mpathPrName } from '../../../ffi/libmpathpersist';
import { sgIo } from '../../../ffi/sg-io';
import { MultipathdClient } from '../../multipathd/client';
import { readHostReservationKeySetting, reservationKeyWarning, type ReservationKeySetting } from '../../multipathd/multipath-conf';
import { PrOutAction, PrType, Status } from '../../scsi/constants';
import { resultFromSgIo } from '../../scsi/errno-sense';
import { checkCondition, good, reservationConflict, Sense, type ScsiResult } from '../../scsi/sense';
import type { DeviceHandle, ExecuteOptions, PrBackend } from '../backend';
import { describeHandle, describeIdentity, formatDevNumber, hostDeviceTree, type DevNumber, type DeviceTree } from '../../device';
import type { PrCommand } from '../../scsi/pr-command';
import { DeviceQueue } from '../sg/device-queue';
import { DEFAULT_SG_TIMEOUT_MS } from '../sg/pass-through';
import { mapOf, type MapDevice } from './map-device';
import { libraryFlags, planMpathCommand, type MpathPlan } from './mpath-plan';
import { describeMpathResult, mpathResultToScsi } from './mpath-result';
import { MpathWorkerClient, type MpathWorkerClientOptions, type WorkerLogger, type WorkerOutcome } from './mpath-worker-client';
import type { MapTarget } from './mpath-worker-protocol';
import { isTransportFailure, PathIo, pathsMissingKey, registrationsWithKey, type OpenedPath, type PathTransport } from './path-io';
import { ReturningPathWatch, type ReturningPathWatchOptions, type WatchedRegistration } from './returning-paths';

export interface MpathBackendOptions {
  readonly logger?: WorkerLogger;
  /** The worker client, or options for the one the backend creates. */
  readonly worker?: MpathWorkerClient | MpathWorkerClientOptions;
  /** multipathd, for keeping prkey/prstatus in step; null to leave multipathd alone. */
  readonly multipathd?: MultipathdClient | null;
  /** multipath.conf's reservation_key setting (src/multipathd/multipath-conf.ts reads the host's). */
  readonly reservationKeySetting: ReservationKeySetting;
  /** SCSI timeout for the per-path SG_IO commands and TEST UNIT READY. */
  readonly sgTimeoutMs?: number;
  /** libmpathpersist verbosity (0..4); its log goes to the logger at debug. */
  readonly libraryVerbosity?: number;
  /** How often paths left unregistered by a registration are checked again. */
  readonly returningPaths?: Pick<ReturningPathWatchOptions, 'intervalMs' | 'maxIntervalMs'>;
  /** Where sysfs and the path nodes are; tests pass a fake tree. Default the host's. */
  readonly deviceTree?: DeviceTree;
  /** Tests only: a fake in place of SG_IO on the paths, for faults a real LU cannot produce on demand. */
  readonly pathTransport?: PathTransport;
}

/** What the backend did beyond the library call, for tests and the audit log. */
export interface MpathCommandReport {
  readonly map: string;
  readonly rc?: number;
  /** Paths that took a REGISTER / REGISTER AND IGNORE in the fan-out. */
  readonly registeredPaths?: readonly string[];
  /** Paths re-registered (or unregistered) with REGISTER AND IGNORE because the paths disagreed. */
  readonly repairedPaths: readonly string[];
  /** Paths put back to the previous key after another path refused the registration. */
  readonly rolledBackPaths?: readonly string[];
  /** Paths that did not answer (down); registered by multipathd or the returning-path watch when they answer again. */
  readonly unreachablePaths: readonly string[];
  /** RELEASE answered without calling the library because another key holds the reservation. */
  readonly releaseShortCircuited?: boolean;
}

const TEST_UNIT_READY = Buffer.from([0, 0, 0, 0, 0, 0]);
const ALL_REGISTRANTS_TYPES: readonly number[] = [PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS];

function hex(key: bigint): string {
  return `0x${key.toString(16)}`;
}

export class MpathBackend implements PrBackend {
  readonly name = 'mpath' as const;
  /**
   * One libmpathpersist child per map: a call that hangs on one map (all paths down under
   * queue_if_no_path) then delays only that map's commands, never another map's. Within a
   * map, calls are serialised by the device queue. An injected client serves every map.
   */
  private readonly injectedWorker?: MpathWorkerClient;
  private readonly workerOptions: MpathWorkerClientOptions;
  private readonly workers = new Map<string, MpathWorkerClient>();
  private readonly reservationKeySetting: ReservationKeySetting;
  private readonly logger?: WorkerLogger;
  private readonly multipathd: MultipathdClient | null;
  private readonly sgTimeoutMs: number;
  private readonly verbosity: number;
  private readonly deviceTree: DeviceTree;
  private readonly queue = new DeviceQueue();
  private closed = false;
  private readonly returningPaths: ReturningPathWatch;
  private readonly paths: PathIo;
  /** The report of the last command per map, for tests and diagnostics. */
  readonly lastReport = new Map<string, MpathCommandReport>();

  constructor(options: MpathBackendOptions) {
    this.logger = options.logger;
    if (options.worker instanceof MpathWorkerClient) this.injectedWorker = options.worker;
    this.workerOptions = { logger: options.logger, ...(options.worker instanceof MpathWorkerClient ? {} : options.worker) };
    this.multipathd = options.multipathd ?? null;
    this.sgTimeoutMs = options.sgTimeoutMs ?? DEFAULT_SG_TIMEOUT_MS;
    this.verbosity = options.libraryVerbosity ?? 2;
    this.deviceTree = options.deviceTree ?? hostDeviceTree;
    this.paths = new PathIo({ timeoutMs: this.sgTimeoutMs, deviceTree: this.deviceTree, transport: options.pathTransport });
    this.reservationKeySetting = options.reservationKeySetting;
    this.returningPaths = new ReturningPathWatch((map, registration) => this.checkReturningPaths(map, registration), {
      ...options.returningPaths,
      onError: (map, err) => this.logger?.warn({ map: formatDevNumber(map), reason: (err as Error).message }, 'mpath: checking returning paths failed; will try again'),
    });
    this.warnAboutReservationKey();
  }

  private warnAboutReservationKey(): void {
    const warning = reservationKeyWarning(this.reservationKeySetting);
    if (warning) this.logger?.warn(warning.fields, warning.message);
  }

  async execute(device: DeviceHandle, command: PrCommand, options?: ExecuteOptions): Promise<ScsiResult> {
    if (this.closed) throw new Error('MpathBackend is closed');
    const plan = planMpathCommand(command);
    if (plan.kind === 'refuse') {
      this.logger?.debug({ device: device.path, reason: plan.reason }, 'mpath: command refused');
      return plan.result;
    }
    const description = describeHandle(device, this.deviceTree);
    const rdev = description.rdev;
    if (!rdev || device.fd < 0) {
      this.logger?.warn({ device: device.path }, 'mpath: no open block device to work on');
      return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    }
    return this.queue.run(formatDevNumber(rdev), () => this.run(device, mapOf(rdev, description), plan), options?.signal);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.returningPaths.close();
    await this.queue.idle();
    await Promise.all([...this.workers.values(), ...(this.injectedWorker ? [this.injectedWorker] : [])].map((worker) => worker.close()));
  }

  /** How many times a library child was started, over every map (tests, diagnostics). */
  get workerStarts(): number {
    let starts = this.injectedWorker?.starts ?? 0;
    for (const worker of this.workers.values()) starts += worker.starts;
    return starts;
  }

  private workerFor(rdev: DevNumber): MpathWorkerClient {
    if (this.injectedWorker) return this.injectedWorker;
    const key = formatDevNumber(rdev);
    let worker = this.workers.get(key);
    if (!worker) {
      worker = new MpathWorkerClient(this.workerOptions);
      this.workers.set(key, worker);
    }
    return worker;
  }

  // -------------------------------------------------------------------------------------

  private async run(device: DeviceHandle, mapDevice: MapDevice, plan: Exclude<MpathPlan, { kind: 'refuse' }>): Promise<ScsiResult> {
    const map = mapDevice.name;
    const target: MapTarget = { major: mapDevice.rdev.major, minor: mapDevice.rdev.minor, path: device.path };
    if (plan.kind === 'in') {
      const answered = await this.paths.prInOnAnyPath(mapDevice.paths, plan.command);
      if (answered) return answered.result;
      if (!plan.libraryFallback) return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
      this.logger?.info({ map }, 'mpath: no path of the map answered PR IN; asking libmpathpersist');
      const outcome = await this.workerFor(mapDevice.rdev).call({
        kind: 'in',
        target,
        serviceAction: plan.serviceAction,
        allocationLength: plan.allocationLength,
        verbose: this.verbosity,
      });
      return this.libraryResult(device, map, outcome, `PR IN ${plan.serviceAction}`);
    }
    if (plan.serviceAction === PrOutAction.REGISTER || plan.serviceAction === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY) {
      return this.register(mapDevice, plan);
    }
    return this.runLibraryOut(device, mapDevice, target, plan);
  }

  /**
   * REGISTER / REGISTER AND IGNORE, fanned out to every path over SG_IO. The guest's command
   * goes unchanged to every path at once; a path whose nexus missed an earlier registration
   * answers RESERVATION CONFLICT to a REGISTER that the others accept, and then gets REGISTER
   * AND IGNORE with the new key. A path that does not answer is left to multipathd (told
   * the key first, as libmpathpersist does) and to the returning-path watch. A path that
   * refuses what another accepted rolls the ones that took it back, so the LU ends with the
   * new key everywhere or nowhere, and the reply says which.
   */
  private async register(mapDevice: MapDevice, plan: OutPlan): Promise<ScsiResult> {
    const map = mapDevice.name;
    const newKey = plan.serviceActionKey;
    const flags = { aptpl: plan.aptpl, allTgPt: plan.allTgPt };
    const fixed = this.reservationKeySetting.source === 'key' ? this.reservationKeySetting.key : undefined;
    if (fixed !== undefined && newKey !== 0n && newKey !== fixed) {
      // multipathd registers returning paths with the key multipath.conf fixes, so any other
      // key would leave them inconsistent; libmpathpersist refuses it too (SYNTAX_ERROR,
      // which QEMU shows as LUN COMMUNICATION FAILURE).
      this.logger?.warn({ map, key: hex(newKey), configured: hex(fixed) }, 'mpath: REGISTER refused: multipath.conf fixes reservation_key to another key');
      return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    }
    this.returningPaths.cancel(mapDevice.rdev);
    const restoreMultipathd = await this.pointMultipathdAt(map, newKey === 0n ? null : { key: newKey, aptpl: plan.aptpl });

    return this.paths.withOpenPaths(mapDevice.paths, async (paths) => {
      const fanOut = await this.fanOutRegistration(perScsiHostIf(plan.allTgPt, paths), newKey, plan, flags);
      if (fanOut.kind !== 'registered') {
        await restoreMultipathd();
        this.lastReport.set(map, { map, repairedPaths: [], unreachablePaths: fanOut.unreachable, rolledBackPaths: fanOut.kind === 'rolled-back' ? fanOut.rolledBack : undefined });
        this.logger?.info(
          { map, key: hex(newKey), outcome: fanOut.kind, unreachable: fanOut.unreachable, status: fanOut.result.status },
          fanOut.kind === 'rolled-back' ? 'mpath: a path refused the registration the others took; rolled back on every path' : 'mpath: registration refused',
        );
        return fanOut.result;
      }

      // The device said GOOD on each path; READ FULL STATUS on each path checks that each
      // nexus holds the key (ALL_TG_PT registers whole initiator ports, which it cannot tell).
      // multipathd's prstatus is set meanwhile: it touches neither the paths nor the LU.
      const [repair] = await Promise.all([
        plan.allTgPt ? ({ ok: true, repaired: [], unreachable: [] } as PathRepair) : this.makePathsAgree(paths, newKey, flags, newKey === 0n ? plan.reservationKey : undefined),
        this.setMultipathdPrStatus(map, newKey !== 0n),
      ]);
      if (!repair.ok) {
        this.lastReport.set(map, { map, repairedPaths: repair.repaired, unreachablePaths: repair.unreachable });
        return repair.result;
      }
      const unreachable = [...new Set([...fanOut.unreachable, ...repair.unreachable])];
      this.lastReport.set(map, { map, registeredPaths: fanOut.registered, repairedPaths: repair.repaired, unreachablePaths: unreachable });
      if (newKey !== 0n && unreachable.length > 0 && !plan.allTgPt) {
        this.logger?.warn({ map, key: hex(newKey), unreachable }, 'mpath: registered on every answering path; the others get the key when they answer again');
        this.returningPaths.watch(mapDevice.rdev, { key: newKey, aptpl: plan.aptpl });
      }
      return good();
    });
  }

  private async fanOutRegistration(
    paths: readonly OpenedPath[],
    newKey: bigint,
    plan: OutPlan,
    flags: { aptpl: boolean; allTgPt: boolean },
  ): Promise<RegistrationFanOut> {
    const unreachable = paths.filter((p) => p.fd === undefined).map((p) => p.path.name);
    const open = paths.filter((p): p is OpenedPath & { fd: number } => p.fd !== undefined);
    // The paths are independent nexuses, so the guest's command goes to all of them at once.
    const first = await Promise.all(open.map(async (p) => ({ p, result: await this.paths.send(p.fd, plan.command) })));
    const tookIt: (OpenedPath & { fd: number })[] = [];
    const conflicted: (OpenedPath & { fd: number })[] = [];
    let refusal: { path: string; result: ScsiResult } | undefined;
    let conflict: ScsiResult | undefined;
    for (const { p, result } of first) {
      if (result.status === Status.GOOD) tookIt.push(p);
      else if (isTransportFailure(result)) unreachable.push(p.path.name);
      else if (result.status === Status.RESERVATION_CONFLICT) {
        conflict ??= result;
        conflicted.push(p);
      } else refusal ??= { path: p.path.name, result };
    }
    if (tookIt.length === 0) {
      // Refused everywhere (a bad field, APTPL unsupported, a key this initiator does not
      // hold), or no path answered: nothing has changed on any nexus.
      return { kind: 'refused', result: refusal?.result ?? conflict ?? checkCondition(Sense.LUN_COMMUNICATION_FAILURE), unreachable };
    }
    if (!refusal && conflicted.length > 0) {
      // A REGISTER that one nexus refused and another accepted: the refusing nexus missed an
      // earlier registration (a path that came back unregistered). It joins the others.
      this.logger?.warn({ paths: conflicted.map((p) => p.path.name) }, 'mpath: REGISTER met RESERVATION CONFLICT on a path that another path accepted; registering it with REGISTER AND IGNORE');
      const second = await Promise.all(conflicted.map(async (p) => ({ p, result: await this.paths.registerIgnore(p.fd, newKey, flags) })));
      for (const { p, result } of second) {
        if (result.status === Status.GOOD) tookIt.push(p);
        else if (isTransportFailure(result)) unreachable.push(p.path.name);
        else refusal ??= { path: p.path.name, result };
      }
    }
    const registered = tookIt.map((p) => p.path.name);
    if (!refusal) return { kind: 'registered', registered, unreachable };
    // Back to the key the guest registered under (REGISTER names it), or to no registration
    // (REGISTER AND IGNORE does not say which key each nexus had).
    const previousKey = plan.serviceAction === PrOutAction.REGISTER ? plan.reservationKey : 0n;
    this.logger?.error({ path: refusal.path, status: refusal.result.status, rollBackTo: hex(previousKey) }, 'mpath: a path refused the registration that another path accepted');
    await Promise.all(tookIt.map((p) => this.paths.registerIgnore(p.fd, previousKey, flags)));
    return { kind: 'rolled-back', result: refusal.result, rolledBack: registered, unreachable };
  }

  /** The returning-path watch's check: register the key on paths that answer again, while the key is still registered. */
  private checkReturningPaths(rdev: DevNumber, registration: WatchedRegistration): Promise<'done' | 'waiting'> {
    return this.queue.run(formatDevNumber(rdev), async () => {
      // Outside any command, so the map is described afresh: paths come and go between checks.
      const mapDevice = mapOf(rdev, describeIdentity({ kind: 'block', rdev }, formatDevNumber(rdev), this.deviceTree));
      const map = mapDevice.name;
      return this.paths.withOpenPaths(mapDevice.paths, async (paths) => {
        const { answering, unreachable } = await this.paths.registrationsOnPaths(paths);
        if (answering.length === 0) return unreachable.length === 0 ? 'done' : 'waiting';
        if (registrationsWithKey(answering, registration.key) === 0) {
          this.logger?.info({ map, key: hex(registration.key) }, 'mpath: the key is registered nowhere now (preempted or unregistered); returning paths stay unregistered');
          return 'done';
        }
        const { missing } = pathsMissingKey(answering, registration.key);
        if (missing.length > 0) {
          const repair = await this.reRegisterEveryPath(paths.filter((p) => missing.includes(p.path.name)), registration.key, { aptpl: registration.aptpl, allTgPt: false });
          this.logger?.info({ map, key: hex(registration.key), paths: repair.repaired, ok: repair.ok }, 'mpath: registered the key on paths that answer again');
          if (!repair.ok) return 'waiting';
        }
        return unreachable.length === 0 ? 'done' : 'waiting';
      });
    });
  }

  private async runLibraryOut(device: DeviceHandle, mapDevice: MapDevice, target: MapTarget, plan: OutPlan): Promise<ScsiResult> {
    const map = mapDevice.name;
    const sa = plan.serviceAction;
    let before: { key: bigint; type: number } | undefined;
    if (sa === PrOutAction.RELEASE || sa === PrOutAction.PREEMPT || sa === PrOutAction.PREEMPT_AND_ABORT) {
      const reservation = await this.paths.readReservationOnAnyPath(mapDevice.paths);
      if (!reservation.ok) return reservation.result;
      before = reservation.holder;
    }

    if (sa === PrOutAction.RELEASE) {
      const holdsIt = before !== undefined && (before.key === plan.reservationKey || ALL_REGISTRANTS_TYPES.includes(before.type));
      if (!holdsIt) {
        // SPC-4 RELEASE: no reservation, or one held by another nexus → nothing to release;
        // only an unregistered I_T nexus gets RESERVATION CONFLICT.
        const keys = await this.paths.readKeysOnAnyPath(mapDevice.paths);
        if (!keys.ok) return keys.result;
        const registered = keys.keys.includes(plan.reservationKey);
        this.lastReport.set(map, { map, repairedPaths: [], unreachablePaths: [], releaseShortCircuited: true });
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
    }

    const outcome = await this.workerFor(mapDevice.rdev).call({
      kind: 'out',
      target,
      serviceAction: sa,
      scope: plan.scope,
      type: plan.type,
      params: { key: plan.reservationKey, serviceActionKey: plan.serviceActionKey, flags: libraryFlags(plan) },
      verbose: this.verbosity,
    });
    const result = await this.libraryResult(device, map, outcome, `PR OUT ${sa}`);
    if (result.status !== Status.GOOD) return result;

    let repair: PathRepair = { ok: true, repaired: [], unreachable: [] };
    if (sa === PrOutAction.CLEAR) this.returningPaths.cancel(mapDevice.rdev);
    if ((sa === PrOutAction.PREEMPT || sa === PrOutAction.PREEMPT_AND_ABORT) && plan.reservationKey !== 0n) {
      const selfPreempt = plan.serviceActionKey === plan.reservationKey;
      const allRegistrants = before !== undefined && ALL_REGISTRANTS_TYPES.includes(before.type);
      if (selfPreempt || allRegistrants) {
        // The library sent it on one path, which removed the registrations of every other path.
        repair = await this.paths.withOpenPaths(mapDevice.paths, (paths) => this.reRegisterEveryPath(paths, plan.reservationKey, { aptpl: plan.aptpl, allTgPt: plan.allTgPt }));
        if (repair.ok) {
          await this.pointMultipathdAt(map, { key: plan.reservationKey, aptpl: plan.aptpl });
          await this.setMultipathdPrStatus(map, true);
        }
      }
    }
    this.lastReport.set(map, {
      map,
      rc: outcome.kind === 'reply' ? outcome.rc : undefined,
      repairedPaths: repair.repaired,
      unreachablePaths: repair.unreachable,
    });
    if (!repair.ok) return repair.result;
    return result;
  }

  private async libraryResult(device: DeviceHandle, map: string, outcome: WorkerOutcome, what: string): Promise<ScsiResult> {
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
          testUnitReady: () => this.testUnitReady(device.fd),
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

  private async testUnitReady(fd: number): Promise<ScsiResult> {
    return resultFromSgIo(await sgIo(fd, { cdb: TEST_UNIT_READY, direction: 'none', timeoutMs: this.sgTimeoutMs }));
  }

  /**
   * After a registration: the nexus of every path that answers must hold `key` (or, when
   * unregistering, no nexus may hold `oldKey`). The paths that do not are registered again
   * with REGISTER AND IGNORE (every answering path when unregistering), which is idempotent
   * per nexus.
   */
  private async makePathsAgree(paths: readonly OpenedPath[], key: bigint, flags: { aptpl: boolean; allTgPt: boolean }, oldKey?: bigint): Promise<PathRepair> {
    const { answering, unreachable, firstFailure } = await this.paths.registrationsOnPaths(paths);
    if (answering.length === 0) {
      this.logger?.error({ paths: unreachable }, 'mpath: no path of the map answers after the registration');
      return { ok: false, result: firstFailure ?? checkCondition(Sense.LUN_COMMUNICATION_FAILURE), repaired: [], unreachable };
    }
    if (oldKey !== undefined) {
      if (registrationsWithKey(answering, oldKey) === 0) return { ok: true, repaired: [], unreachable };
      this.logger?.warn({ key: hex(oldKey), answeringPaths: answering.map((a) => a.path.name) }, 'mpath: the old key is still registered; unregistering each path');
      return this.reRegisterEveryPath(paths, key, flags);
    }
    const { missing, byTargetPort } = pathsMissingKey(answering, key);
    if (missing.length === 0) return { ok: true, repaired: [], unreachable };
    this.logger?.warn({ key: hex(key), missing, byTargetPort }, 'mpath: not every answering path is registered after GOOD; registering those paths');
    const repair = await this.reRegisterEveryPath(paths.filter((p) => missing.includes(p.path.name)), key, flags);
    return { ...repair, unreachable: [...new Set([...unreachable, ...repair.unreachable])] };
  }

  /** REGISTER AND IGNORE EXISTING KEY with `key` (0 = unregister) on every path that answers. */
  private async reRegisterEveryPath(paths: readonly OpenedPath[], key: bigint, flags: { aptpl: boolean; allTgPt: boolean }): Promise<PathRepair> {
    const results = await Promise.all(
      paths.map(async (p) => ({ path: p.path, result: p.fd === undefined ? undefined : await this.paths.registerIgnore(p.fd, key, flags) })),
    );
    const repaired: string[] = [];
    const unreachable: string[] = [];
    let failure: ScsiResult | undefined;
    for (const r of results) {
      if (!r.result || isTransportFailure(r.result)) unreachable.push(r.path.name);
      else if (r.result.status === Status.GOOD) repaired.push(r.path.name);
      else {
        failure ??= r.result;
        this.logger?.error({ path: r.path.name, status: r.result.status }, 'mpath: REGISTER AND IGNORE on a path failed');
      }
    }
    if (repaired.length === 0 && !failure) failure = checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    if (failure) return { ok: false, result: failure, repaired, unreachable };
    this.logger?.info({ key: hex(key), paths: repaired, unreachable }, 'mpath: REGISTER AND IGNORE sent on every answering path');
    return { ok: true, repaired, unreachable };
  }

  // ---- multipathd ------------------------------------------------------------------------

  /**
   * Points multipathd's prkey for the map at `target` (null: no key) before paths are
   * registered, so a path it reinstates meanwhile gets the new key, as libmpathpersist
   * orders it. Returns how to undo it when the registration is refused.
   */
  private async pointMultipathdAt(map: string, target: { key: bigint; aptpl: boolean } | null): Promise<() => Promise<void>> {
    const mpd = this.multipathd;
    const nothing = async () => {};
    if (!mpd || this.reservationKeySetting.source !== 'file') return nothing;
    try {
      const current = await mpd.getPrKey(map);
      const same = target === null ? current === null : current !== null && current.key === target.key && current.aptpl === target.aptpl;
      if (same) return nothing;
      this.logger?.info({ map, key: target ? hex(target.key) : null, had: current ? hex(current.key) : null }, 'mpath: telling multipathd the reservation key');
      if (target) await mpd.setPrKey(map, target.key, target.aptpl);
      else await mpd.unsetPrKey(map);
      return async () => {
        try {
          if (current) await mpd.setPrKey(map, current.key, current.aptpl);
          else await mpd.unsetPrKey(map);
        } catch (err) {
          this.logger?.warn({ map, reason: (err as Error).message }, 'mpath: could not give multipathd its previous reservation key back');
        }
      };
    } catch (err) {
      this.logger?.warn({ map, reason: (err as Error).message }, 'mpath: could not tell multipathd the reservation key; reinstated paths may stay unregistered');
      return nothing;
    }
  }

  /**
   * multipathd registers reinstated paths only while the map's prstatus is set. Sent
   * unconditionally: setprstatus/unsetprstatus are idempotent, and one round trip costs less
   * than asking first.
   */
  private async setMultipathdPrStatus(map: string, registered: boolean): Promise<void> {
    const mpd = this.multipathd;
    if (!mpd) return;
    try {
      if (registered) await mpd.setPrStatus(map);
      else await mpd.unsetPrStatus(map);
    } catch (err) {
      this.logger?.warn({ map, reason: (err as Error).message }, 'mpath: could not bring multipathd\'s prstatus in step; reinstated paths may stay unregistered');
    }
  }
}

type OutPlan = Extract<MpathPlan, { kind: 'out' }>;

type PathRepair = { ok: true; repaired: string[]; unreachable: string[] } | { ok: false; result: ScsiResult; repaired: string[]; unreachable: string[] };

type RegistrationFanOut =
  | { kind: 'registered'; registered: string[]; unreachable: string[] }
  | { kind: 'refused'; result: ScsiResult; unreachable: string[] }
  | { kind: 'rolled-back'; result: ScsiResult; rolledBack: string[]; unreachable: string[] };

/**
 * With ALL_TG_PT the device registers the initiator port on every target port at once, so,
 * as libmpathpersist does, one path per SCSI host (initiator port) gets the command.
 */
function perScsiHostIf(allTgPt: boolean, paths: readonly OpenedPath[]): readonly OpenedPath[] {
  if (!allTgPt) return paths;
  const seen = new Set<string>();
  return paths.filter((p) => {
    const host = p.path.scsiHost === undefined ? p.path.name : String(p.path.scsiHost);
    if (seen.has(host)) return false;
    seen.add(host);
    return true;
  });
}

/**
 * The mpath backend if libmpathpersist is installed, with the host's multipathd and
 * multipath.conf unless given. Loading the library here only maps it (no library code runs
 * in this process); every call happens in the worker.
 */
export function createMpathBackend(
  options: Partial<MpathBackendOptions> = {},
): { ok: true; backend: MpathBackend } | { ok: false; reason: string } {
  const loaded = loadLibmpathpersist();
  if (!loaded.ok) return { ok: false, reason: loaded.reason };
  const reservationKeySetting = options.reservationKeySetting ?? readHostReservationKeySetting();
  return { ok: true, backend: new MpathBackend({ multipathd: new MultipathdClient(), ...options, reservationKeySetting }) };
}
