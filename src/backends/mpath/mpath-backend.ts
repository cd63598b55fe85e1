// The dm-multipath backend: PERSISTENT RESERVE commands on a multipath map go through
// libmpathpersist (which fans REGISTER out to every path and keeps multipathd informed),
// hosted in an isolated child process (mpath-worker-client.ts), with the known hazards of
// multipath-tools 0.9.4 (shared/reference/libmpathpersist-multipathd.md §2, §6) repaired
// here with SG_IO on the individual paths:
//
// - REGISTER / REGISTER AND IGNORE: the library's per-path fan-out can leave a path
//   unregistered (a path that was down, a partial failure it "rolled back"). Afterwards
//   READ KEYS runs on every path; when our key is on fewer nexuses than there are answering
//   paths, REGISTER AND IGNORE goes to each answering path. GOOD only once every answering
//   path took it. Unregistering (SARK 0) is checked and repaired the same way. Before a
//   REGISTER that changes a key, a map registered under the old key on only some paths is
//   completed first: otherwise the unregistered nexus answers RESERVATION CONFLICT and
//   0.9.4's rollback unregisters the paths that had succeeded.
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
// Paths that do not answer READ KEYS are down; multipathd registers them when they come
// back, provided multipath.conf has `reservation_key` (checked and warned about at start)
// and multipathd holds the key (kept in step here after each registration).
//
// Outcomes of the library call map to SCSI as qemu-pr-helper's mpath_reconstruct_sense
// (mpath-result.ts), with TEST UNIT READY over SG_IO on the map fd. A worker that dies
// during a command answers CHECK CONDITION, ABORTED COMMAND / LOGICAL UNIT COMMUNICATION
// FAILURE (0B/08/00), which is what QEMU shows a guest when libmpathpersist fails.

import * as fs from 'fs';
import { loadLibmpathpersist, MPATH_PR, mpathPrName } from '../../../ffi/libmpathpersist';
import { sgIo } from '../../../ffi/sg-io';
import { MultipathdClient } from '../../multipathd/client';
import { readReservationKeySettingFromFiles, type ReservationKeySetting } from '../../multipathd/multipath-conf';
import { encodePrInCdb, encodePrOutCdb } from '../../scsi/cdb';
import { PrInAction, PrOutAction, PrType, Status } from '../../scsi/constants';
import { resultFromSgIo } from '../../scsi/errno-sense';
import { encodePrOutParameters } from '../../scsi/parameter-list';
import { decodeReadKeys, decodeReadReservation } from '../../scsi/pr-in-data';
import { checkCondition, good, reservationConflict, Sense, type ScsiResult } from '../../scsi/sense';
import type { DeviceHandle, ExecuteOptions, PrBackend } from '../backend';
import { refusePrOutOnReadOnly } from '../read-only';
import { rdevOf } from '../resolve';
import { DeviceQueue } from '../sg/device-queue';
import { DEFAULT_SG_TIMEOUT_MS, passThroughPr, validatePrCdb } from '../sg/pass-through';
import { mapName, mapPaths, pathNode, type DevNumber, type PathDevice, type TopologyRoots } from './map-topology';
import { libraryFlags, planMpathCommand, type MpathPlan } from './mpath-plan';
import { describeMpathResult, mpathResultToScsi } from './mpath-result';
import { MpathWorkerClient, type MpathWorkerClientOptions, type WorkerLogger, type WorkerOutcome } from './mpath-worker-client';

export interface MpathBackendOptions {
  readonly logger?: WorkerLogger;
  /** The worker client, or options for the one the backend creates. */
  readonly worker?: MpathWorkerClient | MpathWorkerClientOptions;
  /** multipathd, for keeping prkey/prstatus in step; null to leave multipathd alone. */
  readonly multipathd?: MultipathdClient | null;
  /** multipath.conf's reservation_key setting; read from /etc/multipath.conf(.d) when absent. */
  readonly reservationKeySetting?: ReservationKeySetting;
  /** SCSI timeout for the per-path SG_IO commands and TEST UNIT READY. */
  readonly sgTimeoutMs?: number;
  /** libmpathpersist verbosity (0..4); its log goes to the logger at debug. */
  readonly libraryVerbosity?: number;
  /** Tests only. */
  readonly roots?: TopologyRoots;
}

/** What the backend did beyond the library call, for tests and the audit log. */
export interface MpathCommandReport {
  readonly map: string;
  readonly rc?: number;
  /** Paths re-registered (or unregistered) with REGISTER AND IGNORE after the library call. */
  readonly repairedPaths: readonly string[];
  /** Paths that did not answer READ KEYS (down); left to multipathd. */
  readonly unreachablePaths: readonly string[];
  /** RELEASE answered without calling the library because another key holds the reservation. */
  readonly releaseShortCircuited?: boolean;
}

const READ_ALL = 8192;
const TEST_UNIT_READY = Buffer.from([0, 0, 0, 0, 0, 0]);
const ALL_REGISTRANTS_TYPES: readonly number[] = [PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS];

function hex(key: bigint): string {
  return `0x${key.toString(16)}`;
}

/** Reads multipath.conf and its config_dir the way multipathd 0.9.4 does (conf.d after the main file). */
export function readHostReservationKeySetting(confPath = '/etc/multipath.conf', confDir = '/etc/multipath/conf.d'): ReservationKeySetting {
  const texts: string[] = [];
  try {
    texts.push(fs.readFileSync(confPath, 'utf8'));
  } catch {
    // No multipath.conf: multipathd runs on built-in defaults, which have no reservation_key.
  }
  try {
    for (const name of fs.readdirSync(confDir).filter((n) => n.endsWith('.conf')).sort()) {
      try {
        texts.push(fs.readFileSync(`${confDir}/${name}`, 'utf8'));
      } catch {
        // Unreadable drop-in: multipathd would skip it too.
      }
    }
  } catch {
    // No config_dir.
  }
  return readReservationKeySettingFromFiles(texts);
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
  readonly reservationKeySetting: ReservationKeySetting;
  private readonly logger?: WorkerLogger;
  private readonly multipathd: MultipathdClient | null;
  private readonly sgTimeoutMs: number;
  private readonly verbosity: number;
  private readonly roots: TopologyRoots;
  private readonly queue = new DeviceQueue();
  private closed = false;
  /** The report of the last command per map, for tests and diagnostics. */
  readonly lastReport = new Map<string, MpathCommandReport>();

  constructor(options: MpathBackendOptions = {}) {
    this.logger = options.logger;
    if (options.worker instanceof MpathWorkerClient) this.injectedWorker = options.worker;
    this.workerOptions = { logger: options.logger, ...(options.worker instanceof MpathWorkerClient ? {} : options.worker) };
    this.multipathd = options.multipathd ?? null;
    this.sgTimeoutMs = options.sgTimeoutMs ?? DEFAULT_SG_TIMEOUT_MS;
    this.verbosity = options.libraryVerbosity ?? 2;
    this.roots = options.roots ?? {};
    this.reservationKeySetting = options.reservationKeySetting ?? readHostReservationKeySetting();
    this.warnAboutReservationKey();
  }

  private warnAboutReservationKey(): void {
    const setting = this.reservationKeySetting;
    if (setting.source === 'none') {
      this.logger?.warn(
        { whereIgnored: setting.whereIgnored },
        'multipath.conf has no reservation_key in defaults{}: multipathd will NOT register paths that are added or reinstated, ' +
          'and I/O through them will fail with RESERVATION CONFLICT once a reservation is held. Add `reservation_key file` to defaults{} in /etc/multipath.conf.',
      );
    } else if (setting.source === 'key') {
      this.logger?.warn(
        { key: setting.key !== undefined ? hex(setting.key) : undefined },
        'multipath.conf sets a fixed reservation_key: libmpathpersist refuses every other key (the guest sees LUN COMMUNICATION FAILURE), ' +
          'and multipathd cannot be told a new key. `reservation_key file` is what a PR helper needs.',
      );
    }
  }

  async execute(device: DeviceHandle, cdb: Uint8Array, dataOut: Uint8Array, options?: ExecuteOptions): Promise<ScsiResult> {
    if (this.closed) throw new Error('MpathBackend is closed');
    const invalid = validatePrCdb(cdb, dataOut);
    if (invalid) return invalid;
    const refusal = refusePrOutOnReadOnly(device, cdb);
    if (refusal) return refusal;
    const plan = planMpathCommand(cdb, dataOut);
    if (plan.kind === 'refuse') {
      this.logger?.debug({ device: device.path, reason: plan.reason }, 'mpath: command refused');
      return plan.result;
    }
    const rdev = device.rdev ?? rdevOf(device);
    if (!rdev || device.fd < 0) {
      this.logger?.warn({ device: device.path }, 'mpath: no open block device to work on');
      return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    }
    const cdbCopy = Uint8Array.from(cdb);
    return this.queue.run(`mpath:${rdev.major}:${rdev.minor}`, () => this.run(device, rdev, plan, cdbCopy), options?.signal);
  }

  async close(): Promise<void> {
    this.closed = true;
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
    const key = `${rdev.major}:${rdev.minor}`;
    let worker = this.workers.get(key);
    if (!worker) {
      worker = new MpathWorkerClient(this.workerOptions);
      this.workers.set(key, worker);
    }
    return worker;
  }

  // -------------------------------------------------------------------------------------

  private async run(device: DeviceHandle, rdev: DevNumber, plan: Exclude<MpathPlan, { kind: 'refuse' }>, cdb: Uint8Array): Promise<ScsiResult> {
    const map = mapName(rdev, this.roots) ?? `${rdev.major}:${rdev.minor}`;
    const target = { major: rdev.major, minor: rdev.minor, path: device.path };
    switch (plan.kind) {
      case 'pass-through-in':
        return (await passThroughPr(device.fd, cdb, new Uint8Array(0), this.sgTimeoutMs)).result;
      case 'library-in': {
        const outcome = await this.workerFor(rdev).call({
          kind: 'in',
          target,
          serviceAction: plan.serviceAction,
          allocationLength: plan.allocationLength,
          verbose: this.verbosity,
        });
        return this.libraryResult(device, map, outcome, `PR IN ${plan.serviceAction}`);
      }
      case 'library-out':
        return this.runOut(device, rdev, map, target, plan);
    }
  }

  private async runOut(
    device: DeviceHandle,
    rdev: DevNumber,
    map: string,
    target: { major: number; minor: number; path: string },
    plan: Extract<MpathPlan, { kind: 'library-out' }>,
  ): Promise<ScsiResult> {
    const sa = plan.serviceAction;
    let before: { key: bigint; type: number } | undefined;
    let readBefore = false;
    if (sa === PrOutAction.RELEASE || sa === PrOutAction.PREEMPT || sa === PrOutAction.PREEMPT_AND_ABORT) {
      const reservation = await this.readReservationOnMap(device.fd);
      if (!reservation.ok) return reservation.result;
      before = reservation.holder;
      readBefore = true;
    }

    if (sa === PrOutAction.RELEASE && readBefore) {
      const holdsIt = before !== undefined && (before.key === plan.reservationKey || ALL_REGISTRANTS_TYPES.includes(before.type));
      if (!holdsIt) {
        // SPC-4 RELEASE: no reservation, or one held by another nexus → nothing to release;
        // only an unregistered I_T nexus gets RESERVATION CONFLICT.
        const keys = await this.readKeysOnMap(device.fd);
        if (!keys.ok) return keys.result;
        const registered = keys.keys.includes(plan.reservationKey);
        this.lastReport.set(map, { map, repairedPaths: [], unreachablePaths: [], releaseShortCircuited: true });
        this.logger?.info(
          { map, key: hex(plan.reservationKey), holder: before ? hex(before.key) : null, registered },
          'mpath: RELEASE by a non-holder answered without libmpathpersist (0.9.4 would CLEAR the other reservation)',
        );
        return registered ? good() : reservationConflict();
      }
    }

    if (sa === PrOutAction.REGISTER && plan.reservationKey !== 0n) {
      // REGISTER with a current key is refused by every nexus that does not hold that key,
      // and 0.9.4 then "rolls back" the paths that took it, unregistering them. If the map
      // is registered under that key on some nexuses but not all (a path that came back
      // unregistered), register the missing ones first so the guest's REGISTER sees one LU.
      const repaired = await this.completePartialRegistration(rdev, plan.reservationKey, plan.aptpl, plan.allTgPt);
      if (!repaired.ok) return repaired.result;
    }

    if (sa === PrOutAction.RELEASE && before && before.key === plan.reservationKey && before.type !== plan.type && !ALL_REGISTRANTS_TYPES.includes(before.type)) {
      // SPC-4: the holder releasing with another type gets INVALID RELEASE OF PERSISTENT
      // RESERVATION and the reservation stays. 0.9.4 would see the reservation survive its
      // RELEASE and CLEAR the logical unit, dropping every other node's registration.
      this.logger?.info({ map, key: hex(plan.reservationKey), held: before.type, asked: plan.type }, 'mpath: RELEASE with the wrong type refused without libmpathpersist');
      return checkCondition(Sense.INVALID_RELEASE_OF_PERSISTENT_RESERVATION);
    }

    const outcome = await this.workerFor(rdev).call({
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
    if (sa === PrOutAction.REGISTER || sa === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY) {
      repair = await this.makePathsAgree(rdev, plan.serviceActionKey, plan.aptpl, plan.allTgPt, plan.serviceActionKey === 0n ? plan.reservationKey : undefined);
      if (repair.ok && plan.serviceActionKey !== 0n) await this.keepMultipathdInStep(map, plan.serviceActionKey, plan.aptpl);
    } else if ((sa === PrOutAction.PREEMPT || sa === PrOutAction.PREEMPT_AND_ABORT) && plan.reservationKey !== 0n) {
      const selfPreempt = plan.serviceActionKey === plan.reservationKey;
      const allRegistrants = before !== undefined && ALL_REGISTRANTS_TYPES.includes(before.type);
      if (selfPreempt || allRegistrants) {
        repair = await this.reRegisterEveryPath(rdev, plan.reservationKey, plan.aptpl, plan.allTgPt);
        if (repair.ok) await this.keepMultipathdInStep(map, plan.reservationKey, plan.aptpl);
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

  // ---- SG_IO helpers --------------------------------------------------------------------

  private async readKeysOn(fd: number): Promise<{ ok: true; keys: bigint[] } | { ok: false; result: ScsiResult }> {
    const cdb = encodePrInCdb({ action: PrInAction.READ_KEYS, allocationLength: READ_ALL });
    let { result } = await passThroughPr(fd, cdb, new Uint8Array(0), this.sgTimeoutMs);
    // A pending unit attention (a PREEMPT by another node, a reset) is reported once per
    // nexus; it must not make an answering path look dead.
    if (isUnitAttention(result)) ({ result } = await passThroughPr(fd, cdb, new Uint8Array(0), this.sgTimeoutMs));
    if (result.status !== Status.GOOD) return { ok: false, result };
    const decoded = decodeReadKeys(result.dataIn);
    if (!decoded.ok) return { ok: false, result: checkCondition(Sense.LUN_COMMUNICATION_FAILURE) };
    return { ok: true, keys: decoded.value.keys };
  }

  private readKeysOnMap(fd: number) {
    return this.readKeysOn(fd);
  }

  private async readReservationOnMap(fd: number): Promise<{ ok: true; holder?: { key: bigint; type: number } } | { ok: false; result: ScsiResult }> {
    const { result } = await passThroughPr(fd, encodePrInCdb({ action: PrInAction.READ_RESERVATION, allocationLength: READ_ALL }), new Uint8Array(0), this.sgTimeoutMs);
    if (result.status !== Status.GOOD) return { ok: false, result };
    const decoded = decodeReadReservation(result.dataIn);
    if (!decoded.ok) return { ok: false, result: checkCondition(Sense.LUN_COMMUNICATION_FAILURE) };
    const r = decoded.value.reservation;
    return { ok: true, holder: r ? { key: r.key, type: r.type } : undefined };
  }

  private async registerIgnoreOn(fd: number, key: bigint, aptpl: boolean, allTgPt: boolean): Promise<ScsiResult> {
    const dataOut = encodePrOutParameters({ reservationKey: 0n, serviceActionKey: key, specIPT: false, allTgPt, aptpl, transportIds: [] });
    const cdb = encodePrOutCdb({ action: PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, parameterListLength: dataOut.length });
    let { result } = await passThroughPr(fd, cdb, dataOut, this.sgTimeoutMs);
    // A unit attention (e.g. "registrations preempted" from the command just run) is
    // reported once per nexus; the retry is the command itself.
    if (isUnitAttention(result)) ({ result } = await passThroughPr(fd, cdb, dataOut, this.sgTimeoutMs));
    return result;
  }

  /** Runs `task` with an fd of each path; paths that cannot be opened count as unreachable. */
  private async withPathFds<T>(rdev: DevNumber, task: (path: PathDevice, fd: number) => Promise<T>): Promise<{ path: PathDevice; value?: T; openError?: string }[]> {
    const out: { path: PathDevice; value?: T; openError?: string }[] = [];
    for (const p of mapPaths(rdev, this.roots)) {
      let fd: number;
      try {
        // Root (CAP_SYS_RAWIO) may send PR IN/OUT over SG_IO on a read-only fd; O_NONBLOCK
        // keeps the open from waiting on a path that is going away.
        fd = fs.openSync(pathNode(p, this.roots), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      } catch (err) {
        out.push({ path: p, openError: (err as Error).message });
        continue;
      }
      try {
        out.push({ path: p, value: await task(p, fd) });
      } finally {
        fs.closeSync(fd);
      }
    }
    return out;
  }

  /**
   * After REGISTER / REGISTER AND IGNORE: every path that answers must carry `key` (or, when
   * unregistering, must no longer carry `oldKey`). READ KEYS on each path; if the count does
   * not add up, REGISTER AND IGNORE on every answering path, which is idempotent per nexus.
   */
  private async makePathsAgree(rdev: DevNumber, key: bigint, aptpl: boolean, allTgPt: boolean, oldKey?: bigint): Promise<PathRepair> {
    const reads = await this.withPathFds(rdev, (_p, fd) => this.readKeysOn(fd));
    const answering = reads.filter((r) => r.value?.ok);
    const unreachable = reads.filter((r) => !r.value?.ok).map((r) => r.path.name);
    if (answering.length === 0) {
      const failed = reads.find((r) => r.value && !r.value.ok)?.value;
      this.logger?.error({ paths: unreachable }, 'mpath: no path of the map answers READ KEYS after the registration');
      return { ok: false, result: failed && !failed.ok ? failed.result : checkCondition(Sense.LUN_COMMUNICATION_FAILURE), repaired: [], unreachable };
    }
    const keys = answering.map((r) => (r.value as { ok: true; keys: bigint[] }).keys);
    // The list is per logical unit, so every path should return the same; trust the smallest count.
    const count = (want: bigint) => Math.min(...keys.map((k) => k.filter((x) => x === want).length));
    const consistent = oldKey === undefined ? count(key) >= answering.length : count(oldKey) === 0;
    if (consistent) return { ok: true, repaired: [], unreachable };
    this.logger?.warn(
      {
        key: hex(oldKey ?? key),
        onNexuses: count(oldKey ?? key),
        answeringPaths: answering.map((r) => r.path.name),
      },
      oldKey === undefined
        ? 'mpath: libmpathpersist reported success but not every path is registered; registering each path'
        : 'mpath: libmpathpersist reported success but the old key is still registered; unregistering each path',
    );
    return this.reRegisterEveryPath(rdev, key, aptpl, allTgPt);
  }

  /** Before REGISTER with current key `key`: if some nexuses hold it and other answering paths do not, register those. */
  private async completePartialRegistration(rdev: DevNumber, key: bigint, aptpl: boolean, allTgPt: boolean): Promise<PathRepair> {
    const reads = await this.withPathFds(rdev, (_p, fd) => this.readKeysOn(fd));
    const answering = reads.filter((r) => r.value?.ok);
    const unreachable = reads.filter((r) => !r.value?.ok).map((r) => r.path.name);
    if (answering.length === 0) return { ok: true, repaired: [], unreachable };
    const counts = answering.map((r) => (r.value as { ok: true; keys: bigint[] }).keys.filter((k) => k === key).length);
    const count = Math.min(...counts);
    if (count === 0 || count >= answering.length) return { ok: true, repaired: [], unreachable };
    this.logger?.warn(
      { key: hex(key), onNexuses: count, answeringPaths: answering.map((r) => r.path.name) },
      'mpath: the map is registered on only some paths; registering the others before REGISTER',
    );
    return this.reRegisterEveryPath(rdev, key, aptpl, allTgPt);
  }

  /** REGISTER AND IGNORE EXISTING KEY with `key` (0 = unregister) on every path that answers. */
  private async reRegisterEveryPath(rdev: DevNumber, key: bigint, aptpl: boolean, allTgPt: boolean): Promise<PathRepair> {
    const results = await this.withPathFds(rdev, (_p, fd) => this.registerIgnoreOn(fd, key, aptpl, allTgPt));
    const repaired: string[] = [];
    const unreachable: string[] = [];
    let failure: ScsiResult | undefined;
    for (const r of results) {
      if (r.openError || !r.value) {
        unreachable.push(r.path.name);
      } else if (r.value.status === Status.GOOD) {
        repaired.push(r.path.name);
      } else if (r.value.status === Status.CHECK_CONDITION && r.value.sense.length === 0) {
        unreachable.push(r.path.name);
      } else if (isTransportFailure(r.value)) {
        unreachable.push(r.path.name);
      } else {
        failure ??= r.value;
        this.logger?.error({ path: r.path.name, status: r.value.status }, 'mpath: REGISTER AND IGNORE on a path failed');
      }
    }
    if (repaired.length === 0 && !failure) failure = checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    if (failure) return { ok: false, result: failure, repaired, unreachable };
    this.logger?.info({ key: hex(key), paths: repaired, unreachable }, 'mpath: REGISTER AND IGNORE sent on every answering path');
    return { ok: true, repaired, unreachable };
  }

  /** multipathd must hold the key to register paths that come back; libmpathpersist sets it, this checks. */
  private async keepMultipathdInStep(map: string, key: bigint, aptpl: boolean): Promise<void> {
    const mpd = this.multipathd;
    if (!mpd) return;
    try {
      if (this.reservationKeySetting.source === 'file') {
        const current = await mpd.getPrKey(map);
        if (!current || current.key !== key || current.aptpl !== aptpl) {
          this.logger?.info({ map, key: hex(key), had: current ? hex(current.key) : null }, 'mpath: telling multipathd the reservation key');
          await mpd.setPrKey(map, key, aptpl);
        }
      }
      if ((await mpd.getPrStatus(map)) !== 'set') await mpd.setPrStatus(map);
    } catch (err) {
      this.logger?.warn({ map, reason: (err as Error).message }, 'mpath: could not bring multipathd in step; reinstated paths may stay unregistered');
    }
  }
}

type PathRepair = { ok: true; repaired: string[]; unreachable: string[] } | { ok: false; result: ScsiResult; repaired: string[]; unreachable: string[] };

function isUnitAttention(result: ScsiResult): boolean {
  return result.status === Status.CHECK_CONDITION && result.sense.length > 2 && (decodeSenseKey(result.sense) === 0x06);
}

/** The sense key of fixed (0x70/0x71) or descriptor (0x72/0x73) sense data. */
function decodeSenseKey(sense: Buffer): number {
  const format = sense[0] & 0x7f;
  return (format === 0x72 || format === 0x73 ? sense[1] : sense[2]) & 0x0f;
}

/** Results that mean "this path is gone", not "the device refused": errno and host-status failures. */
function isTransportFailure(result: ScsiResult): boolean {
  // resultFromSgIo turns errno/host failures into ABORTED COMMAND or TASK SET FULL/BUSY;
  // a device's own refusal is ILLEGAL REQUEST or RESERVATION CONFLICT.
  if (result.status === Status.BUSY || result.status === Status.TASK_SET_FULL) return true;
  return result.status === Status.CHECK_CONDITION && result.sense.length > 2 && decodeSenseKey(result.sense) === 0x0b;
}

/**
 * The mpath backend if libmpathpersist is installed. Loading it here only maps the library
 * (no library code runs in this process); every call happens in the worker.
 */
export function createMpathBackend(options: MpathBackendOptions = {}): { ok: true; backend: MpathBackend } | { ok: false; reason: string } {
  const loaded = loadLibmpathpersist();
  if (!loaded.ok) return { ok: false, reason: loaded.reason };
  return { ok: true, backend: new MpathBackend({ multipathd: new MultipathdClient(), ...options }) };
}
