// The one stage every command passes before a backend sees it: decode once (opcode, CDB
// length, parameter list length), then the guards that need no device I/O. The first is
// qemu-pr-helper's own: PR OUT on an fd the client opened O_RDONLY is refused with INVALID
// OPCODE (it checks fcntl(F_GETFL) before looking at the device). Callers add theirs, such
// as the daemon's --allow-device list, so a refused device never sees a SCSI command.

import { decodePrCommand, type PrCommand } from '../scsi/pr-command';
import { checkCondition, Sense, type ScsiResult } from '../scsi/sense';
import type { DeviceHandle, PeerIdentity } from './backend';

/** A check on an admitted command: undefined to let it through, or the answer to give instead. */
export type CommandGuard = (device: DeviceHandle, command: PrCommand, peer: PeerIdentity | undefined) => ScsiResult | undefined;

export type Admission =
  | { readonly ok: true; readonly command: PrCommand }
  /** `command` is set when decoding worked and a guard refused it. */
  | { readonly ok: false; readonly result: ScsiResult; readonly reason: string; readonly command?: PrCommand };

export const refuseWriteOnReadOnlyFd: CommandGuard = (device, command) =>
  command.direction === 'out' && !device.writable ? checkCondition(Sense.INVALID_OPCODE) : undefined;

export function admitCommand(
  device: DeviceHandle,
  cdb: Uint8Array,
  dataOut: Uint8Array,
  guards: readonly CommandGuard[] = [],
  peer?: PeerIdentity,
): Admission {
  const decoded = decodePrCommand(cdb, dataOut);
  if (!decoded.ok) return decoded;
  const { command } = decoded;
  const readOnly = refuseWriteOnReadOnlyFd(device, command, peer);
  if (readOnly) return { ok: false, result: readOnly, reason: 'PR OUT on an fd opened read-only', command };
  for (const guard of guards) {
    const refusal = guard(device, command, peer);
    if (refusal) return { ok: false, result: refusal, reason: `refused by ${guard.name || 'a guard'}`, command };
  }
  return { ok: true, command };
}
