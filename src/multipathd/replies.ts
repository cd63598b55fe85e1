// Pure parsers for multipathd replies, written against multipath-tools 0.9.4
// (multipathd/uxlsnr.c default_reply, multipathd/cli.c do_genhelp, multipathd/cli_handlers.c,
// libmultipath/print.c) and the formats of newer releases where they differ. No I/O here.

export type MultipathdErrorKind =
  /** multipathd answered "fail" (the map or path is unknown, or the action failed). */
  | 'fail'
  /** multipathd could not take its lock within uxsock_timeout, or the client read timed out. */
  | 'timeout'
  /** The peer is not root: only list/show are allowed. */
  | 'permission'
  /** multipathd did not recognise the command (it answered with its command list). */
  | 'unknown-command'
  /** No multipathd to talk to, or the connection broke. */
  | 'unavailable'
  /** A reply this project cannot read: an unknown format or a damaged reply. */
  | 'malformed';

export class MultipathdError extends Error {
  readonly command: string;
  /** The raw reply, when there was one. */
  readonly reply: string | undefined;
  readonly kind: MultipathdErrorKind;
  /** multipathd's own reason (after "fail\n" from 0.9.8), or a description of the problem. */
  readonly reason: string | undefined;
  /** errno from libmpathcmd for 'unavailable' and client-side 'timeout'. */
  readonly errno: number | undefined;
  /**
   * For 'unavailable' after the command was sent: the daemon may have executed it.
   * False when the connection was refused (nothing was sent).
   */
  readonly maybeExecuted: boolean;

  constructor(init: {
    command: string;
    kind: MultipathdErrorKind;
    reply?: string;
    reason?: string;
    errno?: number;
    maybeExecuted?: boolean;
  }) {
    super(`multipathd "${init.command}": ${init.kind}${init.reason ? `: ${init.reason}` : ''}`);
    this.name = 'MultipathdError';
    this.command = init.command;
    this.kind = init.kind;
    this.reply = init.reply;
    this.reason = init.reason;
    this.errno = init.errno;
    this.maybeExecuted = init.maybeExecuted ?? false;
  }
}

function malformed(command: string, reply: string, reason: string): MultipathdError {
  return new MultipathdError({ command, kind: 'malformed', reply, reason });
}

// The headline is "<cmd>: not found\n"; the multipathd CLI sends its command with a trailing
// " \n", so the headline can straddle two lines ("list commands \n: not found\n").
const HELP_HEADLINE = /^([\s\S]*?): (not found|Missing argument|Not enough memory)\n/;

/**
 * Turns the generic error replies into MultipathdError and returns anything else unchanged.
 * 0.9.4 answers "fail\n", "timeout\n", "permission deny: need to be root\n" or
 * "<cmd>: not found\n<version>\nCLI commands reference:\n..."; from 0.9.8 each of those
 * comes after "fail\n", and a handler may add a reason line.
 */
export function checkReply(command: string, reply: string): string {
  let rest = reply;
  let failed = false;
  if (rest === 'fail' || rest.startsWith('fail\n')) {
    failed = true;
    rest = rest.slice(5);
  }
  if (rest.startsWith('permission deny')) {
    return raise(new MultipathdError({ command, kind: 'permission', reply, reason: rest.trim() }));
  }
  if (rest === 'timeout\n' || rest === 'timeout') {
    return raise(new MultipathdError({ command, kind: 'timeout', reply, reason: 'multipathd could not take its lock in time' }));
  }
  const help = HELP_HEADLINE.exec(rest);
  if (help && rest.includes('CLI commands reference:')) {
    return raise(new MultipathdError({ command, kind: 'unknown-command', reply, reason: `${help[1].trim()}: ${help[2]}` }));
  }
  if (failed) {
    const reason = rest.trim();
    return raise(new MultipathdError({ command, kind: 'fail', reply, reason: reason.length > 0 ? reason : undefined }));
  }
  return reply;
}

function raise(error: MultipathdError): never {
  throw error;
}

/** For commands whose only success answer is "ok\n". */
export function parseOk(command: string, reply: string): void {
  const checked = checkReply(command, reply);
  if (checked !== 'ok\n') throw malformed(command, reply, 'expected "ok"');
}

export type PrStatus = 'set' | 'unset' | 'unknown';

/**
 * getprstatus: 0.9.4 prints prflag with "%d" and no newline ("0" or "1"); from 0.9.5 the
 * answer is "unset\n", "set\n" or "unknown\n".
 */
export function parsePrStatus(command: string, reply: string): PrStatus {
  const text = checkReply(command, reply);
  switch (text) {
    case '0':
    case 'unset\n':
      return 'unset';
    case '1':
    case 'set\n':
      return 'set';
    case 'unknown\n':
      return 'unknown';
    default:
      throw malformed(command, reply, 'expected 0, 1, unset, set or unknown');
  }
}

export interface PrKey {
  readonly key: bigint;
  readonly aptpl: boolean;
}

/** getprkey: "none\n", or "0x<hex>\n" / "0x<hex>:aptpl\n" (printf "0x%" PRIx64, not padded). */
export function parsePrKey(command: string, reply: string): PrKey | null {
  const text = checkReply(command, reply);
  if (text === 'none\n') return null;
  const match = /^0x([0-9a-fA-F]{1,16})(:aptpl)?\n$/.exec(text);
  if (!match) throw malformed(command, reply, 'expected "none" or 0x<hex>[:aptpl]');
  return { key: BigInt(`0x${match[1]}`), aptpl: match[2] !== undefined };
}

export type DaemonState = 'init' | 'startup' | 'configure' | 'idle' | 'running' | 'shutdown';

export interface DaemonStatus {
  readonly pid: number;
  /** One of the DaemonState names, or what multipathd printed when it is something else ("(null)"). */
  readonly state: DaemonState | string;
}

/** show daemon: "pid %d %s\n". */
export function parseDaemon(command: string, reply: string): DaemonStatus {
  const text = checkReply(command, reply);
  const match = /^pid (\d+) (\S+)\n?$/.exec(text);
  if (!match) throw malformed(command, reply, 'expected "pid <n> <state>"');
  return { pid: Number(match[1]), state: match[2] };
}

export interface MultipathToolsVersion {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
  /** As printed, e.g. "multipath-tools v0.9.4 (12/19, 2022)". */
  readonly text: string;
}

/** Finds the VERSION_STRING line that multipathd prints with its command list. */
export function parseVersion(reply: string): MultipathToolsVersion | null {
  const match = /multipath-tools v(\d+)\.(\d+)\.(\d+)[^\n]*/.exec(reply);
  if (!match) return null;
  return { major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3]), text: match[0] };
}

export function versionAtLeast(v: MultipathToolsVersion, major: number, minor: number, patch = 0): boolean {
  if (v.major !== major) return v.major > major;
  if (v.minor !== minor) return v.minor > minor;
  return v.patch >= patch;
}

// ---------------------------------------------------------------------------------------
// show paths (pretty table)

export interface PathInfo {
  /** sdX, or "-" when the path has no device. */
  readonly device: string;
  /** "major:minor", or "#:#" when unknown. */
  readonly devT: string;
  /** H:C:T:L, or "#:#:#:#" when unknown. */
  readonly hcil?: string;
  /** The device-mapper state of the path: "active", "failed" or "undef". */
  readonly dmState?: string;
  /** The path checker's state: "ready", "faulty", "shaky", "ghost", "i/o pending", "i/o timeout", "delayed", "undef". */
  readonly checkerState?: string;
  /** The SCSI device state: "running", "offline", or "unknown" for orphans. */
  readonly devState?: string;
  readonly priority?: number;
  /** The map alias, "[orphan]" or "[unknown]". */
  readonly multipath?: string;
  readonly wwid?: string;
  /** Every column by its header name, as printed. */
  readonly columns: Readonly<Record<string, string>>;
}

/** Column headers of libmultipath/print.c (pd[]); some contain spaces, so match them whole. */
const PATH_HEADERS = [
  'uuid', 'hcil', 'dev', 'dev_t', 'dm_st', 'dev_st', 'chk_st', 'vend/prod/rev', 'checker', 'next_check', 'pri',
  'size', 'serial', 'marginal_st', 'multipath', 'host WWNN', 'target WWNN', 'host WWPN', 'target WWPN',
  'host adapter', 'foreign', 'vpd page data', 'failures', 'protocol', 'init_st', 'LUN hex',
].sort((a, b) => b.length - a.length);

function headerColumns(header: string): { name: string; start: number }[] {
  const columns: { name: string; start: number }[] = [];
  let i = 0;
  while (i < header.length) {
    if (header[i] === ' ') {
      i++;
      continue;
    }
    const known = PATH_HEADERS.find((h) => header.startsWith(h, i) && (i + h.length === header.length || header[i + h.length] === ' '));
    const name = known ?? /^\S+/.exec(header.slice(i))![0];
    columns.push({ name, start: i });
    i += name.length;
  }
  return columns;
}

/**
 * Parses `show paths` and `show paths format "<fmt>"` (both print a header and pad every
 * column to a common width). Columns are cut at the header's positions because values can
 * contain spaces ("i/o pending", the next_check progress bar). An empty path list is
 * answered "ok\n" (multipathd drops the lone header and sends the generic reply).
 */
export function parsePathsTable(command: string, reply: string): PathInfo[] {
  const text = checkReply(command, reply);
  if (text === 'ok\n' || text.trim() === '') return [];
  const lines = text.split('\n').filter((l) => l.length > 0);
  const columns = headerColumns(lines[0]);
  if (!columns.some((c) => c.name === 'dev')) throw malformed(command, reply, 'the paths table has no "dev" column');
  return lines.slice(1).map((line) => {
    const values: Record<string, string> = {};
    columns.forEach((c, i) => {
      const end = i + 1 < columns.length ? columns[i + 1].start : line.length;
      values[c.name] = line.slice(c.start, end).trim();
    });
    const priority = values.pri !== undefined && /^-?\d+$/.test(values.pri) ? Number(values.pri) : undefined;
    return {
      device: values.dev,
      devT: values.dev_t ?? '#:#',
      hcil: values.hcil,
      dmState: values.dm_st,
      checkerState: values.chk_st,
      devState: values.dev_st,
      priority,
      multipath: values.multipath,
      wwid: values.uuid,
      columns: values,
    };
  });
}

// ---------------------------------------------------------------------------------------
// show maps json / show map X json (libmultipath/print.c PRINT_JSON_*, format 0.1)

export interface JsonPath {
  readonly dev: string;
  readonly dev_t: string;
  readonly dm_st: string;
  readonly dev_st: string;
  readonly chk_st: string;
  readonly checker: string;
  readonly pri: number;
  readonly host_wwnn: string;
  readonly target_wwnn: string;
  readonly host_wwpn: string;
  readonly target_wwpn: string;
  readonly host_adapter: string;
  readonly lun_hex?: string;
  readonly marginal_st?: string;
}

export interface JsonPathGroup {
  readonly selector: string;
  readonly pri: number;
  readonly dm_st: string;
  readonly marginal_st?: string;
  readonly group: number;
  readonly paths: readonly JsonPath[];
}

export interface JsonMap {
  readonly name: string;
  /** The WWID (without the "mpath-" dm uuid prefix). */
  readonly uuid: string;
  /** The dm-N kernel name. */
  readonly sysfs: string;
  readonly failback: string;
  readonly queueing: string;
  readonly paths: number;
  readonly write_prot: string;
  readonly dm_st: string;
  readonly features: string;
  readonly hwhandler: string;
  readonly action: string;
  readonly path_faults: number;
  readonly vend: string;
  readonly prod: string;
  readonly rev: string;
  readonly switch_grp: number;
  readonly map_loads: number;
  readonly total_q_time: number;
  readonly q_timeouts: number;
  readonly path_groups: readonly JsonPathGroup[];
}

function parseJson(command: string, reply: string): Record<string, unknown> {
  const text = checkReply(command, reply);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // multipathd does not escape strings, so a quote in a vendor string breaks the JSON.
    throw malformed(command, reply, `not JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed(command, reply, 'not a JSON object');
  const doc = value as Record<string, unknown>;
  if (doc.major_version !== 0) throw malformed(command, reply, `JSON major_version ${String(doc.major_version)} is not 0`);
  return doc;
}

function checkMap(command: string, reply: string, map: unknown): JsonMap {
  if (typeof map !== 'object' || map === null) throw malformed(command, reply, 'a map is not an object');
  const m = map as Record<string, unknown>;
  for (const field of ['name', 'uuid', 'sysfs', 'dm_st']) {
    if (typeof m[field] !== 'string') throw malformed(command, reply, `a map lacks the string field "${field}"`);
  }
  if (!Array.isArray(m.path_groups)) throw malformed(command, reply, `map ${String(m.name)} lacks path_groups`);
  for (const g of m.path_groups as unknown[]) {
    if (typeof g !== 'object' || g === null || !Array.isArray((g as Record<string, unknown>).paths)) {
      throw malformed(command, reply, `map ${String(m.name)} has a path group without paths`);
    }
    for (const p of (g as { paths: unknown[] }).paths) {
      const path = p as Record<string, unknown>;
      if (typeof path?.dev !== 'string' || typeof path?.dev_t !== 'string') throw malformed(command, reply, `map ${String(m.name)} has a path without dev/dev_t`);
    }
  }
  return m as unknown as JsonMap;
}

export function parseMapsJson(command: string, reply: string): JsonMap[] {
  const doc = parseJson(command, reply);
  if (!Array.isArray(doc.maps)) throw malformed(command, reply, 'no "maps" array');
  return doc.maps.map((m) => checkMap(command, reply, m));
}

export function parseMapJson(command: string, reply: string): JsonMap {
  const doc = parseJson(command, reply);
  return checkMap(command, reply, doc.map);
}

/** All paths of a map, flattened over its path groups. */
export function mapPaths(map: JsonMap): (JsonPath & { group: number })[] {
  return map.path_groups.flatMap((g) => g.paths.map((p) => ({ ...p, group: g.group })));
}
