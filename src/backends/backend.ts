// The backend contract: types only, no implementation and nothing native.
// The protocol server, the CLI and the D-Bus service all drive a backend through
// `execute` with a command that ./admission.ts decoded and checked once; the typed
// helpers in ./pr-commands.ts are built on top of it.

import type { PrCommand } from '../scsi/pr-command';
import type { DeviceHandle } from '../device/handle';
import type { ScsiResult } from '../scsi/sense';

/** 'auto' is the device resolver (src/backends/resolve.ts), which picks one of the others per device. */
export type BackendName = 'emulated' | 'sg' | 'blkpr' | 'mpath' | 'auto';

/** What a backend needs to know about the device a command is for: its fd, path, access mode and description (src/device). */
export type { DeviceHandle };

/** Who sent a command, from SO_PEERCRED, for logs and access checks. */
export interface PeerIdentity {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

export interface ExecuteOptions {
  /** Aborts a command that has not started yet, e.g. when the client went away. */
  readonly signal?: AbortSignal;
  readonly peer?: PeerIdentity;
}

export interface PrBackend {
  readonly name: BackendName;
  /**
   * Runs one PERSISTENT RESERVE IN or OUT command that admission (./admission.ts) has
   * decoded and let through: the opcode, CDB length, parameter list length and the
   * read-only rule are settled; the service action, TYPE, SCOPE and the parameter list's
   * contents are the device server's to judge.
   *
   * Never rejects for a SCSI-level problem: a bad field, a conflict or a device error all
   * resolve to a ScsiResult with the matching status and sense. A PR IN result's dataIn is
   * at most the allocation length. A PR OUT that resolves GOOD is durable.
   */
  execute(device: DeviceHandle, command: PrCommand, options?: ExecuteOptions): Promise<ScsiResult>;
  /** Releases the backend's resources; in-flight commands finish first. */
  close(): Promise<void>;
}
