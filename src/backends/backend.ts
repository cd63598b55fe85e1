// The backend contract: types only, no implementation and nothing native.
// The protocol server, the CLI and the D-Bus service all drive a backend through
// `execute`; the typed helpers in ./pr-commands.ts are built on top of it.

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
   * Runs one PERSISTENT RESERVE IN or OUT command. `cdb` is the CDB (10 bytes are
   * significant; the qemu-pr-helper protocol pads it to 16). `dataOut` is the PR OUT
   * parameter list, empty for PR IN.
   *
   * Never rejects for a SCSI-level problem: a bad CDB, a bad parameter list, a conflict
   * or a device error all resolve to a ScsiResult with the matching status and sense.
   * A PR IN result's dataIn is at most the CDB's allocation length. A PR OUT that
   * resolves GOOD is durable.
   */
  execute(device: DeviceHandle, cdb: Uint8Array, dataOut: Uint8Array, options?: ExecuteOptions): Promise<ScsiResult>;
  /** Releases the backend's resources; in-flight commands finish first. */
  close(): Promise<void>;
}
