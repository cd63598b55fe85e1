// Helpers for lab suites, which run inside the guest: the topology the guest
// setup describes in LAB_* variables, a command runner with a deadline, polling
// with a deadline (never a fixed sleep), and thin readers over the tools every
// lab has (multipathd CLI, sg_persist).

import { spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { eventually } from '../../support/wait';
import { Fabric } from './lab-config';

export interface LabTopology {
  fabric: Fabric;
  /** Host A's paths, in target-port order: path i reaches the LU through LIO TPG/target i. */
  pathDevices: string[];
  /** Host A's initiator port per path: tcm_loop nexus WWNs (one per path) or the iSCSI initiator IQN. */
  pathInitiators: string[];
  /** LIO target port per path, as `<target wwn>/tpgt_<n>`. */
  pathTargetPorts: string[];
  mpathName: string;
  mpathDevice: string;
  /** The map's /dev/dm-N node. */
  dmDevice: string;
  wwid: string;
  /** Host A's initiator: the iSCSI IQN, or the comma-joined tcm_loop nexus WWNs. */
  initiatorA: string;
  /** Host B (lab configured with secondHost): its one path, outside multipath. */
  hostB?: { device: string; initiator: string };
  /** configfs directory of the LIO backstore; its pr/ attributes show the target's PR state. */
  lioBackstore: string;
  iscsiTarget?: string;
  dbusAddress?: string;
  /** Writable directory the host can read after the boot (the results share). */
  outputDir: string;
  repo: string;
}

function need(env: NodeJS.ProcessEnv, name: string): string {
  const value = env[name];
  if (value === undefined || value === '') {
    throw new Error(`${name} is not set: lab suites run only inside the lab VM (npm run test:lab)`);
  }
  return value;
}

function list(value: string | undefined): string[] {
  return value ? value.split(',').filter(Boolean) : [];
}

/** Reads the topology from the environment; throws outside the lab. */
export function labTopology(env: NodeJS.ProcessEnv = process.env): LabTopology {
  const fabric = need(env, 'LAB_FABRIC');
  if (fabric !== 'tcm_loop' && fabric !== 'iscsi') throw new Error(`LAB_FABRIC=${fabric} is not a known fabric`);
  const pathDevices = list(need(env, 'LAB_PATH_DEVICES'));
  const paths = Number(need(env, 'LAB_PATHS'));
  if (pathDevices.length !== paths) {
    throw new Error(`LAB_PATH_DEVICES has ${pathDevices.length} devices but LAB_PATHS=${paths}`);
  }
  const hostBDevice = env.LAB_HOST_B_DEVICE;
  return {
    fabric,
    pathDevices,
    pathInitiators: list(env.LAB_PATH_INITIATORS),
    pathTargetPorts: list(env.LAB_PATH_TARGET_PORTS),
    mpathName: need(env, 'LAB_MPATH_NAME'),
    mpathDevice: need(env, 'LAB_MPATH_DEVICE'),
    dmDevice: need(env, 'LAB_DM_DEVICE'),
    wwid: need(env, 'LAB_WWID'),
    initiatorA: need(env, 'LAB_INITIATOR_A'),
    hostB: hostBDevice ? { device: hostBDevice, initiator: need(env, 'LAB_INITIATOR_B') } : undefined,
    lioBackstore: need(env, 'LAB_LIO_BACKSTORE'),
    iscsiTarget: env.LAB_ISCSI_TARGET || undefined,
    dbusAddress: env.LAB_DBUS_ADDRESS || undefined,
    outputDir: need(env, 'LAB_OUTPUT_DIR'),
    repo: need(env, 'LAB_REPO'),
  };
}

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program with a deadline; throws on spawn failure, timeout, or (unless allowFailure) non-zero exit. */
export function run(file: string, args: readonly string[], options: { timeoutMs?: number; allowFailure?: boolean; input?: string } = {}): RunResult {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const result = spawnSync(file, args, { encoding: 'utf8', timeout: timeoutMs, input: options.input, killSignal: 'SIGKILL' });
  const shown = [file, ...args].join(' ');
  if (result.error) {
    const timedOut = (result.error as NodeJS.ErrnoException).code === 'ETIMEDOUT';
    throw new Error(timedOut ? `${shown}: no answer within ${timeoutMs} ms` : `${shown}: ${result.error.message}`);
  }
  if (!options.allowFailure && result.status !== 0) {
    throw new Error(`${shown} exited ${result.status ?? result.signal}: ${(result.stderr || result.stdout).trim()}`);
  }
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/**
 * Sends one command to multipathd through its CLI and returns the reply exactly as the daemon sent it.
 * A string is split on spaces; pass an array to keep a word with spaces (e.g. a format) together.
 */
export function multipathd(command: string | readonly string[], timeoutMs = 15_000): string {
  // The CLI prints the reply verbatim and exits 1 when it is "fail\n"; callers judge the reply.
  const words = typeof command === 'string' ? command.split(' ') : command;
  return run('multipathd', words, { timeoutMs, allowFailure: true }).stdout;
}

/** Polls `probe` until it returns something other than undefined/false, or fails after the deadline with what it last saw. */
export function waitFor<T>(
  what: string,
  probe: () => T | undefined | false,
  options: { timeoutMs?: number; intervalMs?: number; describe?: () => string } = {},
): Promise<T> {
  return eventually(probe, what, { timeoutMs: 30_000, intervalMs: 200, ...options });
}

export interface PathState {
  device: string;
  /** dm state: active | failed */
  dmState: string;
  /** checker state: ready | faulty | ghost | ... */
  checkerState: string;
}

/** The map's paths as multipathd sees them. */
export function mapPaths(mapName: string): PathState[] {
  return multipathd('show paths raw format %m|%d|%t|%T')
    .split('\n')
    .map((line) => line.trim().split('|'))
    .filter((fields) => fields.length === 4 && fields[0] === mapName)
    .map(([, device, dmState, checkerState]) => ({ device: `/dev/${device}`, dmState, checkerState }));
}

export interface RegisteredKeys {
  generation: number;
  keys: bigint[];
}

/** Parses `sg_persist --in -k` output. */
export function parseSgPersistKeys(output: string): RegisteredKeys {
  const generation = /PR generation=0x([0-9a-f]+)/i.exec(output);
  if (!generation) throw new Error(`no PR generation in sg_persist output:\n${output}`);
  if (/there are NO registered reservation keys/i.test(output)) return { generation: parseInt(generation[1], 16), keys: [] };
  const declared = /(\d+) registered reservation keys? follows?/i.exec(output);
  const keys = [...output.matchAll(/^\s+0x([0-9a-f]+)\s*$/gim)].map((m) => BigInt('0x' + m[1]));
  if (!declared || Number(declared[1]) !== keys.length) throw new Error(`sg_persist key count does not match its list:\n${output}`);
  return { generation: parseInt(generation[1], 16), keys };
}

/** sg_persist's exit status for a unit attention (SG_LIB_CAT_UNIT_ATTENTION). */
const SG_UNIT_ATTENTION = 6;

/**
 * Runs a PR IN through sg_persist. These reads are the tests' oracle, not the subject: a
 * unit attention pending on the nexus (after a PREEMPT, say) is consumed by the first
 * command and reported once, so the read is repeated (at most twice more).
 */
function sgPersistIn(option: string, device: string): string {
  for (let attempt = 1; ; attempt++) {
    const result = run('sg_persist', ['--in', option, device], { allowFailure: true });
    if (result.status === 0) return result.stdout;
    if (result.status !== SG_UNIT_ATTENTION || attempt === 3) {
      throw new Error(`sg_persist --in ${option} ${device} exited ${result.status}: ${(result.stderr || result.stdout).trim()}`);
    }
  }
}

/** READ KEYS through one path (any sd device) with sg_persist. */
export function readKeys(device: string): RegisteredKeys {
  return parseSgPersistKeys(sgPersistIn('--read-keys', device));
}

export interface Reservation {
  generation: number;
  holder?: { key: bigint; type: number };
}

const SG_TYPE_NAMES: Record<string, number> = {
  'write exclusive': 1,
  'exclusive access': 3,
  'write exclusive, registrants only': 5,
  'exclusive access, registrants only': 6,
  'write exclusive, all registrants': 7,
  'exclusive access, all registrants': 8,
};

function prTypeFromSgName(name: string): number {
  const type = SG_TYPE_NAMES[name.trim().toLowerCase()];
  if (type === undefined) throw new Error(`unknown reservation type name from sg_persist: ${JSON.stringify(name)}`);
  return type;
}

function generationOf(output: string): number {
  const generation = /PR generation=0x([0-9a-f]+)/i.exec(output);
  if (!generation) throw new Error(`no PR generation in sg_persist output:\n${output}`);
  return parseInt(generation[1], 16);
}

/** Parses `sg_persist --in -r` output. */
export function parseSgPersistReservation(output: string): Reservation {
  const generation = generationOf(output);
  if (/there is NO reservation held/i.test(output)) return { generation };
  const key = /^\s*Key=0x([0-9a-f]+)\s*$/im.exec(output);
  const type = /scope: \w+,\s+type: (.+?)\s*$/im.exec(output);
  if (!key || !type) throw new Error(`cannot read the reservation from sg_persist output:\n${output}`);
  return { generation, holder: { key: BigInt('0x' + key[1]), type: prTypeFromSgName(type[1]) } };
}

/** READ RESERVATION through one path with sg_persist. */
export function readReservation(device: string): Reservation {
  return parseSgPersistReservation(sgPersistIn('--read-reservation', device));
}

export interface FullStatusEntry {
  key: bigint;
  relativeTargetPort: number;
  holder: boolean;
  /** The initiator's TransportID as sg_persist prints it, e.g. "SAS address: 0x5001405aa0000001" or "iSCSI name and session id: iqn..." */
  transportId: string;
}

/** Parses `sg_persist --in -s` (READ FULL STATUS) output: one entry per registered I_T nexus. */
export function parseSgPersistFullStatus(output: string): { generation: number; entries: FullStatusEntry[] } {
  const generation = generationOf(output);
  const entries = output
    .split(/^\s*Key=/m)
    .slice(1)
    .map((block) => {
      const key = /^0x([0-9a-f]+)/i.exec(block);
      const port = /Relative port address: 0x([0-9a-f]+)/i.exec(block);
      const transport = /Transport Id of initiator:\s*\n\s*(.+?)\s*$/im.exec(block);
      if (!key || !port || !transport) throw new Error(`cannot read a READ FULL STATUS entry from:\n${block}`);
      return {
        key: BigInt('0x' + key[1]),
        relativeTargetPort: parseInt(port[1], 16),
        holder: /<< Reservation holder >>/.test(block),
        transportId: transport[1],
      };
    });
  return { generation, entries };
}

/** READ FULL STATUS through one path with sg_persist. */
export function readFullStatus(device: string): { generation: number; entries: FullStatusEntry[] } {
  return parseSgPersistFullStatus(sgPersistIn('--read-full-status', device));
}

/** Writes a file under LAB_OUTPUT_DIR (the host gets it back in the run directory). */
export function writeArtifact(topology: LabTopology, relative: string, content: string): string {
  const file = path.join(topology.outputDir, relative);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  return file;
}

/** Stops a child the test started: SIGTERM, SIGKILL after `graceMs`, and waits for it to exit. */
export async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
