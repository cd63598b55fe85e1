// libmpathpersist (multipath-tools) through koffi: the four entry points the project uses,
// for the LIBMPATHPERSIST_2.1.0 ABI (0.9.4, unchanged up to 0.14.x). The struct layouts are
// in libmpathpersist-layout.ts, the conversion of PR IN answers back to SCSI wire bytes in
// libmpathpersist-prin.ts and the PR OUT parameter block in libmpathpersist-prout.ts; this
// module re-exports them, so it is the one import for the library.
//
// HAZARDS that shape these modules:
// - mpath_persistent_reserve_{in,out} call exit(1) when device-mapper is unusable, print to
//   stderr, and libmpathpersist_init() raises RLIMIT_NOFILE. Only call them in the dedicated
//   child process the mpath backend runs; never in the daemon or a test runner.
// - The library mutates its arguments (clears SPEC_I_PT, swaps key/sa_key on rollback), so
//   every call gets freshly built buffers here; nothing is reused.
// - READ FULL STATUS unpacks descriptors into the 8192-byte private buffer, 270 bytes each,
//   plus a pointer per descriptor after it. More than 30 descriptors write past the 8456
//   bytes mpath_alloc_prin_response() allocates. We hand it a much larger buffer so the
//   overflow stays inside our own memory, and refuse the answer when it has more than 30.
// - Calls are not thread-safe: callers serialise them (the child process does one at a time).
//
// The library is loaded lazily by loadLibmpathpersist(), which never throws.

import { MPATH_PR, MPATH_PRIN } from './libmpathpersist-layout';
import { decodePrinResponse, prinResponseBytes, wireLength, type PrinResult } from './libmpathpersist-prin';
import { prepareProutBlock, type ProutParams } from './libmpathpersist-prout';
import { loadOptional, MULTIPATH_TOOLS, type OpenedLibrary, type OptionalLibrarySpec, type OptionalLoadResult } from './optional-library';

export * from './libmpathpersist-layout';
export * from './libmpathpersist-prin';
export * from './libmpathpersist-prout';

// ---------------------------------------------------------------------------------------
// Loading and calling

export interface PrinRequest {
  /** An fd of the dm-multipath node itself (not a partition); only fstat'ed by the library. */
  readonly fd: number;
  readonly serviceAction: number;
  /** The CDB's allocation length; the returned wire bytes are min(8192, this) long. */
  readonly allocationLength: number;
  readonly noisy?: boolean;
  /** 0..4; the library overwrites its global verbosity with it on every call. */
  readonly verbose?: number;
}

export interface ProutRequest {
  readonly fd: number;
  readonly serviceAction: number;
  readonly scope: number;
  readonly type: number;
  readonly params: ProutParams;
  readonly noisy?: boolean;
  readonly verbose?: number;
}

export interface MpathPersistLib {
  /** Where the library was mapped from (from /proc/self/maps). */
  readonly path: string | undefined;
  /** 'LIBMPATHPERSIST_2.1.0' (0.9.x) or 'LIBMPATHPERSIST_2.2.0+' (0.10.0 and later). */
  readonly abi: 'LIBMPATHPERSIST_2.1.0' | 'LIBMPATHPERSIST_2.2.0+';
  /** 0 on success. A second init after exit fails (pthread_once). Raises RLIMIT_NOFILE. */
  init(): number;
  exit(): number;
  /** May call exit(1) when device-mapper is unusable: only in the isolated child process. */
  reserveIn(request: PrinRequest): PrinResult;
  /** May call exit(1) when device-mapper is unusable: only in the isolated child process. */
  reserveOut(request: ProutRequest): { rc: number };
}

export type LoadResult = OptionalLoadResult<MpathPersistLib>;

export const LIBMPATHPERSIST_SONAME = 'libmpathpersist.so.0';

function clampVerbosity(v: number | undefined): number {
  return v === undefined ? 0 : Math.max(0, Math.min(4, Math.trunc(v)));
}

type ReserveIn = (fd: number, sa: number, resp: Buffer, noisy: number, verbose: number) => number;
type ReserveOut = (fd: number, sa: number, scope: number, type: number, paramp: Buffer, noisy: number, verbose: number) => number;

const LIBMPATHPERSIST: OptionalLibrarySpec<MpathPersistLib> = {
  soname: LIBMPATHPERSIST_SONAME,
  ...MULTIPATH_TOOLS,
  missingSymbolHint: 'libmpathpersist_init appeared in multipath-tools 0.8.x; this library is older, or not multipath-tools',
  unsupported: () =>
    process.arch === 'x64' || process.arch === 'arm64' ? undefined : `struct layouts are declared for LP64 little-endian; this is ${process.arch}`,
  bind: bindLibmpathpersist,
};

/**
 * Loads libmpathpersist once. Never throws; says why when it cannot. `soname` exists for
 * tests of the failure reports; other names are not cached.
 */
export function loadLibmpathpersist(soname: string = LIBMPATHPERSIST_SONAME): LoadResult {
  return loadOptional(LIBMPATHPERSIST, soname);
}

function bindLibmpathpersist(library: OpenedLibrary): MpathPersistLib {
  const init = library.func<() => number>('int libmpathpersist_init(void)');
  const exit = library.func<() => number>('int libmpathpersist_exit(void)');
  const reserveInNative = library.func<ReserveIn>('int mpath_persistent_reserve_in(int fd, int rq_servact, void *resp, int noisy, int verbose)');
  const reserveOutNative = library.func<ReserveOut>(
    'int mpath_persistent_reserve_out(int fd, int rq_servact, int rq_scope, unsigned int rq_type, void *paramp, int noisy, int verbose)',
  );
  let abi: MpathPersistLib['abi'] = 'LIBMPATHPERSIST_2.1.0';
  try {
    library.handle.symbol('mpath_persistent_reserve_in__');
    abi = 'LIBMPATHPERSIST_2.2.0+';
  } catch {
    // Absent before 0.10.0: the 0.9.x ABI this module was written against.
  }
  return {
    path: library.mappedPath(),
    abi,
    init: () => init(),
    exit: () => exit(),
    reserveIn: (request) => reserveIn(reserveInNative, request),
    reserveOut(request) {
      const rc = reserveOutNative(
        request.fd,
        request.serviceAction,
        request.scope,
        request.type,
        prepareProutBlock(request.params),
        request.noisy ? 1 : 0,
        clampVerbosity(request.verbose),
      );
      return { rc };
    },
  };
}

/** One PR IN, refused before the call when the library would not understand it. */
function reserveIn(reserveInNative: ReserveIn, request: PrinRequest): PrinResult {
  wireLength(request.allocationLength);
  if (!(Object.values(MPATH_PRIN) as number[]).includes(request.serviceAction)) {
    return { rc: MPATH_PR.SYNTAX_ERROR, refused: `PR IN service action ${request.serviceAction} is not supported by libmpathpersist` };
  }
  const resp = Buffer.alloc(prinResponseBytes(request.serviceAction));
  const rc = reserveInNative(request.fd, request.serviceAction, resp, request.noisy ? 1 : 0, clampVerbosity(request.verbose));
  if (rc !== MPATH_PR.SUCCESS) return { rc };
  const decoded = decodePrinResponse(request.serviceAction, resp, request.allocationLength);
  if ('refused' in decoded) return { rc, refused: decoded.refused };
  return { rc, data: decoded };
}
