// What a lab boot looks like, and how suites ask for one.
//
// A suite declares the labs it runs in with one `// @lab {json}` line per
// configuration near the top of its .lab.ts file, for example
//   // @lab {"fabric": "tcm_loop", "paths": 2}
//   // @lab {"fabric": "iscsi", "paths": 2, "secondHost": true}
// The runner boots once per distinct configuration and runs every suite that
// asked for it in that boot. Declaring it in the source (not a side file) keeps
// the declaration next to the code that depends on it.

import * as fs from 'node:fs';
import * as path from 'node:path';

export type Fabric = 'tcm_loop' | 'iscsi';

export interface LabConfig {
  /** How the initiator reaches the LIO target: tcm_loop (in-kernel loopback) or iSCSI over the guest's lo. */
  fabric: Fabric;
  /** Number of paths (I_T nexuses) from host A to the one LU; all are in the multipath map. */
  paths: number;
  /** A second initiator (host B) with one path to the same LU, kept out of multipath. */
  secondHost: boolean;
  /** Start a system dbus-daemon before the suite runs. */
  dbus: boolean;
}

export const DEFAULT_CONFIG: LabConfig = { fabric: 'tcm_loop', paths: 2, secondHost: false, dbus: false };

export const MAX_PATHS = 8;

/** Validates a partial configuration and fills in defaults; throws with the reason on bad input. */
export function normalizeConfig(raw: unknown, where = 'lab configuration'): LabConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new Error(`${where}: expected a JSON object, got ${JSON.stringify(raw)}`);
  }
  const input = raw as Record<string, unknown>;
  for (const key of Object.keys(input)) {
    if (!(key in DEFAULT_CONFIG)) {
      throw new Error(`${where}: unknown key "${key}" (known: ${Object.keys(DEFAULT_CONFIG).join(', ')})`);
    }
  }
  const config: LabConfig = { ...DEFAULT_CONFIG };
  if (input.fabric !== undefined) {
    if (input.fabric !== 'tcm_loop' && input.fabric !== 'iscsi') {
      throw new Error(`${where}: fabric must be "tcm_loop" or "iscsi", got ${JSON.stringify(input.fabric)}`);
    }
    config.fabric = input.fabric;
  }
  if (input.paths !== undefined) {
    if (typeof input.paths !== 'number' || !Number.isInteger(input.paths) || input.paths < 1 || input.paths > MAX_PATHS) {
      throw new Error(`${where}: paths must be an integer from 1 to ${MAX_PATHS}, got ${JSON.stringify(input.paths)}`);
    }
    config.paths = input.paths;
  }
  for (const flag of ['secondHost', 'dbus'] as const) {
    if (input[flag] !== undefined) {
      if (typeof input[flag] !== 'boolean') {
        throw new Error(`${where}: ${flag} must be true or false, got ${JSON.stringify(input[flag])}`);
      }
      config[flag] = input[flag] as boolean;
    }
  }
  return config;
}

/** A stable identity for a configuration, used to group suites into one boot. */
export function configKey(config: LabConfig): string {
  return `${config.fabric}-${config.paths}p${config.secondHost ? '-hostb' : ''}${config.dbus ? '-dbus' : ''}`;
}

export function describeConfig(config: LabConfig): string {
  const extras = [config.secondHost ? 'host B' : '', config.dbus ? 'D-Bus' : ''].filter(Boolean);
  return `${config.fabric} × ${config.paths} path${config.paths === 1 ? '' : 's'}${extras.length ? ' + ' + extras.join(' + ') : ''}`;
}

/** Reads the `// @lab {...}` lines of one suite's source. A suite without any is an error, not a default. */
export function parseLabHeaders(source: string, where: string): LabConfig[] {
  const configs: LabConfig[] = [];
  const lines = source.split('\n');
  lines.forEach((line, index) => {
    const match = /^\s*\/\/\s*@lab\b(.*)$/.exec(line);
    if (!match) return;
    const text = match[1].trim();
    let parsed: unknown;
    try {
      parsed = text === '' ? {} : JSON.parse(text);
    } catch (error) {
      throw new Error(`${where}:${index + 1}: @lab line is not JSON: ${(error as Error).message}`);
    }
    configs.push(normalizeConfig(parsed, `${where}:${index + 1}`));
  });
  if (configs.length === 0) {
    throw new Error(`${where}: no "// @lab {...}" line; every lab suite must say which lab it needs`);
  }
  return configs;
}

export interface LabSuite {
  /** Source path relative to the repository root, e.g. test/lab/lab-smoke.lab.ts */
  source: string;
  /** Compiled path relative to the repository root, e.g. dist/test/lab/lab-smoke.lab.js */
  compiled: string;
  configs: LabConfig[];
}

export interface LabGroup {
  config: LabConfig;
  suites: LabSuite[];
}

function walk(dir: string, found: string[]): void {
  if (!fs.existsSync(dir)) return;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(full, found);
    else if (entry.name.endsWith('.lab.ts')) found.push(full);
  }
}

/** Finds test/lab/**\/*.lab.ts under the repository, sorted for a stable run order. */
export function discoverSuites(repoRoot: string): LabSuite[] {
  const found: string[] = [];
  walk(path.join(repoRoot, 'test', 'lab'), found);
  return found.sort().map((full) => {
    const source = path.relative(repoRoot, full);
    return {
      source,
      compiled: path.join('dist', source.replace(/\.ts$/, '.js')),
      configs: parseLabHeaders(fs.readFileSync(full, 'utf8'), source),
    };
  });
}

/** One group per distinct configuration, in order of first appearance. */
export function groupSuites(suites: readonly LabSuite[]): LabGroup[] {
  const groups = new Map<string, LabGroup>();
  for (const suite of suites) {
    for (const config of suite.configs) {
      const key = configKey(config);
      let group = groups.get(key);
      if (!group) {
        group = { config, suites: [] };
        groups.set(key, group);
      }
      group.suites.push(suite);
    }
  }
  return [...groups.values()];
}
