// libmpathpersist's <mpath_persist.h>: its constants and its struct layouts for the
// LIBMPATHPERSIST_2.1.0 ABI (0.9.4, unchanged up to 0.14.x), declared through koffi so the
// offsets come from one place (checked against gcc in test/unit/libmpathpersist-layout.test.ts).
// Declarations only: nothing here loads the library.

import koffi, { type TypeObject } from 'koffi';

// ---------------------------------------------------------------------------------------
// Constants of <mpath_persist.h>

export const MPATH_MAX_PARAM_LEN = 8192;
export const MPATH_MX_TIDS = 32;
export const MPATH_MX_TID_LEN = 256;

/** Return codes of mpath_persistent_reserve_{in,out}. */
export const MPATH_PR = {
  SKIP: -1,
  SUCCESS: 0,
  SYNTAX_ERROR: 1,
  SENSE_NOT_READY: 2,
  SENSE_MEDIUM_ERROR: 3,
  SENSE_HARDWARE_ERROR: 4,
  ILLEGAL_REQ: 5,
  SENSE_UNIT_ATTENTION: 6,
  SENSE_INVALID_OP: 7,
  SENSE_ABORTED_COMMAND: 8,
  NO_SENSE: 9,
  SENSE_MALFORMED: 10,
  RESERV_CONFLICT: 11,
  FILE_ERROR: 12,
  DMMP_ERROR: 13,
  THREAD_ERROR: 14,
  OTHER: 15,
  /** Newer than 0.9.4 (0.12.0), documented as internal only. */
  RETRYABLE_ERROR: 16,
  /** Newer than 0.9.4 (0.12.0), documented as internal only. */
  SUCCESS_UNREGISTER: 17,
} as const;

export function mpathPrName(rc: number): string {
  for (const [name, value] of Object.entries(MPATH_PR)) if (value === rc) return `MPATH_PR_${name}`;
  return `MPATH_PR_? (${rc})`;
}

export const MPATH_PRIN = { READ_KEYS: 0, READ_RESERVATION: 1, REPORT_CAPABILITIES: 2, READ_FULL_STATUS: 3 } as const;
export const MPATH_PROUT = {
  REGISTER: 0,
  RESERVE: 1,
  RELEASE: 2,
  CLEAR: 3,
  PREEMPT: 4,
  PREEMPT_AND_ABORT: 5,
  REGISTER_AND_IGNORE: 6,
  /** Declared by the header, rejected by the library with MPATH_PR_OTHER. */
  REGISTER_AND_MOVE: 7,
} as const;

export const MPATH_F_APTPL_MASK = 0x01;
export const MPATH_F_ALL_TG_PT_MASK = 0x04;
export const MPATH_F_SPEC_I_PT_MASK = 0x08;

export const MPATH_PROTOCOL_ID = { FC: 0x00, ISCSI: 0x05, SAS: 0x06 } as const;
export const MPATH_WWUI_DEVICE_NAME = 0x00;
export const MPATH_WWUI_PORT_IDENTIFIER = 0x40;

/** READ FULL STATUS answers with more descriptors than this overflow the library's buffer. */
export const RFSTAT_MAX_SAFE_DESCRIPTORS = 30;

// ---------------------------------------------------------------------------------------
// Struct layouts (x86-64 / LP64). Flexible array members cannot be declared in koffi without
// inflating sizeof, so they are left out; their offsets equal the sizeof of the enclosing
// struct, which the layout test checks against the C compiler. The first member carries an
// explicit 8-byte alignment where C gets it from the (omitted) pointer array.

export const PrinReadDescr = koffi.struct('mpath_prin_readdescr', {
  prgeneration: 'uint32_t',
  additional_length: 'uint32_t',
  key_list: koffi.array('uint8_t', MPATH_MAX_PARAM_LEN),
});

export const PrinResvDescr = koffi.struct('mpath_prin_resvdescr', {
  prgeneration: 'uint32_t',
  additional_length: 'uint32_t',
  key: koffi.array('uint8_t', 8),
  _obsolete: 'uint32_t',
  _reserved: 'uint8_t',
  scope_type: 'uint8_t',
  _obsolete1: 'uint16_t',
});

export const PrinCapDescr = koffi.struct('mpath_prin_capdescr', {
  length: 'uint16_t',
  flags: koffi.array('uint8_t', 2),
  pr_type_mask: 'uint16_t',
  _reserved: 'uint16_t',
});

/** The anonymous union inside struct transportid; named here so offsetof can reach it. */
export const TransportIdName = koffi.union('mpath_transportid_name', {
  n_port_name: koffi.array('uint8_t', 8),
  sas_address: koffi.array('uint8_t', 8),
  iscsi_name: koffi.array('uint8_t', MPATH_MX_TID_LEN),
});

export const TransportId = koffi.struct('mpath_transportid', {
  format_code: 'uint8_t',
  protocol_id: 'uint8_t',
  name: TransportIdName,
});

export const PrinFullDescr = koffi.struct('mpath_prin_fulldescr', {
  key: koffi.array('uint8_t', 8),
  flag: 'uint8_t',
  scope_type: 'uint8_t',
  rtpi: 'uint16_t',
  trnptid: TransportId,
});

export const PrintFullDescrList = koffi.struct('mpath_print_fulldescr_list', {
  prgeneration: [8, 'uint32_t'],
  number_of_descriptor: 'uint32_t',
  private_buffer: koffi.array('uint8_t', MPATH_MAX_PARAM_LEN),
  // struct prin_fulldescr *descriptors[]; at sizeof(print_fulldescr_list)
});

export const PrinResp = koffi.union('mpath_prin_resp', {
  prin_readkeys: PrinReadDescr,
  prin_readresv: PrinResvDescr,
  prin_readcap: PrinCapDescr,
  prin_readfd: PrintFullDescrList,
});

export const ProutParamDescriptor = koffi.struct('mpath_prout_param_descriptor', {
  key: [8, koffi.array('uint8_t', 8)],
  sa_key: koffi.array('uint8_t', 8),
  _obsolete: 'uint32_t',
  sa_flags: 'uint8_t',
  _reserved: 'uint8_t',
  _obsolete1: 'uint16_t',
  private_buffer: koffi.array('uint8_t', MPATH_MAX_PARAM_LEN),
  num_transportid: 'uint32_t',
  // struct transportid *trnptid_list[]; at sizeof(prout_param_descriptor)
});

export const POINTER_SIZE = 8;

/** Offset of print_fulldescr_list.descriptors[] (a flexible array member). */
export const FULLDESCR_DESCRIPTORS_OFFSET = koffi.sizeof(PrintFullDescrList);
/** Offset of prout_param_descriptor.trnptid_list[] (a flexible array member). */
export const PROUT_TRNPTID_LIST_OFFSET = koffi.sizeof(ProutParamDescriptor);

/** What mpath_alloc_prin_response(RFSTAT) allocates: the list plus 32 descriptor pointers. */
export const RFSTAT_LIBRARY_ALLOCATION = FULLDESCR_DESCRIPTORS_OFFSET + POINTER_SIZE * MPATH_MX_TIDS;

/**
 * What we allocate for READ FULL STATUS. The unpacking loop consumes at least 24 input bytes
 * per descriptor and reads at most 8192, so at most 342 iterations, each writing 270 bytes at
 * 8+270*i and a pointer at 8200+8*i. 96 KiB holds every possible write.
 */
export const RFSTAT_RESPONSE_BYTES = 96 * 1024;
/** READ KEYS / READ RESERVATION / REPORT CAPABILITIES need only sizeof(struct prin_resp). */
export const PRIN_RESPONSE_BYTES = koffi.sizeof(PrinResp);

/** The offset of `member` in a koffi struct or union. */
export function memberOffset(type: TypeObject, member: string): number {
  return koffi.offsetof(type, member);
}
