// A typed client for multipathd's command socket.
//
// Connection policy: one connection per command, as libmpathpersist's own updates do.
// - multipathd restarts (reconfigure, package upgrade, systemd restart) silently invalidate a
//   kept socket; the next command would fail on a dead fd and need a retry.
// - A retry after a broken kept connection is ambiguous for the PR commands (setprkey,
//   setprstatus): the daemon may already have executed them. With a fresh connection per
//   command, "connect refused" proves nothing was sent (maybeExecuted=false).
// - Connecting to a local socket costs microseconds; these commands are rare (per PR OUT).
// Commands are serialised through one FIFO: callers such as the prkey keeper need their
// setprkey/setprstatus to land in order, and at most one libuv worker thread is ever blocked
// on a slow multipathd.

import { loadLibmpathcmd, MpathCmdError, type MpathCmdLib } from '../../ffi/libmpathcmd';
import { Commands } from './commands';
import {
  checkReply,
  MultipathdError,
  parseDaemon,
  parseMapJson,
  parseMapsJson,
  parseOk,
  parsePathsTable,
  parsePrKey,
  parsePrStatus,
  parseVersion,
  type DaemonStatus,
  type JsonMap,
  type MultipathToolsVersion,
  type PathInfo,
  type PrKey,
  type PrStatus,
} from './replies';

/** Sends one command and returns the raw reply; rejects with MultipathdError('unavailable'|'timeout'). */
export interface MultipathdTransport {
  send(command: string, timeoutMs: number): Promise<string>;
}

const ETIMEDOUT = 110;

/** The real transport: libmpathcmd, one connection per command. */
export function libmpathcmdTransport(lib?: MpathCmdLib): MultipathdTransport {
  let resolved = lib;
  return {
    async send(command, timeoutMs) {
      if (!resolved) {
        const loaded = loadLibmpathcmd();
        if (!loaded.ok) throw new MultipathdError({ command, kind: 'unavailable', reason: loaded.reason });
        resolved = loaded.lib;
      }
      const cmd = resolved;
      let fd: number;
      try {
        fd = await cmd.connect();
      } catch (err) {
        const e = err as MpathCmdError;
        throw new MultipathdError({
          command,
          kind: 'unavailable',
          reason: `cannot connect to multipathd at ${cmd.socket.address}: ${e.code ?? e.message}`,
          errno: e.errno,
          maybeExecuted: false,
        });
      }
      try {
        return await cmd.processCommand(fd, command, timeoutMs);
      } catch (err) {
        if (err instanceof MpathCmdError) {
          throw new MultipathdError({
            command,
            kind: err.errno === ETIMEDOUT ? 'timeout' : 'unavailable',
            reason: err.errno === ETIMEDOUT ? `no reply within ${timeoutMs} ms` : `connection failed during the command: ${err.code}`,
            errno: err.errno,
            maybeExecuted: true,
          });
        }
        throw err;
      } finally {
        cmd.disconnect(fd);
      }
    },
  };
}

export interface MultipathdClientOptions {
  readonly transport?: MultipathdTransport;
  /**
   * Client-side wait per reply, in ms. Longer than multipathd's default uxsock_timeout
   * (4000) so that a busy daemon answers "timeout" itself rather than leaving us guessing.
   */
  readonly timeoutMs?: number;
}

export const DEFAULT_CLIENT_TIMEOUT_MS = 5000;

export class MultipathdClient {
  private readonly transport: MultipathdTransport;
  private readonly timeoutMs: number;
  private tail: Promise<unknown> = Promise.resolve();
  private detectedVersion: MultipathToolsVersion | null | undefined;

  constructor(options: MultipathdClientOptions = {}) {
    this.transport = options.transport ?? libmpathcmdTransport();
    this.timeoutMs = options.timeoutMs ?? DEFAULT_CLIENT_TIMEOUT_MS;
  }

  /** Sends a command in order after every earlier one; returns the raw reply. */
  send(command: string): Promise<string> {
    const run = this.tail.then(
      () => this.transport.send(command, this.timeoutMs),
      () => this.transport.send(command, this.timeoutMs),
    );
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Sends a command and reads its reply with `parse`, which throws MultipathdError for a reply it does not expect. */
  private async ask<T>(command: string, parse: (command: string, reply: string) => T): Promise<T> {
    return parse(command, await this.send(command));
  }

  /** Sends a command and throws MultipathdError for fail/timeout/permission/unknown-command replies. */
  async command(command: string): Promise<string> {
    return this.ask(command, checkReply);
  }

  async showMapsJson(): Promise<JsonMap[]> {
    return this.ask(Commands.showMapsJson(), parseMapsJson);
  }

  async showMapJson(map: string): Promise<JsonMap> {
    return this.ask(Commands.showMapJson(map), parseMapJson);
  }

  async showPaths(): Promise<PathInfo[]> {
    return this.ask(Commands.showPaths(), parsePathsTable);
  }

  async showDaemon(): Promise<DaemonStatus> {
    return this.ask(Commands.showDaemon(), parseDaemon);
  }

  async getPrStatus(map: string): Promise<PrStatus> {
    return this.ask(Commands.getPrStatus(map), parsePrStatus);
  }

  async setPrStatus(map: string): Promise<void> {
    return this.ask(Commands.setPrStatus(map), parseOk);
  }

  async unsetPrStatus(map: string): Promise<void> {
    return this.ask(Commands.unsetPrStatus(map), parseOk);
  }

  async getPrKey(map: string): Promise<PrKey | null> {
    return this.ask(Commands.getPrKey(map), parsePrKey);
  }

  /** Works only with `reservation_key file` in multipath.conf; otherwise multipathd answers "fail". */
  async setPrKey(map: string, key: bigint, aptpl: boolean): Promise<void> {
    return this.ask(Commands.setPrKey(map, key, aptpl), parseOk);
  }

  async unsetPrKey(map: string): Promise<void> {
    return this.ask(Commands.unsetPrKey(map), parseOk);
  }

  async failPath(path: string): Promise<void> {
    return this.ask(Commands.failPath(path), parseOk);
  }

  async reinstatePath(path: string): Promise<void> {
    return this.ask(Commands.reinstatePath(path), parseOk);
  }

  /**
   * The daemon's multipath-tools version, from the command list it prints for an unknown
   * command. Null when the reply carries no version line. Cached after the first answer.
   */
  async version(): Promise<MultipathToolsVersion | null> {
    if (this.detectedVersion !== undefined) return this.detectedVersion;
    const cmd = Commands.versionProbe();
    const reply = await this.send(cmd);
    this.detectedVersion = parseVersion(reply);
    return this.detectedVersion;
  }
}
