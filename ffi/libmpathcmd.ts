// libmpathcmd (multipath-tools): the client side of multipathd's command socket.
//
// Why a native library instead of node:net: multipathd binds an abstract socket with an exact
// address length (39 bytes, no trailing NUL). Node 20's libuv connects to abstract names
// with the full 110-byte length and gets ECONNREFUSED (fixed in libuv 1.48). libmpathcmd
// also knows the framing (host-order size_t length including the NUL) and, from 0.12.0,
// the /run/multipathd.socket path and the MULTIPATH_SOCKET_NAME override.
//
// Every call runs on a libuv worker thread (koffi .async): mpath_process_cmd blocks for up to
// `timeout` ms per read, and the event loop must never wait for multipathd. errno is the
// worker's, captured by koffi at the end of the call.
//
// The library is loaded lazily by loadLibmpathcmd(), which never throws.

import * as fs from 'fs';
import koffi from 'koffi';
import { errnoName } from './errno';
import { libcHandle } from './libc-handle';
import { loadOptional, MULTIPATH_TOOLS, type OpenedLibrary, type OptionalLibrarySpec, type OptionalLoadResult } from './optional-library';

export const LIBMPATHCMD_SONAME = 'libmpathcmd.so.0';
/** The abstract socket every multipath-tools version listens on (without the leading NUL). */
export const DEFAULT_SOCKET = '/org/kernel/linux/storage/multipathd';
/** The pathname socket multipathd 0.12.0 and later also listens on. */
export const PATHNAME_SOCKET = '/run/multipathd.socket';
/** multipathd's own default for uxsock_timeout, in ms (DEFAULT_REPLY_TIMEOUT). */
export const DEFAULT_REPLY_TIMEOUT_MS = 4000;
/** The client refuses replies this long or longer (MAX_REPLY_LEN). */
export const MAX_REPLY_LEN = 32 * 1024 * 1024;
export const SOCKET_NAME_ENV = 'MULTIPATH_SOCKET_NAME';

export type MpathCmdOperation = 'connect' | 'process' | 'disconnect';

/** A failed libmpathcmd call, with the errno it left. */
export class MpathCmdError extends Error {
  readonly operation: MpathCmdOperation;
  readonly errno: number;
  /** 'ECONNREFUSED', 'ETIMEDOUT', ... or 'E<n>'; 'EUNKNOWN' when the library set none. */
  readonly code: string;

  constructor(operation: MpathCmdOperation, errno: number, detail?: string) {
    const code = errno > 0 ? errnoName(errno) : 'EUNKNOWN';
    super(`mpath_${operation === 'process' ? 'process_cmd' : operation} failed: ${code}${detail ? ` (${detail})` : ''}`);
    this.name = 'MpathCmdError';
    this.operation = operation;
    this.errno = errno;
    this.code = code;
  }
}

export interface SocketAddressInfo {
  /** What the loaded library will connect to. */
  readonly address: string;
  /** True when the library reads MULTIPATH_SOCKET_NAME (multipath-tools 0.12.0 and later). */
  readonly honoursEnvOverride: boolean;
  /** Set when MULTIPATH_SOCKET_NAME is set but this library ignores it. */
  readonly warning?: string;
}

export interface MpathCmdLib {
  readonly path: string | undefined;
  readonly socket: SocketAddressInfo;
  /** Opens a connection; rejects with MpathCmdError (ECONNREFUSED when multipathd is not running). */
  connect(): Promise<number>;
  /** Sends one command and returns the reply text without its trailing NUL. */
  processCommand(fd: number, command: string, timeoutMs: number): Promise<string>;
  disconnect(fd: number): void;
}

export type LoadResult = OptionalLoadResult<MpathCmdLib>;

/**
 * Which socket the library will use. 0.9.4's libmpathcmd hard-codes the abstract name; the
 * env override exists from 0.12.0, whose binary contains the variable's name.
 */
export function describeSocketAddress(libraryBytes: Buffer | undefined, env: NodeJS.ProcessEnv): SocketAddressInfo {
  const honours = libraryBytes !== undefined && libraryBytes.includes(SOCKET_NAME_ENV);
  const override = env[SOCKET_NAME_ENV];
  if (honours) {
    return { address: override && override.length > 0 ? override : `${PATHNAME_SOCKET} or @${DEFAULT_SOCKET}`, honoursEnvOverride: true };
  }
  return {
    address: `@${DEFAULT_SOCKET}`,
    honoursEnvOverride: false,
    warning: override
      ? `${SOCKET_NAME_ENV}=${override} is set but this libmpathcmd (older than multipath-tools 0.12.0) ignores it and connects to @${DEFAULT_SOCKET}`
      : undefined,
  };
}

// The reply is malloc()ed by the library: released with the same allocator.
const c_free = libcHandle.func('void free(void *ptr)') as unknown as (ptr: bigint) => void;

type AsyncFn = { async: (...args: unknown[]) => void };

const LIBMPATHCMD: OptionalLibrarySpec<MpathCmdLib> = {
  soname: LIBMPATHCMD_SONAME,
  ...MULTIPATH_TOOLS,
  bind: bindLibmpathcmd,
};

/**
 * Loads libmpathcmd once. Never throws; says why when it cannot. `soname` exists for tests
 * of the failure reports; other names are not cached.
 */
export function loadLibmpathcmd(soname: string = LIBMPATHCMD_SONAME): LoadResult {
  return loadOptional(LIBMPATHCMD, soname);
}

function bindLibmpathcmd(library: OpenedLibrary): MpathCmdLib {
  const connectFn = library.func<AsyncFn>('int mpath_connect(void)');
  const processFn = library.func<AsyncFn>('int mpath_process_cmd(int fd, const char *cmd, _Out_ void **reply, unsigned int timeout)');
  const disconnectFn = library.func<(fd: number) => number>('int mpath_disconnect(int fd)');
  const path = library.mappedPath();
  let bytes: Buffer | undefined;
  try {
    if (path) bytes = fs.readFileSync(path);
  } catch {
    bytes = undefined;
  }
  return {
    path,
    socket: describeSocketAddress(bytes, process.env),
    connect() {
      return new Promise((resolve, reject) => {
        connectFn.async((err: unknown, fd: number) => {
          const errno = koffi.errno();
          if (err) reject(err);
          else if (fd < 0) reject(new MpathCmdError('connect', errno));
          else resolve(fd);
        });
      });
    },
    processCommand: (fd, command, timeoutMs) => processCommand(processFn, fd, command, timeoutMs),
    disconnect(fd) {
      disconnectFn(fd);
    },
  };
}

/** One mpath_process_cmd on a worker thread; the reply text without its trailing NUL. */
function processCommand(processFn: AsyncFn, fd: number, command: string, timeoutMs: number): Promise<string> {
  if (!Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 0xffffffff) {
    return Promise.reject(new RangeError(`timeout ${timeoutMs} ms is not an unsigned int`));
  }
  if (command.includes('\0')) return Promise.reject(new RangeError('a multipathd command cannot contain NUL'));
  return new Promise((resolve, reject) => {
    const reply: (bigint | null)[] = [null];
    processFn.async(fd, command, reply, timeoutMs, (err: unknown, rc: number) => {
      const errno = koffi.errno();
      const pointer = reply[0];
      let text: string | undefined;
      if (pointer) {
        try {
          text = koffi.decode(pointer, 'char', -1) as string;
        } finally {
          c_free(pointer);
        }
      }
      if (err) reject(err);
      else if (rc !== 0) reject(new MpathCmdError('process', errno, `command "${command.split(' ')[0]} ..."`));
      else if (text === undefined) reject(new MpathCmdError('process', 0, 'no reply'));
      else resolve(text);
    });
  });
}
