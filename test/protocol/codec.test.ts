// The qemu-pr-helper codec against hand-written wire bytes (fixtures/protocol/qemu-wire.json),
// with every message split at every byte offset, and every way a client can break the protocol.

import { expect } from 'chai';
import fc from 'fast-check';
import * as fs from 'fs';
import * as path from 'path';
import { InboundChunk, PR_HELPER_DATA_SIZE, PrHelperReply, PrHelperRequest, ProtocolError } from '../../src/protocol/messages';
import { ReplyParser, ReplyParserEvent, RequestParser, RequestParserEvent } from '../../src/protocol/parser';
import { replyDataLength, serializeFeatures, serializeReply, serializeRequest } from '../../src/protocol/serializer';

interface WireRequest {
  name: string;
  hex: string;
  dataOutHex: string;
}
interface WireReply {
  name: string;
  requestCdbHex: string;
  status: number;
  senseHex: string;
  dataHex: string;
  hex: string;
}
const wire = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../fixtures/protocol/qemu-wire.json'), 'utf8')) as {
  serverFeatures: { hex: string };
  clientFeatures: { hex: string };
  requests: WireRequest[];
  replies: WireReply[];
};

const hex = (value: string): Buffer => Buffer.from(value, 'hex');
const FEATURES = hex(wire.clientFeatures.hex);
/** A fake fd number: the request parser never touches fds, it only hands them on. */
const FD = 1000;

function cdbOf(options: { opcode?: number; action?: number; length?: number } = {}): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = options.opcode ?? 0x5e;
  cdb[1] = options.action ?? 0;
  cdb.writeUInt16BE(options.length ?? 0, 7);
  return cdb;
}

function feed(parser: RequestParser, chunks: InboundChunk[]): RequestParserEvent[] {
  return chunks.flatMap((chunk) => parser.push(chunk));
}

function requestsOf(events: RequestParserEvent[]): PrHelperRequest[] {
  return events.flatMap((event) => (event.type === 'request' ? [event.request] : []));
}

function violationOf(events: RequestParserEvent[] | ReplyParserEvent[]): ProtocolError {
  const violations = (events as Array<RequestParserEvent | ReplyParserEvent>).flatMap((event) => (event.type === 'violation' ? [event.error] : []));
  expect(violations, 'exactly one violation').to.have.length(1);
  return violations[0];
}

/** Splits `bytes` at `cuts` and puts `fds` on the chunk holding byte `fdAt`. */
function split(bytes: Buffer, cuts: number[], fdAt: number, fds: number[] = [FD]): InboundChunk[] {
  const edges = [0, ...cuts.filter((cut) => cut > 0 && cut < bytes.length), bytes.length];
  const chunks: InboundChunk[] = [];
  for (let i = 0; i + 1 < edges.length; i++) {
    const holdsFd = fdAt >= edges[i] && fdAt < edges[i + 1];
    chunks.push({ bytes: bytes.subarray(edges[i], edges[i + 1]), fds: holdsFd ? fds : [] });
  }
  return chunks;
}

/**
 * What recvmsg on an AF_UNIX stream socket returns for a sequence of sendmsg calls and
 * read sizes: data from several sends may be glued, but a read takes the fds of the first
 * send it touches that carries fds and stops right after that send's bytes.
 */
function kernelDelivery(sends: InboundChunk[], readSizes: number[]): InboundChunk[] {
  const queue = sends.map((send) => ({ bytes: send.bytes, fds: [...send.fds] }));
  const chunks: InboundChunk[] = [];
  let sizeIndex = 0;
  while (queue.length > 0) {
    let room = readSizes[sizeIndex++ % readSizes.length];
    const parts: Buffer[] = [];
    let fds: number[] = [];
    while (room > 0 && queue.length > 0) {
      const head = queue[0];
      const take = Math.min(room, head.bytes.length);
      parts.push(head.bytes.subarray(0, take));
      head.bytes = head.bytes.subarray(take);
      room -= take;
      if (head.fds.length > 0) {
        fds = head.fds;
        head.fds = [];
      }
      if (head.bytes.length === 0) queue.shift();
      if (fds.length > 0) break;
    }
    chunks.push({ bytes: Buffer.concat(parts), fds });
  }
  return chunks;
}

describe('protocol codec', () => {
  describe('serializer, against hand-written wire bytes', () => {
    it('features word is four zero bytes', () => {
      expect(serializeFeatures().toString('hex')).to.equal(wire.serverFeatures.hex);
      expect(serializeFeatures(0).toString('hex')).to.equal(wire.clientFeatures.hex);
    });

    for (const fixture of wire.replies) {
      it(`reply: ${fixture.name}`, () => {
        const bytes = serializeReply(hex(fixture.requestCdbHex), { status: fixture.status, sense: hex(fixture.senseHex), data: hex(fixture.dataHex) });
        expect(bytes.toString('hex')).to.equal(fixture.hex);
      });
    }

    for (const fixture of wire.requests) {
      it(`request: ${fixture.name} (10-byte CDB padded to 16)`, () => {
        const bytes = serializeRequest(hex(fixture.hex).subarray(0, 10), hex(fixture.dataOutHex));
        expect(bytes.toString('hex')).to.equal(fixture.hex + fixture.dataOutHex);
      });
    }
  });

  describe('serializeReply keeps what QEMU asserts', () => {
    const sense = Buffer.from('700005000000000a00000000200000000000', 'hex');
    const data = Buffer.alloc(100, 0xab);

    it('sends no data for PR OUT, even when the backend returned some', () => {
      const bytes = serializeReply(cdbOf({ opcode: 0x5f, length: 24 }), { status: 0, sense: Buffer.alloc(0), data });
      expect(bytes.length).to.equal(104);
      expect(bytes.readInt32BE(4)).to.equal(0);
    });

    it('sends no data for PR IN unless the status is GOOD', () => {
      for (const status of [0x02, 0x08, 0x18, 0x28]) {
        const bytes = serializeReply(cdbOf({ length: 8192 }), { status, sense, data });
        expect(bytes.length, `status ${status}`).to.equal(104);
        expect(bytes.readInt32BE(0)).to.equal(status);
        expect(bytes.readInt32BE(4)).to.equal(0);
      }
    });

    it('truncates PR IN data to the allocation length', () => {
      const bytes = serializeReply(cdbOf({ length: 8 }), { status: 0, sense: Buffer.alloc(0), data });
      expect(bytes.readInt32BE(4)).to.equal(8);
      expect(bytes.length).to.equal(104 + 8);
      expect(bytes.subarray(104)).to.deep.equal(data.subarray(0, 8));
    });

    it('sends nothing for an allocation length of 0', () => {
      const bytes = serializeReply(cdbOf({ length: 0 }), { status: 0, sense: Buffer.alloc(0), data });
      expect(bytes.length).to.equal(104);
      expect(bytes.readInt32BE(4)).to.equal(0);
    });

    it('never sends more than 8192 data bytes, whatever the allocation length says', () => {
      const big = Buffer.alloc(10000, 1);
      const bytes = serializeReply(cdbOf({ length: 0xffff }), { status: 0, sense: Buffer.alloc(0), data: big });
      expect(bytes.readInt32BE(4)).to.equal(PR_HELPER_DATA_SIZE);
      expect(bytes.length).to.equal(104 + PR_HELPER_DATA_SIZE);
      expect(replyDataLength(cdbOf({ length: 0xffff }), { status: 0, data: big })).to.equal(PR_HELPER_DATA_SIZE);
    });

    it('sends shorter data as is', () => {
      const bytes = serializeReply(cdbOf({ length: 8192 }), { status: 0, sense: Buffer.alloc(0), data: data.subarray(0, 16) });
      expect(bytes.readInt32BE(4)).to.equal(16);
    });

    it('zero-fills the sense field and truncates sense beyond 96 bytes', () => {
      const short = serializeReply(cdbOf(), { status: 2, sense, data: Buffer.alloc(0) });
      expect(short.subarray(8, 8 + sense.length)).to.deep.equal(sense);
      expect(short.subarray(8 + sense.length, 104)).to.deep.equal(Buffer.alloc(96 - sense.length));
      const long = serializeReply(cdbOf(), { status: 2, sense: Buffer.alloc(200, 0x77), data: Buffer.alloc(0) });
      expect(long.length).to.equal(104);
      expect(long.subarray(8, 104)).to.deep.equal(Buffer.alloc(96, 0x77));
    });

    it('throws on a status that is not a byte (a bug upstream, not a wire value)', () => {
      for (const status of [-1, 256, 1.5, NaN]) {
        expect(() => serializeReply(cdbOf(), { status, sense: Buffer.alloc(0), data: Buffer.alloc(0) })).to.throw(RangeError);
      }
    });
  });

  describe('serializeRequest refuses what would desynchronise the stream', () => {
    it('rejects CDBs that are empty or longer than 16 bytes', () => {
      expect(() => serializeRequest(Buffer.alloc(0))).to.throw(RangeError);
      expect(() => serializeRequest(Buffer.alloc(17, 0x5e))).to.throw(RangeError);
    });
    it('rejects opcodes other than PR IN/OUT', () => {
      expect(() => serializeRequest(cdbOf({ opcode: 0x12 }))).to.throw(RangeError, /opcode/);
    });
    it('rejects a PR OUT parameter list whose length differs from the CDB', () => {
      expect(() => serializeRequest(cdbOf({ opcode: 0x5f, length: 24 }), Buffer.alloc(23))).to.throw(RangeError, /parameter list/);
    });
    it('rejects data with PR IN and lengths above 8192', () => {
      expect(() => serializeRequest(cdbOf({ length: 8 }), Buffer.alloc(1))).to.throw(RangeError);
      expect(() => serializeRequest(cdbOf({ length: 8193 }))).to.throw(RangeError, /8192/);
    });
  });

  describe('RequestParser', () => {
    for (const fixture of wire.requests) {
      const message = Buffer.concat([FEATURES, hex(fixture.hex), hex(fixture.dataOutHex)]);
      const expected: PrHelperRequest = { cdb: hex(fixture.hex), fd: FD, dataOut: hex(fixture.dataOutHex) };

      it(`parses "${fixture.name}" split at every byte offset`, () => {
        for (let cut = 0; cut <= message.length; cut++) {
          const parser = new RequestParser();
          const events = feed(parser, split(message, [cut], 4));
          expect(events.map((event) => event.type), `cut at ${cut}`).to.deep.equal(['features', 'request']);
          expect(requestsOf(events)[0], `cut at ${cut}`).to.deep.equal(expected);
          expect(parser.idle).to.equal(true);
        }
      });

      it(`parses "${fixture.name}" fed one byte at a time`, () => {
        const cuts = Array.from({ length: message.length }, (_, i) => i);
        const parser = new RequestParser();
        expect(requestsOf(feed(parser, split(message, cuts, 4)))).to.deep.equal([expected]);
      });

      it(`parses "${fixture.name}" with the fd on any chunk that carries CDB bytes`, () => {
        for (let fdAt = 4; fdAt < 20; fdAt++) {
          // Single-byte chunks: the fd arrives with CDB byte fdAt - 4, later than the first.
          const cuts = Array.from({ length: message.length }, (_, i) => i);
          const parser = new RequestParser();
          expect(requestsOf(feed(parser, split(message, cuts, fdAt))), `fd with byte ${fdAt}`).to.deep.equal([expected]);
        }
      });
    }

    it('parses a stream of requests however the kernel cuts it into reads', () => {
      const sends: InboundChunk[] = [{ bytes: FEATURES, fds: [] }];
      const expected: PrHelperRequest[] = [];
      wire.requests.forEach((fixture, i) => {
        const cdb = hex(fixture.hex);
        const dataOut = hex(fixture.dataOutHex);
        // QEMU sends the CDB with the fd, then the parameter list in a second write.
        sends.push({ bytes: cdb, fds: [FD + i] });
        if (dataOut.length > 0) sends.push({ bytes: dataOut, fds: [] });
        expected.push({ cdb, fd: FD + i, dataOut });
      });
      fc.assert(
        fc.property(fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 8 }), (readSizes) => {
          const parser = new RequestParser();
          const events = feed(parser, kernelDelivery(sends, readSizes));
          expect(events.filter((event) => event.type === 'violation')).to.deep.equal([]);
          expect(requestsOf(events)).to.deep.equal(expected);
        }),
        { numRuns: 300 },
      );
    });

    it('tells how many bytes complete the current item', () => {
      const parser = new RequestParser();
      expect(parser.bytesWanted).to.equal(4);
      parser.push({ bytes: FEATURES.subarray(0, 1), fds: [] });
      expect(parser.bytesWanted).to.equal(3);
      parser.push({ bytes: FEATURES.subarray(1), fds: [] });
      expect(parser.bytesWanted).to.equal(16);
      parser.push({ bytes: cdbOf({ opcode: 0x5f, length: 24 }), fds: [FD] });
      expect(parser.bytesWanted).to.equal(24);
      expect(parser.idle).to.equal(false);
      expect(requestsOf(parser.push({ bytes: Buffer.alloc(24), fds: [] }))).to.have.length(1);
      expect(parser.bytesWanted).to.equal(16);
      expect(parser.idle).to.equal(true);
    });

    it('accepts a transfer length of exactly 8192', () => {
      const parser = new RequestParser();
      const dataOut = Buffer.alloc(8192, 0x5a);
      const events = feed(parser, split(Buffer.concat([FEATURES, cdbOf({ opcode: 0x5f, length: 8192 }), dataOut]), [4, 20, 3000, 7000], 4));
      expect(requestsOf(events)).to.deep.equal([{ cdb: cdbOf({ opcode: 0x5f, length: 8192 }), fd: FD, dataOut }]);
      const inParser = new RequestParser();
      expect(requestsOf(feed(inParser, split(Buffer.concat([FEATURES, cdbOf({ length: 8192 })]), [], 4)))).to.have.length(1);
    });

    it('reads the PR OUT parameter list split across many chunks', () => {
      const dataOut = Buffer.from(Array.from({ length: 24 }, (_, i) => i));
      const message = Buffer.concat([FEATURES, cdbOf({ opcode: 0x5f, length: 24 }), dataOut]);
      const parser = new RequestParser();
      const events = feed(parser, split(message, [4, 20, 21, 25, 30, 43], 4));
      expect(requestsOf(events)[0].dataOut).to.deep.equal(dataOut);
    });

    describe('violations close the connection and hand back every fd', () => {
      it('non-zero features word', () => {
        const parser = new RequestParser();
        const error = violationOf(parser.push({ bytes: hex('00000001'), fds: [] }));
        expect(error.violation).to.equal('unsupported-features');
        expect(parser.failed).to.equal(true);
      });

      it('non-zero features word glued to a CDB with its fd: the fd comes back', () => {
        const parser = new RequestParser();
        const error = violationOf(parser.push({ bytes: Buffer.concat([hex('80000000'), cdbOf()]), fds: [FD] }));
        expect(error.violation).to.equal('unsupported-features');
        expect(error.fds).to.deep.equal([FD]);
      });

      it('a CDB with no fd', () => {
        const parser = new RequestParser();
        const error = violationOf(feed(parser, [{ bytes: FEATURES, fds: [] }, { bytes: cdbOf(), fds: [] }]));
        expect(error.violation).to.equal('missing-fd');
        expect(error.fds).to.deep.equal([]);
      });

      it('two fds in one chunk: both returned', () => {
        const parser = new RequestParser();
        const error = violationOf(feed(parser, [{ bytes: FEATURES, fds: [] }, { bytes: cdbOf(), fds: [FD, FD + 1] }]));
        expect(error.violation).to.equal('too-many-fds');
        expect(error.fds).to.have.members([FD, FD + 1]);
      });

      it('two fds on two chunks of one CDB: both returned, as soon as the second arrives', () => {
        const parser = new RequestParser();
        const cdb = cdbOf();
        const events = feed(parser, [
          { bytes: FEATURES, fds: [] },
          { bytes: cdb.subarray(0, 5), fds: [FD] },
          { bytes: cdb.subarray(5, 6), fds: [FD + 1] },
        ]);
        const error = violationOf(events);
        expect(error.violation).to.equal('too-many-fds');
        expect(error.fds).to.have.members([FD, FD + 1]);
      });

      it('an fd with the features word only', () => {
        const parser = new RequestParser();
        const error = violationOf(parser.push({ bytes: FEATURES, fds: [FD] }));
        expect(error.violation).to.equal('unexpected-fd');
        expect(error.fds).to.deep.equal([FD]);
      });

      it('an fd with a parameter-list chunk: the request fd and the extra one returned', () => {
        const parser = new RequestParser();
        const error = violationOf(
          feed(parser, [
            { bytes: FEATURES, fds: [] },
            { bytes: cdbOf({ opcode: 0x5f, length: 24 }), fds: [FD] },
            { bytes: Buffer.alloc(10), fds: [FD + 1] },
          ]),
        );
        expect(error.violation).to.equal('unexpected-fd');
        expect(error.fds).to.have.members([FD, FD + 1]);
      });

      it('an fd with a complete parameter list: no request is emitted, both fds returned', () => {
        const parser = new RequestParser();
        const events = feed(parser, [
          { bytes: FEATURES, fds: [] },
          { bytes: cdbOf({ opcode: 0x5f, length: 24 }), fds: [FD] },
          { bytes: Buffer.alloc(24), fds: [FD + 1] },
        ]);
        expect(requestsOf(events)).to.deep.equal([]);
        const error = violationOf(events);
        expect(error.violation).to.equal('unexpected-fd');
        expect(error.fds).to.have.members([FD, FD + 1]);
      });

      for (const opcode of [0x00, 0x12, 0x5d, 0x60, 0xa3, 0xff]) {
        it(`opcode 0x${opcode.toString(16)} (fd returned)`, () => {
          const parser = new RequestParser();
          const error = violationOf(feed(parser, [{ bytes: FEATURES, fds: [] }, { bytes: cdbOf({ opcode }), fds: [FD] }]));
          expect(error.violation).to.equal('invalid-opcode');
          expect(error.fds).to.deep.equal([FD]);
        });
      }

      for (const [opcode, length] of [
        [0x5e, 8193],
        [0x5f, 8193],
        [0x5e, 0xffff],
      ] as const) {
        it(`transfer length ${length} for opcode 0x${opcode.toString(16)} (fd returned)`, () => {
          const parser = new RequestParser();
          const error = violationOf(feed(parser, [{ bytes: FEATURES, fds: [] }, { bytes: cdbOf({ opcode, length }), fds: [FD] }]));
          expect(error.violation).to.equal('transfer-too-long');
          expect(error.fds).to.deep.equal([FD]);
        });
      }

      it('MSG_CTRUNC: the fds that did arrive are returned', () => {
        const parser = new RequestParser();
        parser.push({ bytes: FEATURES, fds: [] });
        const error = violationOf(parser.push({ bytes: cdbOf(), fds: [FD, FD + 1], controlTruncated: true }));
        expect(error.violation).to.equal('control-truncated');
        expect(error.fds).to.have.members([FD, FD + 1]);
      });

      it('anything after a violation is refused and its fds returned', () => {
        const parser = new RequestParser();
        violationOf(parser.push({ bytes: hex('00000001'), fds: [] }));
        const error = violationOf(parser.push({ bytes: cdbOf(), fds: [FD] }));
        expect(error.violation).to.equal('after-violation');
        expect(error.fds).to.deep.equal([FD]);
      });

      it('bytes after a violation in the same chunk are not parsed, and the chunk fds come back', () => {
        const parser = new RequestParser();
        parser.push({ bytes: FEATURES, fds: [] });
        // The fd belongs to the last CDB in the chunk, so the first one has none.
        const events = parser.push({ bytes: Buffer.concat([cdbOf(), cdbOf()]), fds: [FD] });
        expect(requestsOf(events)).to.deep.equal([]);
        const error = violationOf(events);
        expect(error.violation).to.equal('missing-fd');
        expect(error.fds).to.deep.equal([FD]);
      });
    });

    it('releaseFds hands back the fd of a half-read request', () => {
      const parser = new RequestParser();
      feed(parser, [{ bytes: FEATURES, fds: [] }, { bytes: cdbOf({ opcode: 0x5f, length: 24 }), fds: [FD] }, { bytes: Buffer.alloc(5), fds: [] }]);
      expect(parser.idle).to.equal(false);
      expect(parser.releaseFds()).to.deep.equal([FD]);
      expect(parser.releaseFds()).to.deep.equal([]);
    });
  });

  describe('ReplyParser', () => {
    const stream = Buffer.concat([hex(wire.serverFeatures.hex), ...wire.replies.map((reply) => hex(reply.hex))]);
    const expected: PrHelperReply[] = wire.replies.map((reply) => {
      const sense = Buffer.alloc(96);
      hex(reply.senseHex).copy(sense);
      return { status: reply.status, sense, data: hex(reply.dataHex) };
    });
    const repliesOf = (events: ReplyParserEvent[]): PrHelperReply[] => events.flatMap((event) => (event.type === 'reply' ? [event.reply] : []));

    it('parses every reply split at every byte offset', () => {
      for (let cut = 0; cut <= stream.length; cut++) {
        const parser = new ReplyParser();
        const events = [...parser.push(stream.subarray(0, cut)), ...parser.push(stream.subarray(cut))];
        expect(events[0], `cut at ${cut}`).to.deep.equal({ type: 'features', features: 0 });
        expect(repliesOf(events), `cut at ${cut}`).to.deep.equal(expected);
        expect(parser.idle).to.equal(true);
      }
    });

    it('parses every reply fed one byte at a time', () => {
      const parser = new ReplyParser();
      const events: ReplyParserEvent[] = [];
      for (let i = 0; i < stream.length; i++) events.push(...parser.push(stream.subarray(i, i + 1)));
      expect(repliesOf(events)).to.deep.equal(expected);
    });

    it('refuses a server features word other than 0', () => {
      expect(violationOf(new ReplyParser().push(hex('00000002'))).violation).to.equal('unsupported-server-features');
    });

    it('refuses a reply size above 8192 or below 0', () => {
      for (const sz of [8193, -1, 0x7fffffff]) {
        const header = Buffer.alloc(104);
        header.writeInt32BE(sz, 4);
        const parser = new ReplyParser();
        expect(violationOf(parser.push(Buffer.concat([hex('00000000'), header]))).violation, `sz ${sz}`).to.equal('invalid-reply');
      }
    });
  });
});
