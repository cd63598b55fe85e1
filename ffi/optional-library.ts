// Shared libraries the daemon can run without (libmpathpersist, libmpathcmd, libsystemd):
// loaded on first use, never throwing, and saying why and what to install when they
// cannot be used.

import * as fs from 'fs';
import koffi, { type LibraryHandle } from 'koffi';

export type OptionalLoadResult<T> = { ok: true; lib: T } | { ok: false; reason: string };

/** An opened library, handed to the spec's bind() to declare what it needs. */
export interface OpenedLibrary {
  readonly handle: LibraryHandle;
  /** Declares one function; when the library lacks it, loading fails with "lacks a symbol". */
  func<F>(signature: string): F;
  /** Where the library was mapped from (/proc/self/maps); informational only. */
  mappedPath(): string | undefined;
}

export interface OptionalLibrarySpec<T> {
  /** The name loaded by default; only its result is cached. */
  readonly soname: string;
  /** Which upstream project ships it, and the Debian package that installs it. */
  readonly project: string;
  readonly debianPackage: string;
  /** Appended to "lacks a symbol" reasons, e.g. which version introduced the symbol. */
  readonly missingSymbolHint?: string;
  /** Refuses before loading, e.g. on an architecture the declared layouts do not fit. */
  unsupported?(): string | undefined;
  bind(library: OpenedLibrary): T;
}

/** Where libmpathpersist and libmpathcmd come from. */
export const MULTIPATH_TOOLS = { project: 'multipath-tools', debianPackage: 'multipath-tools' } as const;

class MissingSymbol extends Error {}

const cache = new WeakMap<OptionalLibrarySpec<unknown>, OptionalLoadResult<unknown>>();

/**
 * Loads the spec's library once and binds it. Never throws; says why when it cannot.
 * `soname` exists for tests of the failure reports; other names are not cached.
 */
export function loadOptional<T>(spec: OptionalLibrarySpec<T>, soname: string = spec.soname): OptionalLoadResult<T> {
  if (soname !== spec.soname) return open(spec, soname);
  let result = cache.get(spec) as OptionalLoadResult<T> | undefined;
  if (!result) {
    result = open(spec, soname);
    cache.set(spec, result);
  }
  return result;
}

function open<T>(spec: OptionalLibrarySpec<T>, soname: string): OptionalLoadResult<T> {
  const refusal = spec.unsupported?.();
  if (refusal) return { ok: false, reason: refusal };
  let handle: LibraryHandle;
  try {
    handle = koffi.load(soname);
  } catch (err) {
    return {
      ok: false,
      reason: `${soname} could not be loaded (${(err as Error).message}); install ${spec.project} (Debian: apt-get install ${spec.debianPackage})`,
    };
  }
  const library: OpenedLibrary = {
    handle,
    func<F>(signature: string): F {
      try {
        return handle.func(signature) as unknown as F;
      } catch (err) {
        throw new MissingSymbol(`${soname} lacks a symbol: ${(err as Error).message}`);
      }
    },
    mappedPath: () => mappedPath(spec.soname.replace(/\.so(\..*)?$/, '')),
  };
  try {
    return { ok: true, lib: spec.bind(library) };
  } catch (err) {
    if (!(err instanceof MissingSymbol)) throw err;
    return { ok: false, reason: spec.missingSymbolHint ? `${err.message} (${spec.missingSymbolHint})` : err.message };
  }
}

function mappedPath(fragment: string): string | undefined {
  try {
    for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
      const file = line.split(/\s+/).slice(5).join(' ');
      if (file.includes(fragment)) return file;
    }
  } catch {
    // /proc not mounted: the path is informational only.
  }
  return undefined;
}
