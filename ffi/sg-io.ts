// SG_IO (<scsi/sg.h>, interface 'S', sg_io_hdr v3): one SCSI command on an open fd of an
// sd, sg or dm-multipath device, run on the libuv threadpool.
//
// Threadpool budget: each SG_IO in flight occupies one libuv pool thread (4 by default,
// UV_THREADPOOL_SIZE, shared with fs, dns and crypto) for as long as the device takes. The
// kernel bounds that by `timeoutMs` plus SCSI error handling (which can add minutes on a
// dead transport), and nothing can cancel it from userspace. Callers must therefore
// serialize per device (src/backends/sg/device-queue.ts) so a hung device holds at most one
// thread, and a daemon expecting several dead devices at once should raise
// UV_THREADPOOL_SIZE before the pool is first used.

import koffi from 'koffi';
import { ioctlAsync, NativeMemory } from './ioctl';

export const SG_IO = 0x2285;
const SG_INTERFACE_ID = 'S'.charCodeAt(0);

export const SgDxfer = {
  NONE: -1,
  TO_DEV: -2,
  FROM_DEV: -3,
} as const;

export type SgDirection = 'none' | 'to-dev' | 'from-dev';

/** struct sg_io_hdr for LP64 Linux; koffi computes the offsets (checked against gcc in test/unit/ffi-layout.test.ts). */
export const SgIoHdr = koffi.struct('mpr_sg_io_hdr', {
  interface_id: 'int',
  dxfer_direction: 'int',
  cmd_len: 'uint8_t',
  mx_sb_len: 'uint8_t',
  iovec_count: 'uint16_t',
  dxfer_len: 'uint32_t',
  dxferp: 'void *',
  cmdp: 'void *',
  sbp: 'void *',
  timeout: 'uint32_t',
  flags: 'uint32_t',
  pack_id: 'int',
  usr_ptr: 'void *',
  status: 'uint8_t',
  masked_status: 'uint8_t',
  msg_status: 'uint8_t',
  sb_len_wr: 'uint8_t',
  host_status: 'uint16_t',
  driver_status: 'uint16_t',
  resid: 'int',
  duration: 'uint32_t',
  info: 'uint32_t',
});

/** A sane SCSI command timeout. qemu-pr-helper passes 1 ms, which makes every slow target time out. */
export const DEFAULT_SG_TIMEOUT_MS = 30_000;
export const MAX_SENSE_LENGTH = 252; // sb_len_wr is one byte; SPC caps sense at 252 bytes
const MAX_CDB_LENGTH = 16; // what this project sends; SG_IO itself allows up to 252 (VARIABLE LENGTH CDBs)
export const MAX_SG_TRANSFER = 1 << 20;

export interface SgIoRequest {
  cdb: Uint8Array;
  direction: SgDirection;
  /** Data-out bytes (to-dev). */
  data?: Uint8Array;
  /** Data-in buffer size (from-dev); defaults to 0. */
  dxferLength?: number;
  timeoutMs?: number;
  maxSenseLength?: number;
}

export interface SgIoResult {
  /** Set when the ioctl itself failed; every other field is then zero or empty. */
  errno?: number;
  /** The full SCSI status byte (not masked_status). */
  status: number;
  hostStatus: number;
  driverStatus: number;
  /** The sense bytes the device wrote (sb_len_wr of them). */
  sense: Buffer;
  /** The data-in bytes actually transferred: dxferLength - resid, clamped to the buffer. */
  dataIn: Buffer;
  resid: number;
  /** Milliseconds, as measured by the kernel. */
  duration: number;
}

function validate(request: SgIoRequest): { dataLength: number; senseLength: number; timeoutMs: number } {
  const { cdb, direction } = request;
  if (cdb.length < 6 || cdb.length > MAX_CDB_LENGTH) throw new RangeError(`SG_IO CDB length ${cdb.length} outside 6..${MAX_CDB_LENGTH}`);
  const senseLength = request.maxSenseLength ?? 96;
  if (!Number.isInteger(senseLength) || senseLength < 0 || senseLength > MAX_SENSE_LENGTH) throw new RangeError(`maxSenseLength ${senseLength} outside 0..${MAX_SENSE_LENGTH}`);
  const timeoutMs = request.timeoutMs ?? DEFAULT_SG_TIMEOUT_MS;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0 || timeoutMs > 0xffffffff) throw new RangeError(`timeoutMs ${timeoutMs} must be a positive 32-bit integer`);
  let dataLength: number;
  if (direction === 'to-dev') {
    if (request.dxferLength !== undefined) throw new RangeError('dxferLength is for from-dev; to-dev sends data.length bytes');
    dataLength = request.data?.length ?? 0;
  } else if (direction === 'from-dev') {
    if (request.data !== undefined) throw new RangeError('data is for to-dev');
    dataLength = request.dxferLength ?? 0;
  } else if (direction === 'none') {
    if (request.data?.length || request.dxferLength) throw new RangeError('direction none carries no data');
    dataLength = 0;
  } else {
    throw new RangeError(`unknown SG_IO direction ${String(direction)}`);
  }
  if (!Number.isInteger(dataLength) || dataLength < 0 || dataLength > MAX_SG_TRANSFER) throw new RangeError(`SG_IO transfer length ${dataLength} outside 0..${MAX_SG_TRANSFER}`);
  return { dataLength, senseLength, timeoutMs };
}

const DIRECTION_CODE: Record<SgDirection, number> = { none: SgDxfer.NONE, 'to-dev': SgDxfer.TO_DEV, 'from-dev': SgDxfer.FROM_DEV };

/**
 * Sends one command with SG_IO on `fd` without blocking the event loop. Resolves with the
 * raw outcome (errno, status bytes, sense, data); it never interprets them. Rejects only for
 * a malformed request (RangeError) or when koffi cannot queue the call.
 */
export async function sgIo(fd: number, request: SgIoRequest): Promise<SgIoResult> {
  const { dataLength, senseLength, timeoutMs } = validate(request);
  const hdrSize = koffi.sizeof(SgIoHdr);
  // One block for header, CDB, sense and data: one allocation, one free.
  const cdbOffset = hdrSize;
  const senseOffset = cdbOffset + MAX_CDB_LENGTH;
  const dataOffset = senseOffset + Math.max(senseLength, 1);
  const memory = new NativeMemory(dataOffset + Math.max(dataLength, 1));
  try {
    memory.bytes.set(request.cdb, cdbOffset);
    if (request.direction === 'to-dev' && request.data) memory.bytes.set(request.data, dataOffset);
    koffi.encode(memory.address, SgIoHdr, {
      interface_id: SG_INTERFACE_ID,
      dxfer_direction: DIRECTION_CODE[request.direction],
      cmd_len: request.cdb.length,
      mx_sb_len: senseLength,
      iovec_count: 0,
      dxfer_len: dataLength,
      dxferp: dataLength > 0 ? memory.at(dataOffset) : 0n,
      cmdp: memory.at(cdbOffset),
      sbp: memory.at(senseOffset),
      timeout: timeoutMs,
      flags: 0,
      pack_id: 0,
      usr_ptr: 0n,
      status: 0,
      masked_status: 0,
      msg_status: 0,
      sb_len_wr: 0,
      host_status: 0,
      driver_status: 0,
      resid: 0,
      duration: 0,
      info: 0,
    });
    const outcome = await ioctlAsync(fd, SG_IO, memory.address);
    if (outcome.ret < 0) {
      return { errno: outcome.errno, status: 0, hostStatus: 0, driverStatus: 0, sense: Buffer.alloc(0), dataIn: Buffer.alloc(0), resid: 0, duration: 0 };
    }
    const hdr = koffi.decode(memory.address, SgIoHdr) as {
      status: number;
      sb_len_wr: number;
      host_status: number;
      driver_status: number;
      resid: number;
      duration: number;
    };
    const senseWritten = Math.min(hdr.sb_len_wr, senseLength);
    const transferred = request.direction === 'from-dev' ? Math.max(0, Math.min(dataLength, dataLength - hdr.resid)) : 0;
    // Copy out before free(): the views point into native memory.
    return {
      status: hdr.status,
      hostStatus: hdr.host_status,
      driverStatus: hdr.driver_status,
      sense: Buffer.from(memory.bytes.subarray(senseOffset, senseOffset + senseWritten)),
      dataIn: Buffer.from(memory.bytes.subarray(dataOffset, dataOffset + transferred)),
      resid: hdr.resid,
      duration: hdr.duration,
    };
  } finally {
    memory.free();
  }
}
