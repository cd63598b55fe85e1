// recvmsg and sendmsg on AF_UNIX stream sockets with SCM_RIGHTS fd passing: how a client
// hands the daemon the fd of the device a command is for. Layouts are those of Linux LP64
// (x86-64, aarch64).

import koffi from 'koffi';
import { LinuxErrno } from './errno';
import { libcHandle } from './libc-handle';
import { checkNonBlocking, SystemCallError } from './system-call';
import { MSG_CMSG_CLOEXEC, MSG_CTRUNC, MSG_DONTWAIT, MSG_NOSIGNAL, SCM_RIGHTS, SOL_SOCKET } from './unix-socket';

/** How many fds one recvmsg can carry back. A request carries exactly one; room for a few
 * more lets us see (and close) what a misbehaving client sent instead of losing it to MSG_CTRUNC. */
export const RECV_MAX_FDS = 8;
/** sendmsg may carry more fds than we accept, so tests can provoke MSG_CTRUNC. */
export const SEND_MAX_FDS = 32;

const c_recvmsg = libcHandle.func('intptr_t recvmsg(int fd, void *msg, int flags)');
const c_sendmsg = libcHandle.func('intptr_t sendmsg(int fd, void *msg, int flags)');

// struct msghdr / iovec / cmsghdr, declared so koffi computes the LP64 offsets for us.
const Iovec = koffi.struct('mpr_iovec', { iov_base: 'void *', iov_len: 'size_t' });
const MsgHdr = koffi.struct('mpr_msghdr', {
  msg_name: 'void *',
  msg_namelen: 'uint32_t',
  msg_iov: 'void *',
  msg_iovlen: 'size_t',
  msg_control: 'void *',
  msg_controllen: 'size_t',
  msg_flags: 'int',
});
const CMSG_HDR_SIZE = 16; // size_t cmsg_len; int cmsg_level; int cmsg_type
const CMSG_ALIGN = (n: number): number => (n + 7) & ~7;
const CMSG_SPACE = (n: number): number => CMSG_HDR_SIZE + CMSG_ALIGN(n);
const CMSG_LEN = (n: number): number => CMSG_HDR_SIZE + n;

// Native scratch memory for recvmsg/sendmsg. JS is single-threaded and these calls are
// synchronous, so one set is enough; the kernel writes the received bytes and control
// data here and we copy them out before returning.
const SCRATCH_DATA_SIZE = 64 * 1024;
const CONTROL_SIZE = CMSG_SPACE(RECV_MAX_FDS * 4);
const SEND_CONTROL_SIZE = CMSG_SPACE(SEND_MAX_FDS * 4);
const scratchControl: bigint = koffi.alloc('uint8_t', CONTROL_SIZE);
const scratchSendControl: bigint = koffi.alloc('uint8_t', SEND_CONTROL_SIZE);
const scratchData: bigint = koffi.alloc('uint8_t', SCRATCH_DATA_SIZE);
const controlView = Buffer.from(koffi.view(scratchControl, CONTROL_SIZE));
const sendControlView = Buffer.from(koffi.view(scratchSendControl, SEND_CONTROL_SIZE));
const dataView = Buffer.from(koffi.view(scratchData, SCRATCH_DATA_SIZE));

// One msghdr+iovec per direction, encoded once: only the lengths (and, for recvmsg, the
// fields the kernel overwrites) change per call, and they are patched through a Buffer
// view, which costs far less than koffi.encode/decode of the whole struct every time.
const MSGHDR_SIZE = koffi.sizeof(MsgHdr);
const IOVEC_SIZE = koffi.sizeof(Iovec);
const MSG_CONTROLLEN_OFFSET = koffi.offsetof(MsgHdr, 'msg_controllen');
const MSG_FLAGS_OFFSET = koffi.offsetof(MsgHdr, 'msg_flags');
const IOV_LEN_OFFSET = koffi.offsetof(Iovec, 'iov_len');

interface PreparedMessage {
  readonly msg: bigint;
  readonly msgView: Buffer;
  readonly iovView: Buffer;
}

function prepareMessage(control: bigint): PreparedMessage {
  const msg: bigint = koffi.alloc('uint8_t', MSGHDR_SIZE);
  const iov: bigint = koffi.alloc('uint8_t', IOVEC_SIZE);
  koffi.encode(iov, Iovec, { iov_base: scratchData, iov_len: 0 });
  koffi.encode(msg, MsgHdr, { msg_name: null, msg_namelen: 0, msg_iov: iov, msg_iovlen: 1, msg_control: control, msg_controllen: 0, msg_flags: 0 });
  return { msg, msgView: Buffer.from(koffi.view(msg, MSGHDR_SIZE)), iovView: Buffer.from(koffi.view(iov, IOVEC_SIZE)) };
}

const recvMessage = prepareMessage(scratchControl);
// The kernel ignores msg_control when msg_controllen is 0, so sends without fds keep the pointer.
const sendMessage = prepareMessage(scratchSendControl);

export interface ReceivedMessage {
  /** The bytes read; empty with no fds means end of stream. */
  readonly bytes: Buffer;
  /** Every fd that arrived with these bytes. The caller owns them and must close them. */
  readonly fds: number[];
  /** MSG_CTRUNC: more fds were sent than fit; the kernel closed the ones that did not fit. */
  readonly controlTruncated: boolean;
}

/**
 * recvmsg with one SCM_RIGHTS control buffer (room for RECV_MAX_FDS fds) and MSG_CMSG_CLOEXEC.
 * Returns null when nothing is available (EAGAIN).
 */
export function recvmsg(fd: number, maxBytes = SCRATCH_DATA_SIZE): ReceivedMessage | null {
  const length = Math.max(1, Math.min(maxBytes, SCRATCH_DATA_SIZE));
  const { msg, msgView, iovView } = recvMessage;
  controlView.fill(0);
  iovView.writeBigUInt64LE(BigInt(length), IOV_LEN_OFFSET);
  msgView.writeBigUInt64LE(BigInt(CONTROL_SIZE), MSG_CONTROLLEN_OFFSET);
  msgView.writeInt32LE(0, MSG_FLAGS_OFFSET);
  const received = checkNonBlocking('recvmsg', () => Number(c_recvmsg(fd, msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT)));
  if (received === null) return null;
  const controlLength = Math.min(Number(msgView.readBigUInt64LE(MSG_CONTROLLEN_OFFSET)), CONTROL_SIZE);
  const flags = msgView.readInt32LE(MSG_FLAGS_OFFSET);
  const fds = controlLength >= CMSG_HDR_SIZE ? parseRights(controlView.subarray(0, controlLength)) : [];
  return {
    bytes: Buffer.from(dataView.subarray(0, received)),
    fds,
    controlTruncated: (flags & MSG_CTRUNC) !== 0,
  };
}

/** Walks the cmsg chain (CMSG_FIRSTHDR/CMSG_NXTHDR) collecting every SCM_RIGHTS fd. */
function parseRights(control: Buffer): number[] {
  const fds: number[] = [];
  let offset = 0;
  while (offset + CMSG_HDR_SIZE <= control.length) {
    const cmsgLen = Number(control.readBigUInt64LE(offset));
    if (cmsgLen < CMSG_HDR_SIZE || offset + cmsgLen > control.length) break;
    const level = control.readInt32LE(offset + 8);
    const type = control.readInt32LE(offset + 12);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let at = offset + CMSG_HDR_SIZE; at + 4 <= offset + cmsgLen; at += 4) fds.push(control.readInt32LE(at));
    }
    offset += CMSG_ALIGN(cmsgLen);
  }
  return fds;
}

/** Writes one SCM_RIGHTS control message carrying `fds`; returns its length (msg_controllen). */
function writeRights(fds: readonly number[]): number {
  if (fds.length === 0) return 0;
  if (fds.length > SEND_MAX_FDS) throw new SystemCallError('sendmsg', LinuxErrno.EINVAL, `too many fds (${fds.length})`);
  const controlLength = CMSG_SPACE(fds.length * 4);
  sendControlView.fill(0, 0, controlLength);
  sendControlView.writeBigUInt64LE(BigInt(CMSG_LEN(fds.length * 4)), 0);
  sendControlView.writeInt32LE(SOL_SOCKET, 8);
  sendControlView.writeInt32LE(SCM_RIGHTS, 12);
  fds.forEach((sent, i) => sendControlView.writeInt32LE(sent, CMSG_HDR_SIZE + 4 * i));
  return controlLength;
}

/**
 * sendmsg of `bytes` with optional SCM_RIGHTS fds, MSG_NOSIGNAL (a vanished peer is EPIPE,
 * not SIGPIPE). Returns the number of bytes sent (possibly partial), or null on EAGAIN.
 * When fds are given and any byte was sent, the fds were sent too.
 */
export function sendmsg(fd: number, bytes: Uint8Array, fds: readonly number[] = []): number | null {
  const length = Math.min(bytes.length, SCRATCH_DATA_SIZE);
  if (length === 0 && fds.length === 0) return 0;
  dataView.set(bytes.subarray(0, length), 0);
  const controlLength = writeRights(fds);
  const { msg, msgView, iovView } = sendMessage;
  iovView.writeBigUInt64LE(BigInt(length), IOV_LEN_OFFSET);
  msgView.writeBigUInt64LE(BigInt(controlLength), MSG_CONTROLLEN_OFFSET);
  return checkNonBlocking('sendmsg', () => Number(c_sendmsg(fd, msg, MSG_NOSIGNAL | MSG_DONTWAIT)));
}
