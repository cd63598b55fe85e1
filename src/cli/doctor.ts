// `doctor` for dm-multipath hosts: is everything the mpath backend relies on in place, and
// are the persistent-reservation registrations of each multipath map consistent across
// its paths? It checks
//   - libmpathpersist: loads and initialises in the isolated worker process;
//   - multipath.conf: `reservation_key` in defaults{} (without it multipathd never registers
//     added or reinstated paths), preferably `file`;
//   - multipathd: reachable, and per map whether it holds the key (getprkey) and the
//     prstatus flag, which is what makes it re-register a path that comes back;
//   - every path of every map: READ KEYS over SG_IO on the path itself. The key list is per
//     logical unit, so a key registered through N nexuses appears N times; the map's key
//     (multipathd's prkey, else the most frequent key) should appear once per answering path.
// It only reads; repairs happen through the daemon (REGISTER AND IGNORE through the map).

import * as fs from 'fs';
import { MpathWorkerClient } from '../backends/mpath/mpath-worker-client';
import { formatDevNumber, listMultipathMaps, mapPaths, pathNode, type DeviceTree } from '../device';
import { PathIo } from '../backends/mpath/path-io';
import type { MultipathdClient } from '../multipathd/client';
import { readHostReservationKeySetting, type ReservationKeySetting } from '../multipathd/multipath-conf';
import { Status } from '../scsi/constants';
import { describeSense } from '../scsi/sense';

export interface DoctorPath {
  readonly name: string;
  /** dm / checker state from multipathd, when it answered. */
  readonly dmState?: string;
  readonly checkerState?: string;
  /** Registered keys as the LU reports them through this path (hex), when READ KEYS answered. */
  readonly keys?: readonly string[];
  readonly error?: string;
}

export type MapVerdict = 'consistent' | 'inconsistent' | 'unregistered' | 'unknown';

export interface DoctorMap {
  readonly name: string;
  readonly devT: string;
  readonly paths: readonly DoctorPath[];
  /** multipathd's reservation key for the map: hex, null for none, undefined if not asked. */
  readonly multipathdKey?: string | null;
  readonly multipathdPrStatus?: string;
  /** The key judged to be this host's: multipathd's, else the most frequent. */
  readonly hostKey?: string;
  readonly verdict: MapVerdict;
  readonly problems: readonly string[];
}

export interface MpathDoctorReport {
  readonly library: { readonly ok: boolean; readonly abi?: string; readonly path?: string; readonly reason?: string };
  readonly reservationKey: ReservationKeySetting;
  readonly multipathd: { readonly reachable: boolean; readonly error?: string };
  readonly maps: readonly DoctorMap[];
  readonly problems: readonly string[];
}

export interface MpathDoctorOptions {
  readonly multipathd?: MultipathdClient | null;
  readonly worker?: MpathWorkerClient;
  readonly reservationKey?: ReservationKeySetting;
  /** Where sysfs and the path nodes are; default the host's. */
  readonly deviceTree?: DeviceTree;
  readonly sgTimeoutMs?: number;
  /** Only these maps (alias); default every dm-multipath map. */
  readonly maps?: readonly string[];
}

const hex = (key: bigint) => `0x${key.toString(16)}`;

async function readKeysOnPath(node: string, timeoutMs: number): Promise<{ keys?: bigint[]; error?: string }> {
  let fd: number;
  try {
    fd = fs.openSync(node, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    return { error: (err as Error).message };
  }
  try {
    const read = await new PathIo({ timeoutMs }).readKeys(fd);
    if (read.ok) return { keys: read.keys };
    const { result } = read;
    return { error: result.status === Status.CHECK_CONDITION ? describeSense(result.sense) : `status 0x${result.status.toString(16)}` };
  } finally {
    fs.closeSync(fd);
  }
}

/** Judges one map from its per-path READ KEYS answers and multipathd's key (pure). */
export function judgeMap(paths: readonly DoctorPath[], multipathdKey: string | null | undefined, setting: ReservationKeySetting): Pick<DoctorMap, 'verdict' | 'problems' | 'hostKey'> {
  const answering = paths.filter((p) => p.keys !== undefined);
  const problems: string[] = [];
  for (const p of paths) if (p.error) problems.push(`${p.name}: READ KEYS failed (${p.error})`);
  if (answering.length === 0) return { verdict: 'unknown', problems: problems.length ? problems : ['no path answers READ KEYS'] };
  const count = (key: string) => Math.min(...answering.map((p) => p.keys!.filter((k) => k === key).length));
  let hostKey = multipathdKey ?? undefined;
  if (!hostKey) {
    const tally = new Map<string, number>();
    for (const k of answering[0].keys!) tally.set(k, (tally.get(k) ?? 0) + 1);
    hostKey = [...tally.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  }
  if (!hostKey || count(hostKey) === 0) {
    if (multipathdKey) problems.push(`multipathd holds key ${multipathdKey} but no path is registered with it`);
    return { verdict: problems.length ? 'inconsistent' : 'unregistered', problems };
  }
  const n = count(hostKey);
  if (n < answering.length) problems.push(`key ${hostKey} is registered on ${n} of ${answering.length} answering paths`);
  if (multipathdKey === null && setting.source === 'file') {
    problems.push(`multipathd has no key for this map although ${hostKey} is registered: paths that come back will not be registered`);
  }
  return { verdict: problems.length ? 'inconsistent' : 'consistent', problems, hostKey };
}

export async function mpathDoctor(options: MpathDoctorOptions = {}): Promise<MpathDoctorReport> {
  const problems: string[] = [];
  const worker = options.worker ?? new MpathWorkerClient({});
  const ready = await worker.probe();
  if (!options.worker) await worker.close();
  const library = { ok: ready.ok, abi: ready.abi, path: ready.libraryPath, reason: ready.reason };
  if (!ready.ok) problems.push(`libmpathpersist is not usable: ${ready.reason}`);

  const reservationKey = options.reservationKey ?? readHostReservationKeySetting();
  if (reservationKey.source === 'none') problems.push('multipath.conf has no reservation_key in defaults{}: add `reservation_key file`');
  else if (reservationKey.source === 'key') problems.push('multipath.conf sets a fixed reservation_key: use `reservation_key file` so any key can be registered');

  const mpd = options.multipathd ?? null;
  let multipathd: MpathDoctorReport['multipathd'] = { reachable: false, error: 'not asked' };
  let pathStates = new Map<string, { dmState?: string; checkerState?: string }>();
  if (mpd) {
    try {
      const paths = await mpd.showPaths();
      pathStates = new Map(paths.map((p) => [p.device, { dmState: p.dmState, checkerState: p.checkerState }]));
      multipathd = { reachable: true };
    } catch (err) {
      multipathd = { reachable: false, error: (err as Error).message };
      problems.push(`multipathd is not reachable: ${(err as Error).message}`);
    }
  }

  const maps: DoctorMap[] = [];
  for (const { name, rdev } of listMultipathMaps(options.deviceTree)) {
    if (options.maps && !options.maps.includes(name)) continue;
    const paths: DoctorPath[] = [];
    for (const p of mapPaths(rdev, options.deviceTree)) {
      let node: string;
      try {
        node = pathNode(p, options.deviceTree);
      } catch (err) {
        paths.push({ name: p.name, ...pathStates.get(p.name), error: (err as Error).message });
        continue;
      }
      const answer = await readKeysOnPath(node, options.sgTimeoutMs ?? 10_000);
      paths.push({ name: p.name, ...pathStates.get(p.name), keys: answer.keys?.map(hex), error: answer.error });
    }
    let multipathdKey: string | null | undefined;
    let multipathdPrStatus: string | undefined;
    if (mpd && multipathd.reachable) {
      try {
        const key = await mpd.getPrKey(name);
        multipathdKey = key ? hex(key.key) : null;
        multipathdPrStatus = await mpd.getPrStatus(name);
      } catch (err) {
        problems.push(`${name}: multipathd getprkey/getprstatus failed: ${(err as Error).message}`);
      }
    }
    const judged = judgeMap(paths, multipathdKey, reservationKey);
    maps.push({ name, devT: formatDevNumber(rdev), paths, multipathdKey, multipathdPrStatus, ...judged });
    for (const p of judged.problems) problems.push(`${name}: ${p}`);
  }
  return { library, reservationKey, multipathd, maps, problems };
}

/** The report as text for a terminal. */
export function formatMpathDoctor(report: MpathDoctorReport): string {
  const lines: string[] = [];
  lines.push(`libmpathpersist: ${report.library.ok ? `ok (${report.library.abi}, ${report.library.path ?? '?'})` : `NOT USABLE: ${report.library.reason}`}`);
  lines.push(`multipath.conf reservation_key: ${report.reservationKey.source}${report.reservationKey.key !== undefined ? ` ${hex(report.reservationKey.key)}` : ''}`);
  lines.push(`multipathd: ${report.multipathd.reachable ? 'reachable' : `not reachable (${report.multipathd.error})`}`);
  for (const map of report.maps) {
    lines.push(`map ${map.name} (${map.devT}): ${map.verdict}${map.hostKey ? `, key ${map.hostKey}` : ''}${map.multipathdKey !== undefined ? `, multipathd key ${map.multipathdKey ?? 'none'} prstatus ${map.multipathdPrStatus}` : ''}`);
    for (const p of map.paths) {
      const state = [p.dmState, p.checkerState].filter(Boolean).join('/');
      lines.push(`  ${p.name}${state ? ` [${state}]` : ''}: ${p.keys ? `keys ${p.keys.join(' ') || '(none)'}` : `error: ${p.error}`}`);
    }
  }
  if (report.maps.length === 0) lines.push('no dm-multipath maps');
  lines.push(report.problems.length ? `problems:\n${report.problems.map((p) => `  - ${p}`).join('\n')}` : 'no problems found');
  return lines.join('\n') + '\n';
}
