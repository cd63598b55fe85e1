// Sense data (SPC-4 §4.5): fixed (0x70/0x71) and descriptor (0x72/0x73) formats,
// plus the named conditions this project returns. Pure functions, no I/O.

import { SenseKey, Status } from './constants';

export interface SenseCondition {
  readonly key: number;
  readonly asc: number;
  readonly ascq: number;
}

export interface DecodedSense extends SenseCondition {
  readonly format: 'fixed' | 'descriptor';
  readonly current: boolean;
  /** The INFORMATION field, when valid. */
  readonly information?: bigint;
}

function condition(key: number, asc: number, ascq: number): SenseCondition {
  return Object.freeze({ key, asc, ascq });
}

/** Every sense condition the project builds itself, by name. */
export const Sense = {
  NO_SENSE: condition(SenseKey.NO_SENSE, 0x00, 0x00),
  INVALID_OPCODE: condition(SenseKey.ILLEGAL_REQUEST, 0x20, 0x00),
  INVALID_FIELD_IN_CDB: condition(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00),
  INVALID_FIELD_IN_PARAMETER_LIST: condition(SenseKey.ILLEGAL_REQUEST, 0x26, 0x00),
  PARAMETER_LIST_LENGTH_ERROR: condition(SenseKey.ILLEGAL_REQUEST, 0x1a, 0x00),
  INVALID_RELEASE_OF_PERSISTENT_RESERVATION: condition(SenseKey.ILLEGAL_REQUEST, 0x26, 0x04),
  INSUFFICIENT_REGISTRATION_RESOURCES: condition(SenseKey.ILLEGAL_REQUEST, 0x55, 0x04),
  LOGICAL_UNIT_NOT_SUPPORTED: condition(SenseKey.ILLEGAL_REQUEST, 0x25, 0x00),
  LUN_COMMUNICATION_FAILURE: condition(SenseKey.ABORTED_COMMAND, 0x08, 0x00),
  IO_ERROR: condition(SenseKey.ABORTED_COMMAND, 0x00, 0x06),
  TARGET_FAILURE: condition(SenseKey.HARDWARE_ERROR, 0x44, 0x00),
  READ_ERROR: condition(SenseKey.MEDIUM_ERROR, 0x11, 0x00),
  NOT_READY_CAUSE_NOT_REPORTABLE: condition(SenseKey.NOT_READY, 0x04, 0x00),
  MEDIUM_NOT_PRESENT: condition(SenseKey.NOT_READY, 0x3a, 0x00),
  SPACE_ALLOCATION_FAILED_WRITE_PROTECT: condition(SenseKey.DATA_PROTECT, 0x27, 0x07),
  TRANSPORT_DISRUPTED: condition(SenseKey.ABORTED_COMMAND, 0x29, 0x07),
  SCSI_BUS_RESET: condition(SenseKey.UNIT_ATTENTION, 0x29, 0x02),
  REGISTRATIONS_PREEMPTED: condition(SenseKey.UNIT_ATTENTION, 0x2a, 0x05),
  RESERVATIONS_PREEMPTED: condition(SenseKey.UNIT_ATTENTION, 0x2a, 0x03),
  RESERVATIONS_RELEASED: condition(SenseKey.UNIT_ATTENTION, 0x2a, 0x04),
} as const;
export type SenseName = keyof typeof Sense;

export const FIXED_SENSE_LENGTH = 18;

/**
 * Fixed-format sense, 18 bytes, exactly as QEMU's scsi_build_sense() lays it out
 * (response code 0x70, additional length 10), so replies match qemu-pr-helper byte for byte.
 */
export function encodeFixedSense(cond: SenseCondition, options: { deferred?: boolean; information?: number } = {}): Buffer {
  const sense = Buffer.alloc(FIXED_SENSE_LENGTH);
  sense[0] = options.deferred ? 0x71 : 0x70;
  if (options.information !== undefined) {
    sense[0] |= 0x80; // VALID: the INFORMATION field is meaningful
    sense.writeUInt32BE(options.information >>> 0, 3);
  }
  sense[2] = cond.key & 0x0f;
  sense[7] = FIXED_SENSE_LENGTH - 8;
  sense[12] = cond.asc;
  sense[13] = cond.ascq;
  return sense;
}

/** Descriptor-format sense: an 8-byte header with no descriptors unless INFORMATION is given. */
export function encodeDescriptorSense(cond: SenseCondition, options: { deferred?: boolean; information?: bigint } = {}): Buffer {
  const descriptors: Buffer[] = [];
  if (options.information !== undefined) {
    const info = Buffer.alloc(12);
    info[0] = 0x00; // INFORMATION descriptor
    info[1] = 0x0a;
    info[2] = 0x80; // VALID
    info.writeBigUInt64BE(options.information, 4);
    descriptors.push(info);
  }
  const body = Buffer.concat(descriptors);
  const header = Buffer.alloc(8);
  header[0] = options.deferred ? 0x73 : 0x72;
  header[1] = cond.key & 0x0f;
  header[2] = cond.asc;
  header[3] = cond.ascq;
  header[7] = body.length;
  return Buffer.concat([header, body]);
}

/** Decodes either format. Returns undefined for empty or unrecognisable sense. */
export function decodeSense(sense: Uint8Array): DecodedSense | undefined {
  if (sense.length < 1) return undefined;
  const responseCode = sense[0] & 0x7f;
  if ((responseCode === 0x70 || responseCode === 0x71) && sense.length >= 3) {
    const valid = (sense[0] & 0x80) !== 0 && sense.length >= 7;
    return {
      format: 'fixed',
      current: responseCode === 0x70,
      key: sense[2] & 0x0f,
      asc: sense.length > 12 ? sense[12] : 0,
      ascq: sense.length > 13 ? sense[13] : 0,
      information: valid ? BigInt(Buffer.from(sense).readUInt32BE(3)) : undefined,
    };
  }
  if ((responseCode === 0x72 || responseCode === 0x73) && sense.length >= 4) {
    let information: bigint | undefined;
    const end = Math.min(sense.length, 8 + (sense.length > 7 ? sense[7] : 0));
    for (let offset = 8; offset + 2 <= end; offset += 2 + sense[offset + 1]) {
      if (sense[offset] === 0x00 && offset + 12 <= end && (sense[offset + 2] & 0x80) !== 0) {
        information = Buffer.from(sense).readBigUInt64BE(offset + 4);
      }
    }
    return { format: 'descriptor', current: responseCode === 0x72, key: sense[1] & 0x0f, asc: sense[2], ascq: sense[3], information };
  }
  return undefined;
}

export function senseMatches(sense: Uint8Array, cond: SenseCondition): boolean {
  const decoded = decodeSense(sense);
  return decoded !== undefined && decoded.key === cond.key && decoded.asc === cond.asc && decoded.ascq === cond.ascq;
}

/** The name of a known condition, or a hex triple such as "05/24/00". */
export function describeSense(sense: Uint8Array): string {
  const decoded = decodeSense(sense);
  if (!decoded) return 'no sense data';
  const triple = [decoded.key, decoded.asc, decoded.ascq].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join('/');
  for (const [name, cond] of Object.entries(Sense)) {
    if (cond.key === decoded.key && cond.asc === decoded.asc && cond.ascq === decoded.ascq) return `${name.replace(/_/g, ' ')} (${triple})`;
  }
  return triple;
}

/** The outcome of one SCSI command: what the backend contract returns. */
export interface ScsiResult {
  status: number;
  /** Sense bytes; empty unless status is CHECK CONDITION. */
  sense: Buffer;
  /** Data-in bytes; empty for PR OUT and for anything but GOOD. */
  dataIn: Buffer;
}

const EMPTY = Buffer.alloc(0);

export function good(dataIn: Buffer = EMPTY): ScsiResult {
  return { status: Status.GOOD, sense: EMPTY, dataIn };
}

export function checkCondition(cond: SenseCondition): ScsiResult {
  return { status: Status.CHECK_CONDITION, sense: encodeFixedSense(cond), dataIn: EMPTY };
}

export function reservationConflict(): ScsiResult {
  return { status: Status.RESERVATION_CONFLICT, sense: EMPTY, dataIn: EMPTY };
}

export function statusOnly(status: number): ScsiResult {
  return { status, sense: EMPTY, dataIn: EMPTY };
}

/** The sense key of a CHECK CONDITION; undefined for any other status or sense that does not decode. */
export function senseKeyOf(result: ScsiResult): number | undefined {
  return result.status === Status.CHECK_CONDITION ? decodeSense(result.sense)?.key : undefined;
}

/** A UNIT ATTENTION condition (SAM-5 5.14): reported once per I_T nexus, so the command can be sent again. */
export function isUnitAttention(result: ScsiResult): boolean {
  return senseKeyOf(result) === SenseKey.UNIT_ATTENTION;
}
