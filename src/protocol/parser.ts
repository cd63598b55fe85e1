// Incremental, socket-free parsers for the qemu-pr-helper protocol, in the style of
// pg-protocol's parser: feed chunks as they come off the socket, get whole messages back.
//
// RequestParser (server side) follows qemu-pr-helper's prh_read_request():
//   features word (BE32, must be 0)
//   then per request: 16 CDB bytes, exactly one fd via SCM_RIGHTS received while the CDB
//   is read, cdb[0] in {0x5E, 0x5F}, transfer length BE16(cdb[7..8]) <= 8192, and for
//   PR OUT exactly that many parameter bytes.
// Any violation ends the conversation: the parser hands back every fd it holds, inside the
// ProtocolError, and the server closes the connection without a reply.
//
// fd attribution. The kernel hands over an SCM_RIGHTS fd with the recvmsg that first
// touches the sendmsg that carried it, and stops that recvmsg right after that message's
// bytes, so the fd-carrying message is always the last one a chunk touches. The parser
// therefore gives a chunk's fds to the LAST request whose CDB bytes appear in the chunk.
// fds in a chunk that holds no CDB byte (only the features word, or only a parameter
// list) are a violation ('unexpected-fd'): QEMU attaches the fd to the CDB. The server
// reads at most `bytesWanted` bytes at a time, as qemu-pr-helper does, so in practice a
// chunk never spans two protocol items and attribution is exact.

import {
  InboundChunk,
  PR_HELPER_CDB_SIZE,
  PR_HELPER_DATA_SIZE,
  PR_HELPER_FEATURES_SIZE,
  PR_HELPER_REPLY_HEADER_SIZE,
  PR_HELPER_SENSE_SIZE,
  PrHelperReply,
  PrHelperRequest,
  ProtocolError,
  ProtocolViolation,
  isPrIn,
  isPrOut,
  transferLength,
} from './messages';

/**
 * What both parsers hand back: the peer's features word, one whole `Message`, or the
 * violation that ends the conversation.
 */
type ParserEvent<Message> =
  | { readonly type: 'features'; readonly features: number }
  | Message
  | { readonly type: 'violation'; readonly error: ProtocolError };

export type RequestParserEvent = ParserEvent<{ readonly type: 'request'; readonly request: PrHelperRequest }>;

type RequestState = 'features' | 'cdb' | 'parameters' | 'failed';

export class RequestParser {
  private state: RequestState = 'features';
  private readonly features = Buffer.alloc(PR_HELPER_FEATURES_SIZE);
  private readonly cdb = Buffer.alloc(PR_HELPER_CDB_SIZE);
  private parameters = Buffer.alloc(0);
  /** Bytes of the current item (features word, CDB or parameter list) received so far. */
  private filled = 0;
  /** fds received for the request being read. */
  private heldFds: number[] = [];

  /**
   * How many bytes complete the item being read. A reader that never asks the socket for
   * more than this gets fds attributed exactly as qemu-pr-helper attributes them.
   */
  get bytesWanted(): number {
    switch (this.state) {
      case 'features':
        return PR_HELPER_FEATURES_SIZE - this.filled;
      case 'cdb':
        return PR_HELPER_CDB_SIZE - this.filled;
      case 'parameters':
        return this.parameters.length - this.filled;
      case 'failed':
        return 0;
    }
  }

  /** True between requests (or before the handshake): a disconnect here loses nothing. */
  get idle(): boolean {
    return (this.state === 'cdb' || this.state === 'features') && this.filled === 0 && this.heldFds.length === 0;
  }

  get failed(): boolean {
    return this.state === 'failed';
  }

  /**
   * Consumes one chunk. fds in the chunk pass to the parser: they come back either inside
   * a request, inside a violation's error, or from releaseFds().
   */
  push(chunk: InboundChunk): RequestParserEvent[] {
    const events: RequestParserEvent[] = [];
    let unattributed = [...chunk.fds];
    if (this.state === 'failed') {
      return [this.violation('after-violation', 'data after a protocol violation', unattributed)];
    }
    if (chunk.controlTruncated) {
      return [this.violation('control-truncated', 'more fds than fit the control buffer (MSG_CTRUNC)', unattributed)];
    }
    const bytes = chunk.bytes;
    let offset = 0;
    while (offset < bytes.length) {
      // fds in a chunk that ends before the next CDB can only belong to the features word or
      // a parameter list: refuse them before anything in the chunk is emitted.
      if (unattributed.length > 0 && this.state !== 'cdb' && bytes.length - offset <= this.bytesWanted) {
        const where = this.state === 'parameters' ? 'only parameter-list bytes' : 'no CDB bytes';
        return [...events, this.violation('unexpected-fd', `fd received with ${where}`, unattributed)];
      }
      if (this.state === 'features') {
        const take = Math.min(PR_HELPER_FEATURES_SIZE - this.filled, bytes.length - offset);
        bytes.copy(this.features, this.filled, offset, offset + take);
        this.filled += take;
        offset += take;
        if (this.filled < PR_HELPER_FEATURES_SIZE) continue;
        const features = this.features.readUInt32BE(0);
        if (features !== 0) {
          return [...events, this.violation('unsupported-features', `client requested features 0x${features.toString(16)}`, unattributed)];
        }
        events.push({ type: 'features', features });
        this.state = 'cdb';
        this.filled = 0;
      } else if (this.state === 'cdb') {
        const take = Math.min(PR_HELPER_CDB_SIZE - this.filled, bytes.length - offset);
        bytes.copy(this.cdb, this.filled, offset, offset + take);
        this.filled += take;
        offset += take;
        if (this.filled < PR_HELPER_CDB_SIZE) continue;
        if (unattributed.length > 0 && !this.chunkReachesNextCdb(bytes.length - offset)) {
          this.heldFds.push(...unattributed);
          unattributed = [];
        }
        const problem = this.validateCdb();
        if (problem) return [...events, this.violation(problem.violation, problem.message, unattributed)];
        const length = transferLength(this.cdb);
        if (isPrOut(this.cdb) && length > 0) {
          this.parameters = Buffer.alloc(length);
          this.state = 'parameters';
          this.filled = 0;
        } else {
          events.push(this.emitRequest(Buffer.alloc(0)));
        }
      } else {
        const take = Math.min(this.parameters.length - this.filled, bytes.length - offset);
        bytes.copy(this.parameters, this.filled, offset, offset + take);
        this.filled += take;
        offset += take;
        if (this.filled === this.parameters.length) events.push(this.emitRequest(this.parameters));
      }
    }
    if (unattributed.length > 0) {
      if (this.state === 'cdb' && this.filled > 0) {
        this.heldFds.push(...unattributed);
        if (this.heldFds.length > 1) return [...events, this.violation('too-many-fds', `${this.heldFds.length} fds for one request`, [])];
      } else {
        const where = this.state === 'parameters' ? 'only parameter-list bytes' : 'no CDB bytes';
        return [...events, this.violation('unexpected-fd', `fd received with ${where}`, unattributed)];
      }
    }
    return events;
  }

  /** Hands back every fd held for an unfinished request (for closing) and resets the parser to failed. */
  releaseFds(): number[] {
    const fds = this.heldFds;
    this.heldFds = [];
    this.state = 'failed';
    return fds;
  }

  /**
   * Whether the rest of the chunk (after a just-completed CDB) goes past this request's
   * parameter list into another CDB, in which case the chunk's fds belong to that later one.
   */
  private chunkReachesNextCdb(remaining: number): boolean {
    const parameterBytes = isPrOut(this.cdb) ? transferLength(this.cdb) : 0;
    return remaining > parameterBytes;
  }

  private validateCdb(): { violation: ProtocolViolation; message: string } | undefined {
    // Same order as prh_read_request: too many fds (found while reading), fd, opcode, length.
    if (this.heldFds.length > 1) return { violation: 'too-many-fds', message: `${this.heldFds.length} fds for one request` };
    if (this.heldFds.length === 0) return { violation: 'missing-fd', message: 'no file descriptor in request' };
    if (!isPrIn(this.cdb) && !isPrOut(this.cdb)) {
      return { violation: 'invalid-opcode', message: `invalid CDB opcode 0x${this.cdb[0].toString(16).padStart(2, '0')}` };
    }
    const length = transferLength(this.cdb);
    if (length > PR_HELPER_DATA_SIZE) return { violation: 'transfer-too-long', message: `transfer length ${length} exceeds ${PR_HELPER_DATA_SIZE}` };
    return undefined;
  }

  private emitRequest(dataOut: Buffer): RequestParserEvent {
    const request: PrHelperRequest = { cdb: Buffer.from(this.cdb), fd: this.heldFds[0], dataOut };
    this.heldFds = [];
    this.parameters = Buffer.alloc(0);
    this.state = 'cdb';
    this.filled = 0;
    return { type: 'request', request };
  }

  private violation(violation: ProtocolViolation, message: string, extraFds: number[]): RequestParserEvent {
    const fds = [...this.heldFds, ...extraFds];
    this.heldFds = [];
    this.state = 'failed';
    return { type: 'violation', error: new ProtocolError(violation, message, fds) };
  }
}

export type ReplyParserEvent = ParserEvent<{ readonly type: 'reply'; readonly reply: PrHelperReply }>;

type ReplyState = 'features' | 'header' | 'data' | 'failed';

/**
 * Client side: the server's features word, then replies (104-byte header, sz data bytes).
 * Checks only what the stream itself says (sz within 0..8192); whether sz fits the request
 * (QEMU's asserts) is checked by the client, which knows the request.
 */
export class ReplyParser {
  private state: ReplyState = 'features';
  private readonly header = Buffer.alloc(PR_HELPER_REPLY_HEADER_SIZE);
  private data = Buffer.alloc(0);
  private filled = 0;

  get idle(): boolean {
    return this.state === 'header' && this.filled === 0;
  }

  push(bytes: Buffer): ReplyParserEvent[] {
    const events: ReplyParserEvent[] = [];
    if (this.state === 'failed') return [this.violation('after-violation', 'data after a protocol violation')];
    let offset = 0;
    while (offset < bytes.length) {
      if (this.state === 'features' || this.state === 'header') {
        const size = this.state === 'features' ? PR_HELPER_FEATURES_SIZE : PR_HELPER_REPLY_HEADER_SIZE;
        const take = Math.min(size - this.filled, bytes.length - offset);
        bytes.copy(this.header, this.filled, offset, offset + take);
        this.filled += take;
        offset += take;
        if (this.filled < size) continue;
        this.filled = 0;
        if (this.state === 'features') {
          const features = this.header.readUInt32BE(0);
          if (features !== 0) return [...events, this.violation('unsupported-server-features', `server offered features 0x${features.toString(16)}`)];
          events.push({ type: 'features', features });
          this.state = 'header';
          continue;
        }
        const sz = this.header.readInt32BE(4);
        if (sz < 0 || sz > PR_HELPER_DATA_SIZE) return [...events, this.violation('invalid-reply', `reply size ${sz} outside 0..${PR_HELPER_DATA_SIZE}`)];
        this.data = Buffer.alloc(sz);
        if (sz === 0) events.push(this.emitReply());
        else this.state = 'data';
      } else {
        const take = Math.min(this.data.length - this.filled, bytes.length - offset);
        bytes.copy(this.data, this.filled, offset, offset + take);
        this.filled += take;
        offset += take;
        if (this.filled === this.data.length) events.push(this.emitReply());
      }
    }
    return events;
  }

  private emitReply(): ReplyParserEvent {
    const reply: PrHelperReply = {
      status: this.header.readInt32BE(0),
      sense: Buffer.from(this.header.subarray(8, 8 + PR_HELPER_SENSE_SIZE)),
      data: this.data,
    };
    this.data = Buffer.alloc(0);
    this.filled = 0;
    this.state = 'header';
    return { type: 'reply', reply };
  }

  private violation(violation: ProtocolViolation, message: string): ReplyParserEvent {
    this.state = 'failed';
    return { type: 'violation', error: new ProtocolError(violation, message) };
  }
}
