// Defaults and validation for the daemon's settings, shared by `mpath-pr serve` and
// `mpath-pr-helper` (which only differ in flag spelling and default socket path).

import os from 'node:os';
import path from 'node:path';
import type { ConcreteBackendName } from '../backends/resolve';
import type { AccessSettings } from './access-control';

export type BackendSetting = 'auto' | ConcreteBackendName;
export const BACKEND_SETTINGS: readonly BackendSetting[] = ['auto', 'emulated', 'sg', 'blkpr', 'mpath'];

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface DaemonConfig {
  /** Where to listen; undefined with socket activation. */
  readonly socketPath?: string;
  readonly socketMode: number;
  readonly backend: BackendSetting;
  /** The emulated SAN's state file. */
  readonly statePath: string;
  readonly initiator: string;
  readonly paths: number;
  readonly logLevel: LogLevel;
  readonly pidfile?: string;
  /** -u/-g: drop to this user and group after binding the socket. */
  readonly user?: string;
  readonly group?: string;
  /**
   * Skip the privilege drop (and its re-exec of the process). Only for embedding the daemon
   * in another process, such as a test runner; the CLIs never set it.
   */
  readonly keepPrivileges?: boolean;
  /** Peer and device allow-lists and per-peer limits; everything allowed when absent. */
  readonly access?: AccessSettings;
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** qemu-pr-helper's default, so libvirt and hand-written QEMU command lines find us. */
export const QEMU_PR_HELPER_DEFAULT_SOCKET = '/var/run/qemu-pr-helper.sock';
export const QEMU_PR_HELPER_DEFAULT_PIDFILE = '/var/run/qemu-pr-helper.pid';

/** `mpath-pr serve`'s socket: /run for root, the user's runtime dir otherwise. */
export function defaultServeSocket(): string {
  if (isRoot()) return '/run/mpath-pr/mpath-pr.sock';
  const runtime = process.env.XDG_RUNTIME_DIR || os.tmpdir();
  return path.join(runtime, `mpath-pr-${process.getuid?.() ?? 'user'}.sock`);
}

/**
 * The socket the daemon binds: the one given, none under systemd socket activation (the
 * daemon takes the inherited fd), else the command's default.
 */
export function listenSocketPath(given: string | undefined, defaultPath: () => string, env: NodeJS.ProcessEnv = process.env, pid = process.pid): string | undefined {
  if (given !== undefined) return given;
  const activated = env.LISTEN_FDS !== undefined && env.LISTEN_PID === String(pid);
  return activated ? undefined : defaultPath();
}

export function defaultStatePath(): string {
  if (isRoot()) return '/var/lib/mpath-pr/state.db';
  const stateHome = process.env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(stateHome, 'mpath-pr', 'state.db');
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function parsePathCount(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < 1 || value > 64) throw new ConfigError(`--paths must be an integer 1..64, got ${JSON.stringify(text)}`);
  return value;
}

export function parseBackendSetting(text: string): BackendSetting {
  if (!(BACKEND_SETTINGS as readonly string[]).includes(text)) {
    throw new ConfigError(`--backend must be one of ${BACKEND_SETTINGS.join(', ')}, got ${JSON.stringify(text)}`);
  }
  return text as BackendSetting;
}

export function parseLogLevel(text: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(text)) throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  return text as LogLevel;
}

export function parseSocketMode(text: string): number {
  if (!/^[0-7]{3,4}$/.test(text)) throw new ConfigError(`--socket-mode must be octal like 0600, got ${JSON.stringify(text)}`);
  return parseInt(text, 8);
}

/** A positive integer limit (1..1000000). */
export function parseLimit(text: string, what: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < 1 || value > 1_000_000) throw new ConfigError(`${what} must be an integer 1..1000000, got ${JSON.stringify(text)}`);
  return value;
}

/** A comma-separated environment list ("a,b, c") as its non-empty items. */
export function splitList(text: string | undefined): string[] {
  return (text ?? '').split(',').map((item) => item.trim()).filter(Boolean);
}

/** --allow-device: an absolute path glob, or a WWID pattern without '/'. */
export function parseDevicePattern(text: string): string {
  if (!text || /\s/.test(text)) throw new ConfigError(`--allow-device takes an absolute path glob or a WWID, got ${JSON.stringify(text)}`);
  if (!text.startsWith('/') && text.includes('/')) throw new ConfigError(`--allow-device ${JSON.stringify(text)}: a path must be absolute; a WWID has no '/'`);
  return text;
}
