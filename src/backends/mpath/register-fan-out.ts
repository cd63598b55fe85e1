// REGISTER / REGISTER AND IGNORE on a dm-multipath map, fanned out by the backend over SG_IO
// rather than by libmpathpersist. multipath-tools 0.9.4 skips paths its own checker thinks
// are down (a path in a short outage then stays unregistered while the guest hears GOOD),
// "rolls back" a partial failure by unregistering the paths that succeeded, and
// re-discovers every path of the host on each call (about 100 ms).
//
// Here the fan-out is all-or-nothing over the paths that answer; READ FULL STATUS on every
// path then checks that each path's target port holds the key; multipathd gets the key
// before the first path and prstatus after, as the library orders it; paths that did not
// answer are registered by multipathd on reinstate and, for outages its checker never saw,
// by the returning-path watch (returning-paths.ts), whose check is also here.

import { PrOutAction, Status } from '../../scsi/constants';
import { checkCondition, good, Sense, type ScsiResult } from '../../scsi/sense';
import type { MapDevice } from './map-device';
import { hex, logReport } from './mpath-log';
import type { MpathOutPlan } from './mpath-plan';
import type { WorkerLogger } from './mpath-worker-client';
import { nothingRepaired, type PathServices, type RegistrationFlags } from './path-agreement';
import { isTransportFailure, pathsMissingKey, registrationsWithKey, type OpenedPath, type PathIo } from './path-io';
import type { WatchedRegistration } from './returning-paths';

type OpenPath = OpenedPath & { fd: number };

type RegistrationFanOut =
  | { kind: 'registered'; registered: string[]; unreachable: string[] }
  | { kind: 'refused'; result: ScsiResult; unreachable: string[] }
  | { kind: 'rolled-back'; result: ScsiResult; rolledBack: string[]; unreachable: string[] };

export class PathRegistrar {
  private readonly paths: PathIo;
  private readonly logger?: WorkerLogger;

  /** @param fixedKey the key multipath.conf fixes with `reservation_key 0x…`, if it does: no other key may be registered. */
  constructor(
    private readonly services: PathServices,
    private readonly fixedKey?: bigint,
  ) {
    this.paths = services.paths;
    this.logger = services.logger;
  }

  /**
   * The guest's command goes unchanged to every path at once; a path whose nexus missed an
   * earlier registration answers RESERVATION CONFLICT to a REGISTER that the others accept,
   * and then gets REGISTER AND IGNORE with the new key. A path that does not answer is left
   * to multipathd (told the key first, as libmpathpersist does) and to the returning-path
   * watch. A path that refuses what another accepted rolls the ones that took it back, so
   * the LU ends with the new key everywhere or nowhere, and the reply says which.
   */
  async register(mapDevice: MapDevice, plan: MpathOutPlan): Promise<ScsiResult> {
    const map = mapDevice.name;
    const newKey = plan.serviceActionKey;
    if (this.fixedKey !== undefined && newKey !== 0n && newKey !== this.fixedKey) {
      // multipathd registers returning paths with the key multipath.conf fixes, so any other
      // key would leave them inconsistent; libmpathpersist refuses it too (SYNTAX_ERROR,
      // which QEMU shows as LUN COMMUNICATION FAILURE).
      this.logger?.warn({ map, key: hex(newKey), configured: hex(this.fixedKey) }, 'mpath: REGISTER refused: multipath.conf fixes reservation_key to another key');
      return checkCondition(Sense.LUN_COMMUNICATION_FAILURE);
    }
    this.services.returningPaths.cancel(mapDevice.rdev);
    const restoreMultipathd = await this.services.multipathd.pointPrKeyAt(map, newKey === 0n ? null : { key: newKey, aptpl: plan.aptpl });

    return this.paths.withOpenPaths(mapDevice.paths, async (paths) => {
      const fanOut = await this.fanOut(perScsiHostIf(plan.allTgPt, paths), plan);
      if (fanOut.kind !== 'registered') {
        await restoreMultipathd();
        logReport(this.logger, { map, repairedPaths: [], unreachablePaths: fanOut.unreachable, rolledBackPaths: fanOut.kind === 'rolled-back' ? fanOut.rolledBack : undefined });
        this.logger?.info(
          { map, key: hex(newKey), outcome: fanOut.kind, unreachable: fanOut.unreachable, status: fanOut.result.status },
          fanOut.kind === 'rolled-back' ? 'mpath: a path refused the registration the others took; rolled back on every path' : 'mpath: registration refused',
        );
        return fanOut.result;
      }
      return this.checkRegistration(mapDevice, paths, plan, fanOut);
    });
  }

  /**
   * The device said GOOD on each path; READ FULL STATUS on each path checks that each nexus
   * holds the key (ALL_TG_PT registers whole initiator ports, which it cannot tell).
   * multipathd's prstatus is set meanwhile: it touches neither the paths nor the LU.
   */
  private async checkRegistration(
    mapDevice: MapDevice,
    paths: readonly OpenedPath[],
    plan: MpathOutPlan,
    fanOut: Extract<RegistrationFanOut, { kind: 'registered' }>,
  ): Promise<ScsiResult> {
    const map = mapDevice.name;
    const newKey = plan.serviceActionKey;
    const [repair] = await Promise.all([
      plan.allTgPt ? nothingRepaired() : this.services.agreement.makePathsAgree(paths, newKey, flagsOf(plan), newKey === 0n ? plan.reservationKey : undefined),
      this.services.multipathd.setPrStatus(map, newKey !== 0n),
    ]);
    if (!repair.ok) {
      logReport(this.logger, { map, repairedPaths: repair.repaired, unreachablePaths: repair.unreachable });
      return repair.result;
    }
    const unreachable = [...new Set([...fanOut.unreachable, ...repair.unreachable])];
    logReport(this.logger, { map, registeredPaths: fanOut.registered, repairedPaths: repair.repaired, unreachablePaths: unreachable });
    if (newKey !== 0n && unreachable.length > 0 && !plan.allTgPt) {
      this.logger?.warn({ map, key: hex(newKey), unreachable }, 'mpath: registered on every answering path; the others get the key when they answer again');
      this.services.returningPaths.watch(mapDevice.rdev, { key: newKey, aptpl: plan.aptpl });
    }
    return good();
  }

  private async fanOut(paths: readonly OpenedPath[], plan: MpathOutPlan): Promise<RegistrationFanOut> {
    const newKey = plan.serviceActionKey;
    const flags = flagsOf(plan);
    const unreachable = paths.filter((p) => p.fd === undefined).map((p) => p.path.name);
    const open = paths.filter((p): p is OpenPath => p.fd !== undefined);
    // The paths are independent nexuses, so the guest's command goes to all of them at once.
    const first = await Promise.all(open.map(async (p) => ({ p, result: await this.paths.send(p.fd, plan.command) })));
    const tookIt: OpenPath[] = [];
    const conflicted: OpenPath[] = [];
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
  registerReturningPaths(mapDevice: MapDevice, registration: WatchedRegistration): Promise<'done' | 'waiting'> {
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
        const repair = await this.services.agreement.reRegisterEveryPath(paths.filter((p) => missing.includes(p.path.name)), registration.key, { aptpl: registration.aptpl, allTgPt: false });
        this.logger?.info({ map, key: hex(registration.key), paths: repair.repaired, ok: repair.ok }, 'mpath: registered the key on paths that answer again');
        if (!repair.ok) return 'waiting';
      }
      return unreachable.length === 0 ? 'done' : 'waiting';
    });
  }
}

function flagsOf(plan: MpathOutPlan): RegistrationFlags {
  return { aptpl: plan.aptpl, allTgPt: plan.allTgPt };
}

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
