// A simulated multipath host in front of the SPC-4 engine: what dm-multipath plus a
// careful PR manager do with one command from a guest. Pure: state in, state out.
//
// Each path of the host is its own I_T nexus (the host's initiator port, target port
// index+1). The rules are those of libmpathpersist and multipathd, with the known
// hazards of multipath-tools 0.9.4 fixed (see reference/libmpathpersist-multipathd.md
// §2 and §6):
//  - REGISTER / REGISTER AND IGNORE go to every active path, and either succeed on every
//    one or change nothing (the caller commits or drops the whole new state);
//  - a path that is not registered yet gets REGISTER AND IGNORE when the others accept
//    the key (multipath-tools 0.13's retry), instead of failing the whole command;
//  - every other action goes down one active path, the holder's path when we hold;
//  - a PREEMPT that removed our own other paths (self-preempt, all-registrants
//    preempt) re-registers them;
//  - a RELEASE of a reservation held through a failed path moves it to a live path
//    first (self-PREEMPT under the same type), so it can really be released;
//  - the host never releases or clears another host's reservation by accident.

import { Status } from '../../scsi/constants';
import type { BasicPrOutCommand, PrCommand, PrOutCommand } from '../../scsi/pr-command';
import { prOutCommand } from '../pr-commands';
import { checkCondition, isUnitAttention, Sense, type ScsiResult } from '../../scsi/sense';
import { transportIdKey, type TransportId } from '../../scsi/transport-id';
import { execute, type EngineOptions } from '../../engine';
import { ALL_REGISTRANTS, nexusKey, type Nexus, type PrState } from '../../engine/state';
import type { HostPath } from './store';

export interface SimulatedHost {
  readonly initiator: TransportId;
  readonly paths: readonly HostPath[];
}

/** The key the host's multipathd remembers for an LU (its prkeys entry). */
export interface KnownKey {
  readonly key: bigint;
  readonly aptpl: boolean;
}

export interface HostCommandOutcome {
  readonly state: PrState;
  readonly result: ScsiResult;
  readonly changed: boolean;
  /** The host's new known key: a value to remember, null to forget, undefined to keep. */
  readonly knownKey?: KnownKey | null;
  /** Path indexes the command was sent down, in order. */
  readonly pathsUsed: readonly number[];
}

/** libmpathpersist retries a path this often on UNIT ATTENTION. */
const UNIT_ATTENTION_RETRIES = 5;

export function pathNexus(host: SimulatedHost, pathIndex: number): Nexus {
  return { initiator: host.initiator, targetPort: pathIndex + 1 };
}

interface PathRun {
  state: PrState;
  result: ScsiResult;
  changed: boolean;
}

function runOnPath(
  state: PrState,
  host: SimulatedHost,
  pathIndex: number,
  command: PrCommand,
  options: EngineOptions,
  retryUnitAttention: boolean,
): PathRun {
  let changed = false;
  for (let attempt = 0; ; attempt++) {
    const step = execute(state, pathNexus(host, pathIndex), command, options);
    state = step.state;
    changed ||= step.changed;
    if (!retryUnitAttention || attempt >= UNIT_ATTENTION_RETRIES || !isUnitAttention(step.result)) {
      return { state, result: step.result, changed };
    }
  }
}

function registerIgnoreCommand(key: bigint, aptpl: boolean): PrOutCommand {
  return prOutCommand({ action: 'register-ignore', serviceActionKey: key, aptpl });
}

/** The path through which this host holds the reservation, if it holds one personally. */
function holderPath(state: PrState, host: SimulatedHost): HostPath | undefined {
  const holder = state.reservation?.holder;
  if (!holder || holder === ALL_REGISTRANTS) return undefined;
  return host.paths.find((p) => nexusKey(pathNexus(host, p.index)) === holder);
}

function isPathRegistered(state: PrState, host: SimulatedHost, pathIndex: number): boolean {
  const key = nexusKey(pathNexus(host, pathIndex));
  return state.registrations.some((r) => nexusKey(r) === key);
}

/** Our key as registered on any of our nexuses, for re-registration decisions. */
function ownRegisteredKey(state: PrState, host: SimulatedHost): bigint | undefined {
  const initiator = transportIdKey(host.initiator);
  return state.registrations.find((r) => transportIdKey(r.initiator) === initiator)?.key;
}

/**
 * Re-registers `key` on every active path that lost its registration, the way
 * multipathd re-registers a reinstated path. Returns undefined when nothing needed it.
 */
function reregisterMissingPaths(
  state: PrState,
  host: SimulatedHost,
  known: KnownKey,
  options: EngineOptions,
  used: number[],
): { state: PrState; failure?: ScsiResult } {
  const registerIgnore = registerIgnoreCommand(known.key, known.aptpl);
  for (const path of host.paths) {
    if (path.state !== 'active' || isPathRegistered(state, host, path.index)) continue;
    const run = runOnPath(state, host, path.index, registerIgnore, options, true);
    used.push(path.index);
    if (run.result.status !== Status.GOOD) return { state, failure: run.result };
    state = run.state;
  }
  return { state };
}

export function runHostCommand(
  state: PrState,
  host: SimulatedHost,
  knownKey: KnownKey | undefined,
  command: PrCommand,
  options: EngineOptions,
): HostCommandOutcome {
  const active = host.paths.filter((p) => p.state === 'active');
  if (active.length === 0) {
    // What libmpathpersist reports for a map without usable paths (MPATH_PR_DMMP_ERROR),
    // as qemu-pr-helper maps it.
    return { state, result: checkCondition(Sense.LUN_COMMUNICATION_FAILURE), changed: false, pathsUsed: [] };
  }
  const first = active[0].index;
  const single = (pathIndex: number, retry = false): HostCommandOutcome => {
    const run = runOnPath(state, host, pathIndex, command, options, retry);
    return { ...run, pathsUsed: [pathIndex] };
  };

  if (command.direction !== 'out') return single(first);

  switch (command.action) {
    case 'register':
    case 'register-ignore':
      return registerOnAllPaths(state, host, active, command, options);
    case 'reserve':
    case 'register-move': {
      const holder = holderPath(state, host);
      return single(holder?.state === 'active' ? holder.index : first);
    }
    case 'release':
      return releaseThroughHolder(state, host, first, command, options);
    case 'clear': {
      const outcome = single(first);
      return outcome.result.status === Status.GOOD ? { ...outcome, knownKey: null } : outcome;
    }
    case 'preempt':
    case 'preempt-abort': {
      const outcome = single(first);
      if (outcome.result.status !== Status.GOOD || !knownKey) return outcome;
      const used = [...outcome.pathsUsed];
      const repaired = reregisterMissingPaths(outcome.state, host, knownKey, options, used);
      // The PREEMPT itself succeeded and is committed either way; a path that cannot be
      // re-registered is reported by `doctor`, not by failing a command that happened.
      return { state: repaired.state, result: outcome.result, changed: true, pathsUsed: used };
    }
    default:
      return single(first);
  }
}

function registerOnAllPaths(
  state: PrState,
  host: SimulatedHost,
  active: readonly HostPath[],
  command: BasicPrOutCommand,
  options: EngineOptions,
): HostCommandOutcome {
  const decoded = command.parameters;
  const original = state;
  const first = active[0].index;
  // Let the engine produce the exact error for a malformed command, on one path.
  const firstRun = runOnPath(state, host, first, command, options, true);
  // A REGISTER that conflicts on the first path may still be repaired below, when other
  // paths accept the key; anything else that is not GOOD ends here, unchanged.
  const repairable = firstRun.result.status === Status.RESERVATION_CONFLICT && command.action === 'register';
  if (!decoded.ok || (firstRun.result.status !== Status.GOOD && !repairable)) {
    return { state: original, result: firstRun.result, changed: false, pathsUsed: [first] };
  }
  const params = decoded.value;
  const used: number[] = [first];
  state = firstRun.result.status === Status.GOOD ? firstRun.state : state;
  const results: { path: number; result: ScsiResult }[] = [{ path: first, result: firstRun.result }];

  // ALL_TG_PT registers the initiator port on every target port in one command, and
  // SPEC_I_PT's TransportIDs must be registered once: later paths get neither
  // (libmpathpersist clears SPEC_I_PT after the first path as well).
  if (!params.allTgPt) {
    const rest = params.specIPT
      ? prOutCommand({ action: command.action === 'register' ? 'register' : 'register-ignore', reservationKey: params.reservationKey, serviceActionKey: params.serviceActionKey, aptpl: params.aptpl })
      : command;
    for (const path of active.slice(1)) {
      const run = runOnPath(state, host, path.index, rest, options, true);
      used.push(path.index);
      results.push({ path: path.index, result: run.result });
      if (run.result.status === Status.GOOD) state = run.state;
    }
  }

  const succeeded = results.filter((r) => r.result.status === Status.GOOD);
  const failed = results.filter((r) => r.result.status !== Status.GOOD);
  if (failed.length > 0 && succeeded.length > 0 && params.serviceActionKey !== 0n) {
    // Paths that disagree with the others (typically a reinstated path that missed the
    // key) are brought in line with REGISTER AND IGNORE, as multipath-tools 0.13 does.
    const fix = registerIgnoreCommand(params.serviceActionKey, params.aptpl);
    for (const failure of failed) {
      if (failure.result.status !== Status.RESERVATION_CONFLICT) break;
      const run = runOnPath(state, host, failure.path, fix, options, true);
      used.push(failure.path);
      if (run.result.status !== Status.GOOD) break;
      failure.result = run.result;
      state = run.state;
    }
  }
  const stillFailed = results.find((r) => r.result.status !== Status.GOOD);
  if (stillFailed) {
    // Everywhere or nowhere: drop every path's change and report the first failure.
    return { state: original, result: stillFailed.result, changed: false, pathsUsed: used };
  }
  return {
    state,
    result: firstRun.result.status === Status.GOOD ? firstRun.result : succeeded[0].result,
    changed: true,
    knownKey: params.serviceActionKey === 0n ? null : { key: params.serviceActionKey, aptpl: params.aptpl },
    pathsUsed: used,
  };
}

function releaseThroughHolder(
  state: PrState,
  host: SimulatedHost,
  first: number,
  command: PrOutCommand,
  options: EngineOptions,
): HostCommandOutcome {
  const holder = holderPath(state, host);
  if (!holder || holder.state === 'active') {
    const run = runOnPath(state, host, holder?.index ?? first, command, options, false);
    return { ...run, pathsUsed: [holder?.index ?? first] };
  }
  // We hold the reservation through a path that is down. A RELEASE down a live path
  // would be a no-op (it is another I_T nexus), so move the reservation to the live
  // path with a self-PREEMPT of the same type, put our other paths back, then release.
  const decoded = command.parameters;
  const reservation = state.reservation;
  const ownKey = ownRegisteredKey(state, host);
  if (!decoded.ok || !reservation || ownKey === undefined || decoded.value.reservationKey !== ownKey) {
    const run = runOnPath(state, host, first, command, options, false);
    return { ...run, pathsUsed: [first] };
  }
  const used = [first];
  const move = prOutCommand({ action: 'preempt', type: reservation.type, reservationKey: ownKey, serviceActionKey: ownKey });
  const moved = runOnPath(state, host, first, move, options, true);
  if (moved.result.status !== Status.GOOD) return { state, result: moved.result, changed: false, pathsUsed: used };
  const repaired = reregisterMissingPaths(moved.state, host, { key: ownKey, aptpl: false }, options, used);
  const released = runOnPath(repaired.state, host, first, command, options, true);
  if (released.result.status !== Status.GOOD) return { state, result: released.result, changed: false, pathsUsed: used };
  return { state: released.state, result: released.result, changed: true, pathsUsed: used };
}

/**
 * What multipathd does when a path comes back (0.9.4 mpath_pr_event_handle): if the
 * host's key is still registered through some other path, register it on this path
 * with REGISTER AND IGNORE. A host that was preempted (fenced) is not re-registered.
 */
export function reinstatePathRegistration(
  state: PrState,
  host: SimulatedHost,
  pathIndex: number,
  knownKey: KnownKey | undefined,
  options: EngineOptions,
): { state: PrState; changed: boolean; result?: ScsiResult } {
  if (!knownKey || isPathRegistered(state, host, pathIndex)) return { state, changed: false };
  const initiator = transportIdKey(host.initiator);
  const stillRegistered = state.registrations.some((r) => transportIdKey(r.initiator) === initiator && r.key === knownKey.key);
  if (!stillRegistered) return { state, changed: false };
  const run = runOnPath(state, host, pathIndex, registerIgnoreCommand(knownKey.key, knownKey.aptpl), options, true);
  return run.result.status === Status.GOOD ? { state: run.state, changed: true, result: run.result } : { state, changed: false, result: run.result };
}
