// Reads the reservation_key setting out of multipath.conf and its config_dir, so the daemon
// can warn when it is missing: without it multipathd never registers new or reinstated
// paths, and I/O through them fails with RESERVATION CONFLICT.
//
// Tokenizing follows libmpathutil/parser.c (0.9.4): one statement per line, words split on
// whitespace, '"' quotes, '#' or '!' start a comment, '{' and '}' are words of their own.
// Files from config_dir (/etc/multipath/conf.d/*.conf) are read after multipath.conf by
// multipathd; callers pass their texts in that order to readReservationKeySettingFromFiles.

import * as fs from 'fs';
import { formatPrKey } from './commands';

export type ReservationKeySource = 'file' | 'key' | 'none';

export interface IgnoredReservationKey {
  /** Section path such as "multipaths/multipath" or "devices/device". */
  readonly section: string;
  readonly value: string;
  /** 1-based line in its text. */
  readonly line: number;
  /** The wwid of the multipath{} entry, when the key sits in one. */
  readonly wwid?: string;
  readonly why: string;
}

export interface ReservationKeySetting {
  /** From defaults{}: 'file' (prkeys file, setprkey works), 'key' (a fixed key) or 'none'. */
  readonly source: ReservationKeySource;
  readonly key?: bigint;
  readonly aptpl?: boolean;
  /** reservation_key lines that libmpathpersist 0.9.4 does not use. */
  readonly whereIgnored?: readonly IgnoredReservationKey[];
  /** reservation_key values multipath rejects (bad hex, too long); the previous value stays. */
  readonly invalid?: readonly { readonly value: string; readonly line: number; readonly section: string; readonly reason: string }[];
}

const QUOTE = Symbol('quote');
type Token = string | typeof QUOTE;

/** alloc_strvec() of libmpathutil/parser.c, for one line. */
export function tokenizeConfLine(line: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const isSpace = (ch: string): boolean => /\s/.test(ch) || ch.charCodeAt(0) > 0x7f;
  while (i < line.length && isSpace(line[i])) i++;
  if (i >= line.length || line[i] === '!' || line[i] === '#') return tokens;
  let inString = false;
  for (;;) {
    if (line[i] === '"' && !(inString && line[i + 1] === '"')) {
      tokens.push(QUOTE);
      inString = !inString;
      i++;
    } else if (!inString && (line[i] === '{' || line[i] === '}')) {
      tokens.push(line[i]);
      i++;
    } else {
      let word = '';
      for (;;) {
        while (
          i < line.length &&
          line[i] !== '"' &&
          (inString || (!isSpace(line[i]) && line[i] !== '!' && line[i] !== '#' && line[i] !== '{' && line[i] !== '}'))
        ) {
          word += line[i++];
        }
        if (inString && line[i] === '"' && line[i + 1] === '"') {
          word += '"';
          i += 2;
          continue;
        }
        break;
      }
      tokens.push(word);
    }
    while (!inString && i < line.length && isSpace(line[i])) i++;
    if (i >= line.length || (!inString && (line[i] === '!' || line[i] === '#'))) return tokens;
  }
}

/** set_value(): the second word, or the quoted string that follows the keyword. */
function statementValue(tokens: Token[]): string | undefined {
  if (tokens.length < 2) return undefined;
  if (tokens[1] !== QUOTE) return tokens[1] as string;
  const parts: string[] = [];
  for (const t of tokens.slice(2)) {
    if (t === QUOTE) break;
    parts.push(t);
  }
  return parts.join(' ');
}

/** parse_prkey_flags() of libmultipath/prkey.c. */
export function parseReservationKeyValue(value: string): { key: bigint; aptpl: boolean } | null {
  let keyPart = value;
  let aptpl = false;
  const colon = value.indexOf(':');
  if (colon >= 0) {
    keyPart = value.slice(0, colon);
    aptpl = value.slice(colon + 1) === 'aptpl';
  }
  let p = keyPart;
  if (p.startsWith('0')) p = p.slice(1);
  if (p.startsWith('x') || p.startsWith('X')) p = p.slice(1);
  if (p.length === 0 || p.length > 16 || !/^[0-9a-fA-F]+$/.test(p)) {
    // A bare "0" loses its only digit to the prefix strip and is rejected by multipath too.
    return null;
  }
  return { key: BigInt(`0x${p}`), aptpl };
}

/** Section keywords of multipath.conf; the '{' may be missing or on the next line. */
const SECTIONS = new Set(['defaults', 'blacklist', 'blacklist_exceptions', 'devices', 'device', 'multipaths', 'multipath', 'overrides', 'protocol']);

interface Found {
  section: string[];
  value: string;
  line: number;
  wwid?: string;
}

function scan(text: string): Found[] {
  const found: Found[] = [];
  const stack: { name: string; wwid?: string; pending: Found[] }[] = [];
  text.split(/\r?\n|\r/).forEach((raw, index) => {
    const tokens = tokenizeConfLine(raw);
    if (tokens.length === 0) return;
    const first = tokens[0];
    if (first === '}') {
      const closed = stack.pop();
      if (closed) for (const f of closed.pending) found.push({ ...f, wwid: closed.wwid });
      return;
    }
    if (typeof first !== 'string' || first === '{') return;
    if (tokens.includes('{') || SECTIONS.has(first)) {
      stack.push({ name: first, pending: [] });
      return;
    }
    const top = stack[stack.length - 1];
    if (first === 'wwid' && top) top.wwid = statementValue(tokens);
    if (first === 'reservation_key') {
      const entry: Found = { section: stack.map((s) => s.name), value: statementValue(tokens) ?? '', line: index + 1 };
      if (top) top.pending.push(entry);
      else found.push(entry);
    }
  });
  // Unclosed sections still count: multipath warns but keeps what it read.
  while (stack.length > 0) {
    const closed = stack.pop()!;
    for (const f of closed.pending) found.push({ ...f, wwid: closed.wwid });
  }
  return found.sort((a, b) => a.line - b.line);
}

export function readReservationKeySetting(confText: string): ReservationKeySetting {
  return readReservationKeySettingFromFiles([confText]);
}

/** multipath.conf first, then the config_dir files in the order multipathd reads them. */
export function readReservationKeySettingFromFiles(texts: readonly string[]): ReservationKeySetting {
  let source: ReservationKeySource = 'none';
  let key: bigint | undefined;
  let aptpl: boolean | undefined;
  const whereIgnored: IgnoredReservationKey[] = [];
  const invalid: { value: string; line: number; section: string; reason: string }[] = [];
  for (const text of texts) {
    for (const f of scan(text)) {
      const section = f.section.join('/');
      if (section === 'defaults') {
        if (f.value === 'file') {
          source = 'file';
          key = undefined;
          aptpl = undefined;
          continue;
        }
        const parsed = parseReservationKeyValue(f.value);
        if (!parsed) {
          invalid.push({ value: f.value, line: f.line, section, reason: 'not a hex key of at most 16 digits; multipath keeps the previous value' });
          continue;
        }
        if (parsed.key === 0n) {
          // multipathd treats a zero key as "no key" (update_map_pr, mpath_pr_event_handle).
          invalid.push({ value: f.value, line: f.line, section, reason: 'a zero key means no key to multipathd' });
          source = 'none';
          key = undefined;
          aptpl = undefined;
          continue;
        }
        source = 'key';
        key = parsed.key;
        aptpl = parsed.aptpl;
      } else if (section === 'multipaths/multipath') {
        whereIgnored.push({
          section,
          value: f.value,
          line: f.line,
          wwid: f.wwid,
          why: 'libmpathpersist 0.9.4 ignores reservation_key in multipaths{} ("configured reservation key doesn\'t match", fixed in 0.10.0); put it in defaults{}',
        });
      } else {
        whereIgnored.push({ section, value: f.value, line: f.line, why: `reservation_key is not a keyword of ${section || 'the top level'}; multipath ignores it there` });
      }
    }
  }
  const result: ReservationKeySetting = { source };
  return {
    ...result,
    ...(key !== undefined ? { key, aptpl } : {}),
    ...(whereIgnored.length > 0 ? { whereIgnored } : {}),
    ...(invalid.length > 0 ? { invalid } : {}),
  };
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

/** What a PR helper must tell the operator about a setting other than `reservation_key file`, with the log fields; undefined when it is fine. */
export function reservationKeyWarning(setting: ReservationKeySetting): { readonly fields: Record<string, unknown>; readonly message: string } | undefined {
  switch (setting.source) {
    case 'none':
      return {
        fields: { whereIgnored: setting.whereIgnored },
        message:
          'multipath.conf has no reservation_key in defaults{}: multipathd will NOT register paths that are added or reinstated, ' +
          'and I/O through them will fail with RESERVATION CONFLICT once a reservation is held. Add `reservation_key file` to defaults{} in /etc/multipath.conf.',
      };
    case 'key':
      return {
        fields: { key: setting.key !== undefined ? formatPrKey(setting.key, false) : undefined },
        message:
          'multipath.conf sets a fixed reservation_key: every other key is refused, as libmpathpersist does (the guest sees LUN COMMUNICATION FAILURE), ' +
          'and multipathd cannot be told a new key. `reservation_key file` is what a PR helper needs.',
      };
    case 'file':
      return undefined;
  }
}
