// Messages between the mpath backend and its libmpathpersist child process
// (src/backends/mpath/mpath-worker.ts). They travel over the fork() IPC channel with
// serialization 'advanced' (V8 structured clone), so bigint keys and Uint8Array data cross
// unchanged. Types only.

import type { ProutParams } from '../../../ffi/libmpathpersist';
import type { DevNumber } from '../../device';

/** Which map a command is for: its dev_t, and optionally a path the worker may use after checking its st_rdev. */
export interface MapTarget extends DevNumber {
  readonly path?: string;
}

export interface WorkerPrinRequest {
  readonly kind: 'in';
  readonly id: number;
  readonly target: MapTarget;
  readonly serviceAction: number;
  readonly allocationLength: number;
  readonly verbose?: number;
}

export interface WorkerProutRequest {
  readonly kind: 'out';
  readonly id: number;
  readonly target: MapTarget;
  readonly serviceAction: number;
  readonly scope: number;
  readonly type: number;
  readonly params: ProutParams;
  readonly verbose?: number;
}

export type WorkerRequest = WorkerPrinRequest | WorkerProutRequest;

/** The library ran: `rc` is its MPATH_PR_* return code. */
export interface WorkerLibraryReply {
  readonly kind: 'reply';
  readonly id: number;
  readonly rc: number;
  /** PR IN data-in in SCSI wire form (min(8192, allocation length) bytes) when rc is SUCCESS. */
  readonly wire?: Uint8Array;
  /** A successful PR IN whose answer could not be used safely. */
  readonly refused?: string;
  /** Milliseconds the library call took. */
  readonly elapsedMs: number;
}

/** The library was not called: the map could not be opened, or the request was malformed. */
export interface WorkerErrorReply {
  readonly kind: 'error';
  readonly id: number;
  readonly message: string;
}

/** Sent once after start-up: whether the library loaded and initialised. */
export interface WorkerReady {
  readonly kind: 'ready';
  readonly ok: boolean;
  readonly reason?: string;
  readonly abi?: string;
  readonly libraryPath?: string;
  /** RLIMIT_NOFILE soft limit after libmpathpersist_init (it raises it), from /proc/self/limits. */
  readonly openFilesLimit?: string;
}

export type WorkerMessage = WorkerLibraryReply | WorkerErrorReply | WorkerReady;
