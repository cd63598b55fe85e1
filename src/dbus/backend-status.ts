// The Manager1.Backends property: one row per backend the resolver has (in its order),
// a row for mpath when libmpathpersist did not load (with the reason the resolver was
// given), and multipathd's health last.

import type { BackendResolver, ConcreteBackendName } from '../backends/resolve';
import type { BackendStatus } from './manager1';

const DETAILS: Partial<Record<ConcreteBackendName, string>> = {
  sg: 'SG_IO pass-through to SCSI disks and sg nodes',
  blkpr: 'IOC_PR_* ioctls (dm, NVMe, SCSI disks)',
  mpath: 'libmpathpersist loaded: dm-multipath maps use libmpathpersist',
};

export function backendStatuses(resolver: Pick<BackendResolver, 'available' | 'unavailableReason'>, emulatedDetail: () => string, multipathd: BackendStatus): BackendStatus[] {
  const statuses: BackendStatus[] = [...resolver.available].map((name) => [name, true, name === 'emulated' ? emulatedDetail() : (DETAILS[name] ?? '')]);
  if (!resolver.available.has('mpath')) {
    statuses.push(['mpath', false, `dm-multipath maps use blkpr: ${resolver.unavailableReason('mpath') ?? 'libmpathpersist was not loaded'}`]);
  }
  statuses.push(multipathd);
  return statuses;
}
