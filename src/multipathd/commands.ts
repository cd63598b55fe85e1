// Builders for multipathd CLI commands. The commands are plain text that multipathd splits
// with the same tokenizer as multipath.conf (libmpathutil/parser.c alloc_strvec): whitespace
// separates words, '"' starts a quoted string, '#' and '!' start a comment, '{' and '}' are
// words of their own. A map or path name containing any of them would change the command,
// so names are validated, never quoted. Verbs come first ("getprkey map X"), the syntax
// every multipathd since 0.9.2 accepts.

/** multipathd resets the connection for commands longer than this, NUL included (_MAX_CMD_LEN). */
export const MAX_COMMAND_BYTES = 512;

export class CommandArgumentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CommandArgumentError';
  }
}

// Printable ASCII without space, quote, comment and brace characters.
const SAFE_WORD = /^[\x24-\x7a\x7c\x7e]+$/;
const FORBIDDEN_EXPLAINED: Record<string, string> = {
  '"': 'a double quote',
  '#': "'#' (starts a comment)",
  '!': "'!' (starts a comment)",
  '{': "'{'",
  '}': "'}'",
};

function checkWord(kind: string, value: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new CommandArgumentError(`${kind} name must be a non-empty string`);
  if (!SAFE_WORD.test(value)) {
    const bad = [...value].find((ch) => !SAFE_WORD.test(ch)) ?? '';
    const why =
      FORBIDDEN_EXPLAINED[bad] ??
      (/\s/.test(bad) ? 'whitespace' : bad.charCodeAt(0) < 0x20 || bad.charCodeAt(0) === 0x7f ? 'a control character' : 'a non-ASCII character');
    throw new CommandArgumentError(`${kind} name ${JSON.stringify(value)} contains ${why}, which multipathd's command parser would split or drop`);
  }
  return value;
}

/** A multipath map: its alias (mpatha), its WWID, or dm-N. */
export function mapName(value: string): string {
  return checkWord('map', value);
}

/** A path device: sdX or major:minor. */
export function pathName(value: string): string {
  return checkWord('path', value);
}

function finish(command: string): string {
  if (Buffer.byteLength(command) + 1 > MAX_COMMAND_BYTES) {
    throw new CommandArgumentError(`command is ${Buffer.byteLength(command) + 1} bytes with its NUL; multipathd accepts at most ${MAX_COMMAND_BYTES}`);
  }
  return command;
}

const U64_MAX = (1n << 64n) - 1n;

/** The key argument of setprkey: lower-case hex with 0x, plus ":aptpl" when APTPL is wanted. */
export function formatPrKey(key: bigint, aptpl: boolean): string {
  if (typeof key !== 'bigint' || key < 0n || key > U64_MAX) throw new CommandArgumentError('reservation key must be a 64-bit unsigned bigint');
  return `0x${key.toString(16)}${aptpl ? ':aptpl' : ''}`;
}

/**
 * The format used for `show paths`: the default columns (hcil dev dev_t pri dm_st chk_st
 * dev_st) without next_check, plus the map alias and the WWID.
 */
export const PATHS_FORMAT = '%i %d %D %p %t %T %o %m %w';

export const Commands = {
  showMapsJson: (): string => 'show maps json',
  showMapJson: (map: string): string => finish(`show map ${mapName(map)} json`),
  showPaths: (): string => `show paths format "${PATHS_FORMAT}"`,
  showDaemon: (): string => 'show daemon',
  getPrStatus: (map: string): string => finish(`getprstatus map ${mapName(map)}`),
  setPrStatus: (map: string): string => finish(`setprstatus map ${mapName(map)}`),
  unsetPrStatus: (map: string): string => finish(`unsetprstatus map ${mapName(map)}`),
  getPrKey: (map: string): string => finish(`getprkey map ${mapName(map)}`),
  setPrKey: (map: string, key: bigint, aptpl: boolean): string => finish(`setprkey map ${mapName(map)} key ${formatPrKey(key, aptpl)}`),
  unsetPrKey: (map: string): string => finish(`unsetprkey map ${mapName(map)}`),
  failPath: (path: string): string => finish(`fail path ${pathName(path)}`),
  reinstatePath: (path: string): string => finish(`reinstate path ${pathName(path)}`),
  /**
   * multipathd has no version command (0.9.4 to 0.14). An unknown single word makes every
   * version answer "<cmd>: not found", its version line, and the command list, to root and
   * non-root peers alike (parsing happens before the permission check).
   */
  versionProbe: (): string => 'version',
} as const;
