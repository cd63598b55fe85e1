// SPC-4 constants for persistent reservations. Values are the on-the-wire numbers.

export const Opcode = {
  TEST_UNIT_READY: 0x00,
  INQUIRY: 0x12,
  PERSISTENT_RESERVE_IN: 0x5e,
  PERSISTENT_RESERVE_OUT: 0x5f,
} as const;

/** SCSI status byte (SAM-5). */
export const Status = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

export function statusName(status: number): string {
  for (const [name, value] of Object.entries(Status)) if (value === status) return name;
  return `0x${status.toString(16).padStart(2, '0')}`;
}

/** PERSISTENT RESERVE IN service actions (CDB byte 1, bits 4..0). */
export const PrInAction = {
  READ_KEYS: 0x00,
  READ_RESERVATION: 0x01,
  REPORT_CAPABILITIES: 0x02,
  READ_FULL_STATUS: 0x03,
} as const;
export type PrInActionCode = (typeof PrInAction)[keyof typeof PrInAction];

/** PERSISTENT RESERVE OUT service actions (CDB byte 1, bits 4..0). */
export const PrOutAction = {
  REGISTER: 0x00,
  RESERVE: 0x01,
  RELEASE: 0x02,
  CLEAR: 0x03,
  PREEMPT: 0x04,
  PREEMPT_AND_ABORT: 0x05,
  REGISTER_AND_IGNORE_EXISTING_KEY: 0x06,
  REGISTER_AND_MOVE: 0x07,
  REPLACE_LOST_RESERVATION: 0x08,
} as const;
export type PrOutActionCode = (typeof PrOutAction)[keyof typeof PrOutAction];

/** Reservation types (CDB byte 2, bits 3..0). */
export const PrType = {
  WRITE_EXCLUSIVE: 0x1,
  EXCLUSIVE_ACCESS: 0x3,
  WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 0x5,
  EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 0x6,
  WRITE_EXCLUSIVE_ALL_REGISTRANTS: 0x7,
  EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 0x8,
} as const;
export type PrTypeCode = (typeof PrType)[keyof typeof PrType];

export const ALL_PR_TYPES: readonly PrTypeCode[] = [0x1, 0x3, 0x5, 0x6, 0x7, 0x8];

export function isPrType(value: number): value is PrTypeCode {
  return (ALL_PR_TYPES as readonly number[]).includes(value);
}

/** The scope field (CDB byte 2, bits 7..4). Only LU_SCOPE is defined by SPC-4. */
export const LU_SCOPE = 0x0;

/** Human names in the style of sg_persist / mpathpersist output. */
export const PR_TYPE_NAMES: Record<PrTypeCode, string> = {
  0x1: 'Write Exclusive',
  0x3: 'Exclusive Access',
  0x5: 'Write Exclusive, registrants only',
  0x6: 'Exclusive Access, registrants only',
  0x7: 'Write Exclusive, all registrants',
  0x8: 'Exclusive Access, all registrants',
};

export function prTypeName(type: number): string {
  return isPrType(type) ? PR_TYPE_NAMES[type] : `obsolete [${type}]`;
}

/** Sense keys (SPC-4 table 51). */
export const SenseKey = {
  NO_SENSE: 0x0,
  RECOVERED_ERROR: 0x1,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  BLANK_CHECK: 0x8,
  VENDOR_SPECIFIC: 0x9,
  COPY_ABORTED: 0xa,
  ABORTED_COMMAND: 0xb,
  VOLUME_OVERFLOW: 0xd,
  MISCOMPARE: 0xe,
} as const;

/** Protocol identifiers used in TransportIDs (SPC-4 table 444). */
export const ProtocolId = {
  FC: 0x0,
  ISCSI: 0x5,
  SAS: 0x6,
} as const;

/** Largest payload the qemu-pr-helper protocol carries in either direction. */
export const PR_HELPER_DATA_SIZE = 8192;
