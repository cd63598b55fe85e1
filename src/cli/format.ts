// Human output in the shape sg_persist and mpathpersist print, so an admin reading
// `mpath-pr in` sees what they already know; and the --json forms for scripts.

import { prTypeName, type PrTypeCode } from '../scsi/constants';
import type { Capabilities, ReadFullStatusData, ReadKeysData, ReadReservationData } from '../scsi/pr-in-data';
import { formatTransportId } from '../scsi/transport-id';

export const hexKey = (key: bigint): string => `0x${key.toString(16)}`;
const hexGeneration = (generation: number): string => `0x${generation.toString(16)}`;
const scopeName = (scope: number): string => (scope === 0 ? 'LU_SCOPE' : `scope=${scope}`);

export function formatReadKeys(data: ReadKeysData): string {
  if (data.keys.length === 0) return `  PR generation=${hexGeneration(data.generation)}, there are NO registered reservation keys\n`;
  const lines = [`  PR generation=${hexGeneration(data.generation)}, ${data.keys.length} registered reservation key${data.keys.length === 1 ? '' : 's'} follow${data.keys.length === 1 ? 's' : ''}:`];
  for (const key of data.keys) lines.push(`    ${hexKey(key)}`);
  return lines.join('\n') + '\n';
}

export function formatReadReservation(data: ReadReservationData): string {
  if (!data.reservation) return `  PR generation=${hexGeneration(data.generation)}, there is NO reservation held\n`;
  const { key, scope, type } = data.reservation;
  return (
    `  PR generation=${hexGeneration(data.generation)}, Reservation follows:\n` +
    `    Key=${hexKey(key)}\n` +
    `    scope: ${scopeName(scope)},  type: ${prTypeName(type)}\n`
  );
}

export function formatCapabilities(caps: Capabilities): string {
  const bit = (b: boolean | undefined) => (b ? 1 : 0);
  const lines = [
    'Report capabilities response:',
    `  Replace Lost Reservation Capable(RLR_C): ${bit(caps.replaceLostReservation)}`,
    `  Compatible Reservation Handling(CRH): ${bit(caps.crh)}`,
    `  Specify Initiator Ports Capable(SIP_C): ${bit(caps.sipC)}`,
    `  All Target Ports Capable(ATP_C): ${bit(caps.atpC)}`,
    `  Persist Through Power Loss Capable(PTPL_C): ${bit(caps.ptplC)}`,
    `  Type Mask Valid(TMV): ${bit(caps.tmv)}`,
    `  Allow Commands: ${caps.allowCommands}`,
    `  Persist Through Power Loss Active(PTPL_A): ${bit(caps.ptplA)}`,
  ];
  if (caps.tmv) {
    lines.push('    Support indicated in Type mask:');
    for (const type of [7, 6, 5, 3, 1, 8] as PrTypeCode[]) lines.push(`      ${prTypeName(type)}: ${bit(caps.types.includes(type))}`);
  }
  return lines.join('\n') + '\n';
}

export function formatFullStatus(data: ReadFullStatusData): string {
  const lines = [`  PR generation=${hexGeneration(data.generation)}`];
  if (data.descriptors.length === 0) lines.push('  No full status descriptors');
  for (const d of data.descriptors) {
    lines.push(`    Key=${hexKey(d.key)}`);
    lines.push(`      All target ports bit ${d.allTgPt ? 'set' : 'clear'}`);
    lines.push(`      Relative port address: 0x${d.relativeTargetPort.toString(16)}`);
    if (d.holder) {
      lines.push('      << Reservation holder >>');
      lines.push(`      scope: ${scopeName(d.scope)},  type: ${prTypeName(d.type)}`);
    } else {
      lines.push('      not reservation holder');
    }
    lines.push('      Transport Id of initiator:');
    lines.push(`        ${formatTransportId(d.transportId)}`);
  }
  return lines.join('\n') + '\n';
}

/** JSON.stringify that writes 64-bit keys as "0x…" strings instead of failing on BigInt. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v) => (typeof v === 'bigint' ? hexKey(v) : v), 2);
}
