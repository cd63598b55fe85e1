// Which backend serves a device, decided from its description (src/device: what the fd is
// and what sysfs says about its dev_t).
//
//   regular-file      → emulated
//   dm-multipath      → mpath, else blkpr (dm pr_ops send REGISTER down every path)
//   dm                → blkpr (dm pr_ops reach the table's devices; single-target tables only)
//   partition         → refused: a reservation covers the whole LU, never one partition
//   scsi-block        → sg, else blkpr
//   nvme              → blkpr (nvme has pr_ops; no SG_IO)
//   scsi-generic      → sg
//   anything else (loop, md, virtio-blk, /dev/null…) → refused
//
// A refused device answers CHECK CONDITION, ILLEGAL REQUEST / INVALID OPERATION CODE: the
// device cannot take PERSISTENT RESERVE commands, which is final. qemu-pr-helper would run
// SG_IO, get ENOTTY and answer ABORTED COMMAND / I/O PROCESS TERMINATED, which a guest
// retries; QEMU itself never sends PR commands for a device without SG_IO, so nothing
// depends on that answer.

import { describeHandle, hostDeviceTree, withDescription, type DeviceClass, type DeviceInfo, type DeviceTree } from '../device';
import { notPrCapable } from '../scsi/errno-sense';
import type { ScsiResult } from '../scsi/sense';
import type { BackendName, DeviceHandle, ExecuteOptions, PrBackend } from './backend';
import type { PrCommand } from '../scsi/pr-command';


export type ConcreteBackendName = Exclude<BackendName, 'auto'>;

/** Backends that can serve each class, best first. */
export const BACKEND_PREFERENCE: Record<DeviceClass, readonly ConcreteBackendName[]> = {
  'regular-file': ['emulated'],
  'dm-multipath': ['mpath', 'blkpr'],
  dm: ['blkpr'],
  partition: [],
  'scsi-block': ['sg', 'blkpr'],
  nvme: ['blkpr'],
  'block-without-pr': [],
  'scsi-generic': ['sg'],
  'char-device': [],
  'not-a-device': [],
  unknown: [],
};

export type BackendChoice =
  | { readonly ok: true; readonly backend: ConcreteBackendName; readonly info: DeviceInfo; readonly forced: boolean }
  | { readonly ok: false; readonly result: ScsiResult; readonly info: DeviceInfo; readonly reason: string };

/** Picks the backend for a classified device from those available; `forced` overrides the table. */
export function chooseBackend(info: DeviceInfo, available: ReadonlySet<ConcreteBackendName>, forced?: ConcreteBackendName): BackendChoice {
  if (forced) {
    if (available.has(forced)) return { ok: true, backend: forced, info, forced: true };
    return { ok: false, result: notPrCapable(), info, reason: `forced backend ${forced} is not available` };
  }
  const candidates = BACKEND_PREFERENCE[info.class];
  const backend = candidates.find((name) => available.has(name));
  if (backend) return { ok: true, backend, info, forced: false };
  const reason = candidates.length === 0 ? `not a PR-capable device: ${info.detail}` : `${info.detail}: needs the ${candidates.join(' or ')} backend, which is not available`;
  return { ok: false, result: notPrCapable(), info, reason };
}

// ---------------------------------------------------------------------------------------
// The resolver as a backend

export interface BackendResolverOptions {
  readonly backends: Partial<Record<ConcreteBackendName, PrBackend>>;
  /** --backend: use this one for every device. */
  readonly forced?: ConcreteBackendName;
  /** Where sysfs and the device nodes are; tests pass a fake tree. Default the host's. */
  readonly deviceTree?: DeviceTree;
  /** Told about every decision (for logging and the D-Bus device list). */
  readonly onDecision?: (device: DeviceHandle, choice: BackendChoice) => void;
  /** Why a backend is missing from `backends` (libmpathpersist did not load: the reason), for status views. */
  readonly unavailable?: Partial<Record<ConcreteBackendName, string>>;
}

/** A PrBackend that hands each command to the backend that fits the device. */
export class BackendResolver implements PrBackend {
  readonly name = 'auto' as const;
  private readonly backends: Partial<Record<ConcreteBackendName, PrBackend>>;
  /** The backends commands can be handed to. */
  readonly available: ReadonlySet<ConcreteBackendName>;
  private readonly deviceTree: DeviceTree;

  constructor(private readonly options: BackendResolverOptions) {
    this.backends = { ...options.backends };
    this.available = new Set(Object.keys(this.backends) as ConcreteBackendName[]);
    if (options.forced && !this.available.has(options.forced)) {
      throw new Error(`--backend ${options.forced} was requested but that backend is not available (have: ${[...this.available].join(', ') || 'none'})`);
    }
    this.deviceTree = options.deviceTree ?? hostDeviceTree;
  }

  /** Why a backend is not available, as its creator said; undefined when it is, or nobody said. */
  unavailableReason(name: ConcreteBackendName): string | undefined {
    return this.available.has(name) ? undefined : this.options.unavailable?.[name];
  }

  /** The decision for a device, without running anything. Never throws. */
  resolve(device: DeviceHandle): BackendChoice {
    return chooseBackend(describeHandle(device, this.deviceTree), this.available, this.options.forced);
  }

  async execute(device: DeviceHandle, command: PrCommand, options?: ExecuteOptions): Promise<ScsiResult> {
    device = withDescription(device, this.deviceTree); // described once; the backend reads it from the handle
    const choice = this.resolve(device);
    this.options.onDecision?.(device, choice);
    if (!choice.ok) return choice.result;
    return this.backends[choice.backend]!.execute(device, command, options);
  }

  async close(): Promise<void> {
    const distinct = new Set(Object.values(this.backends).filter((b): b is PrBackend => b !== undefined));
    await Promise.all([...distinct].map((b) => b.close()));
  }
}
