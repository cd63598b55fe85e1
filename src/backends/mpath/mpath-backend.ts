// The dm-multipath backend. Each I_T nexus of a map is a path, and the guest must look like
// one initiator to the logical unit, so what needs every path is done on every path over
// SG_IO, and the rest goes through libmpathpersist, hosted in an isolated child process
// (mpath-worker-client.ts). Each command is decided first, without I/O (mpath-plan.ts), then
// carried out by one of:
//
// - REGISTER / REGISTER AND IGNORE: fanned out over the paths by this backend, not by the
//   library (register-fan-out.ts), with the paths checked and repaired afterwards
//   (path-agreement.ts) and the paths that did not answer watched (returning-paths.ts);
// - PR IN: SG_IO on the first path that answers (the data describes the LU, any path gives
//   the whole answer), never on the map, where the kernel retries forever while
//   queue_if_no_path holds I/O; the library is the fallback when no path answers;
// - every other PR OUT: libmpathpersist, with RELEASE and PREEMPT guarded against the
//   hazards of multipath-tools 0.9.4 (library-calls.ts).
//
// multipathd's prkey and prstatus for the map follow each registration (src/multipathd/pr-sync.ts).

import { loadLibmpathpersist } from '../../../ffi/libmpathpersist';
import { describeHandle, describeIdentity, formatDevNumber, hostDeviceTree, type DevNumber, type DeviceTree } from '../../device';
import { MultipathdClient } from '../../multipathd/client';
import { readHostReservationKeySetting, reservationKeyWarning, type ReservationKeySetting } from '../../multipathd/multipath-conf';
import { MultipathdPrSync } from '../../multipathd/pr-sync';
import { PrOutAction } from '../../scsi/constants';
import type { PrCommand } from '../../scsi/pr-command';
import { checkCondition, Sense, type ScsiResult } from '../../scsi/sense';
import type { DeviceHandle, ExecuteOptions, PrBackend } from '../backend';
import { KernelCommandQueue, scsiTimeoutMs } from '../kernel-queue';
import { LibraryCalls } from './library-calls';
import { mapOf, type MapDevice } from './map-device';
import { planMpathCommand, type MpathPlan } from './mpath-plan';
import { MpathWorkerClient, type MpathWorkerClientOptions, type WorkerLogger } from './mpath-worker-client';
import { PathAgreement } from './path-agreement';
import { PathIo, type PathTransport } from './path-io';
import { PathRegistrar } from './register-fan-out';
import { ReturningPathWatch, type ReturningPathWatchOptions, type WatchedRegistration } from './returning-paths';

export interface MpathBackendOptions {
  /** Also where each PR OUT's per-path report goes (mpath-log.ts). */
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
  /** How commands reach a path: SG_IO on its node by default; tests pass a fake for faults a real LU cannot produce on demand. */
  readonly pathTransport?: PathTransport;
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
  private readonly logger?: WorkerLogger;
  private readonly deviceTree: DeviceTree;
  private readonly commands = new KernelCommandQueue('MpathBackend');
  private readonly returningPaths: ReturningPathWatch;
  private readonly paths: PathIo;
  private readonly registrar: PathRegistrar;
  private readonly library: LibraryCalls;

  constructor(options: MpathBackendOptions) {
    this.logger = options.logger;
    if (options.worker instanceof MpathWorkerClient) this.injectedWorker = options.worker;
    this.workerOptions = { logger: options.logger, ...(options.worker instanceof MpathWorkerClient ? {} : options.worker) };
    const sgTimeoutMs = scsiTimeoutMs(options.sgTimeoutMs);
    this.deviceTree = options.deviceTree ?? hostDeviceTree;
    this.paths = new PathIo({ timeoutMs: sgTimeoutMs, deviceTree: this.deviceTree, transport: options.pathTransport });
    this.returningPaths = new ReturningPathWatch((map, registration) => this.checkReturningPaths(map, registration), {
      ...options.returningPaths,
      onError: (map, err) => this.logger?.warn({ map: formatDevNumber(map), reason: (err as Error).message }, 'mpath: checking returning paths failed; will try again'),
    });
    const setting = options.reservationKeySetting;
    const agreement = new PathAgreement(this.paths, this.logger);
    const multipathd = new MultipathdPrSync(options.multipathd ?? null, setting, this.logger);
    const services = { paths: this.paths, agreement, multipathd, returningPaths: this.returningPaths, logger: this.logger };
    this.registrar = new PathRegistrar(services, setting.source === 'key' ? setting.key : undefined);
    this.library = new LibraryCalls(services, { workerFor: (rdev) => this.workerFor(rdev), verbosity: options.libraryVerbosity ?? 2, sgTimeoutMs });
    const warning = reservationKeyWarning(setting);
    if (warning) this.logger?.warn(warning.fields, warning.message);
  }

  async execute(device: DeviceHandle, command: PrCommand, options?: ExecuteOptions): Promise<ScsiResult> {
    this.commands.assertOpen();
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
    return this.commands.run(device, () => this.run(device, mapOf(rdev, description), plan), options, formatDevNumber(rdev));
  }

  async close(): Promise<void> {
    this.returningPaths.close();
    await this.commands.close();
    await Promise.all([...this.workers.values(), ...(this.injectedWorker ? [this.injectedWorker] : [])].map((worker) => worker.close()));
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

  private async run(device: DeviceHandle, mapDevice: MapDevice, plan: Exclude<MpathPlan, { kind: 'refuse' }>): Promise<ScsiResult> {
    if (plan.kind === 'in') {
      const answered = await this.paths.prInOnAnyPath(mapDevice.paths, plan.command);
      if (answered) return answered.result;
      if (!plan.libraryFallback) return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
      return this.library.prIn(device, mapDevice, plan);
    }
    if (plan.serviceAction === PrOutAction.REGISTER || plan.serviceAction === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY) {
      return this.registrar.register(mapDevice, plan);
    }
    return this.library.prOut(device, mapDevice, plan);
  }

  /** The returning-path watch's check, in the map's queue so it never races the guest's own commands. */
  private checkReturningPaths(rdev: DevNumber, registration: WatchedRegistration): Promise<'done' | 'waiting'> {
    return this.commands.queue.run(formatDevNumber(rdev), () => {
      // Outside any command, so the map is described afresh: paths come and go between checks.
      const mapDevice = mapOf(rdev, describeIdentity({ kind: 'block', rdev }, formatDevNumber(rdev), this.deviceTree));
      return this.registrar.registerReturningPaths(mapDevice, registration);
    });
  }
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
