// qemu-pr-helper refuses PR OUT on an fd the client opened O_RDONLY (checked with
// fcntl(F_GETFL)) with INVALID OPCODE, before looking at the device. Every path into a
// backend applies this one rule from here.

import { Opcode } from '../scsi/constants';
import { checkCondition, Sense, type ScsiResult } from '../scsi/sense';
import type { DeviceHandle } from './backend';

export function refusePrOutOnReadOnly(device: Pick<DeviceHandle, 'writable'>, cdb: Uint8Array): ScsiResult | undefined {
  if (cdb.length > 0 && cdb[0] === Opcode.PERSISTENT_RESERVE_OUT && !device.writable) return checkCondition(Sense.INVALID_OPCODE);
  return undefined;
}
