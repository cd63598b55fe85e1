// The pure SCSI codecs: hand-written golden vectors from the SPC-4 layouts (not
// produced by the encoders), fast-check round trips, truncation, and every decoder's
// error answers.

import { expect } from 'chai';
import fc from 'fast-check';
import {
  decodePrInCdb,
  decodePrOutCdb,
  encodePrInCdb,
  encodePrOutCdb,
} from '../../src/scsi/cdb';
import {
  decodePrOutParameters,
  decodeRegisterAndMoveParameters,
  encodePrOutParameters,
  encodeRegisterAndMoveParameters,
  type PrOutParameters,
  type RegisterAndMoveParameters,
} from '../../src/scsi/parameter-list';
import {
  decodeReadFullStatus,
  decodeReadKeys,
  decodeReadReservation,
  decodeReportCapabilities,
  encodeReadFullStatus,
  encodeReadKeys,
  encodeReadReservation,
  encodeReportCapabilities,
  type Capabilities,
  type FullStatusDescriptor,
} from '../../src/scsi/pr-in-data';
import { Sense, type SenseCondition } from '../../src/scsi/sense';
import {
  decodeTransportId,
  encodeTransportId,
  formatTransportId,
  parseTransportId,
  transportIdKey,
  type TransportId,
} from '../../src/scsi/transport-id';

const hex = (text: string): Buffer => Buffer.from(text.replace(/[\s|]+/g, ''), 'hex');
const zeros = (n: number): string => '00'.repeat(n);
const ascii = (text: string): string => Buffer.from(text, 'ascii').toString('hex');

// ---- golden vectors, written out from SPC-4's tables ----

/** FC TransportID: byte 0 = 00h, N_PORT_NAME at bytes 8..15. */
const FC_ID: TransportId = { protocol: 'fc', portName: 0x21000024ff000001n };
const FC_BYTES = hex(`00 ${zeros(7)} | 21 00 00 24 ff 00 00 01 | ${zeros(8)}`);
/** SAS TransportID: byte 0 = 06h, SAS ADDRESS at bytes 4..11. */
const SAS_ID: TransportId = { protocol: 'sas', sasAddress: 0x500605b000000001n };
const SAS_BYTES = hex(`06 00 00 00 | 50 06 05 b0 00 00 00 01 | ${zeros(12)}`);
/** iSCSI device name (format 00b): 05h, ADDITIONAL LENGTH 20 (the minimum), NUL padded. */
const ISCSI_NAME_ID: TransportId = { protocol: 'iscsi', name: 'iqn.a' };
const ISCSI_NAME_BYTES = hex(`05 00 00 14 | 69 71 6e 2e 61 | ${zeros(15)}`);
/** iSCSI initiator port (format 01b): 45h, "iqn.a,i,0x23d000000001" (22 chars) + NUL + 1 pad = 24. */
const ISCSI_PORT_ID: TransportId = { protocol: 'iscsi', name: 'iqn.a', isid: '23d000000001' };
const ISCSI_PORT_BYTES = hex(`45 00 00 18 | 69 71 6e 2e 61 2c 69 2c 30 78 32 33 64 30 30 30 30 30 30 30 30 31 | 00 00`);

describe('scsi codecs', () => {
  describe('CDBs', () => {
    it('encodes PR IN READ KEYS with the allocation length in bytes 7..8', () => {
      expect(encodePrInCdb({ action: 0, allocationLength: 0x1000 })).to.deep.equal(hex('5e 00 00 00 00 00 00 10 00 00'));
      expect(encodePrInCdb({ action: 3, allocationLength: 0xfffe, control: 0x04 })).to.deep.equal(hex('5e 03 00 00 00 00 00 ff fe 04'));
    });

    it('encodes PR OUT RESERVE with scope/type in byte 2 and the BE32 list length in bytes 5..8', () => {
      expect(encodePrOutCdb({ action: 1, scope: 0, type: 5, parameterListLength: 24 })).to.deep.equal(hex('5f 01 05 00 00 00 00 00 18 00'));
      expect(encodePrOutCdb({ action: 7, parameterListLength: 0x01020304 })).to.deep.equal(hex('5f 07 00 00 00 01 02 03 04 00'));
    });

    it('decodes the full 32-bit PARAMETER LIST LENGTH (bytes 5..8), not just bytes 7..8 as qemu-pr-helper does', () => {
      expect(decodePrOutCdb(hex('5f 00 00 00 00 01 02 03 04 00')).parameterListLength).to.equal(0x01020304);
      expect(decodePrOutCdb(hex('5f 00 00 00 00 ff ff ff ff 00')).parameterListLength).to.equal(0xffffffff);
    });

    it('masks the service action to bits 4..0 and splits scope and type', () => {
      expect(decodePrOutCdb(hex('5f e4 36 00 00 00 00 00 18 80'))).to.deep.equal({ action: 4, scope: 3, type: 6, parameterListLength: 24, control: 0x80 });
      expect(decodePrInCdb(hex('5e e1 ff ff ff ff ff 12 34 07'))).to.deep.equal({ action: 1, allocationLength: 0x1234, control: 7 });
    });

    it('reads missing bytes of a short CDB as zero instead of throwing', () => {
      expect(decodePrInCdb(hex('5e 01'))).to.deep.equal({ action: 1, allocationLength: 0, control: 0 });
      expect(decodePrOutCdb(new Uint8Array(0))).to.deep.equal({ action: 0, scope: 0, type: 0, parameterListLength: 0, control: 0 });
    });

    it('refuses out-of-range fields when encoding', () => {
      expect(() => encodePrInCdb({ action: 0, allocationLength: 0x10000 })).to.throw(RangeError);
      expect(() => encodePrInCdb({ action: 0x20, allocationLength: 0 })).to.throw(RangeError);
      expect(() => encodePrOutCdb({ action: 0, type: 16, parameterListLength: 24 })).to.throw(RangeError);
      expect(() => encodePrOutCdb({ action: 0, parameterListLength: -1 })).to.throw(RangeError);
    });

    it('round-trips every field value', () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 31 }), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 255 }), (action, allocationLength, control) => {
          expect(decodePrInCdb(encodePrInCdb({ action, allocationLength, control }))).to.deep.equal({ action, allocationLength, control });
        }),
      );
      fc.assert(
        fc.property(
          fc.record({
            action: fc.integer({ min: 0, max: 31 }),
            scope: fc.integer({ min: 0, max: 15 }),
            type: fc.integer({ min: 0, max: 15 }),
            parameterListLength: fc.integer({ min: 0, max: 0xffffffff }),
            control: fc.integer({ min: 0, max: 255 }),
          }),
          (cdb) => {
            expect(decodePrOutCdb(encodePrOutCdb(cdb))).to.deep.equal(cdb);
          },
        ),
      );
    });
  });

  describe('TransportIDs', () => {
    const golden: Array<[string, TransportId, Buffer]> = [
      ['FC', FC_ID, FC_BYTES],
      ['SAS', SAS_ID, SAS_BYTES],
      ['iSCSI device name', ISCSI_NAME_ID, ISCSI_NAME_BYTES],
      ['iSCSI initiator port', ISCSI_PORT_ID, ISCSI_PORT_BYTES],
    ];
    for (const [what, id, bytes] of golden) {
      it(`encodes and decodes the ${what} golden vector`, () => {
        expect(encodeTransportId(id)).to.deep.equal(bytes);
        expect(decodeTransportId(bytes, 0)).to.deep.equal({ ok: true, id, length: bytes.length });
      });
    }

    it('decodes at an offset and reports the length consumed', () => {
      const both = Buffer.concat([ISCSI_PORT_BYTES, SAS_BYTES]);
      expect(decodeTransportId(both, ISCSI_PORT_BYTES.length)).to.deep.equal({ ok: true, id: SAS_ID, length: 24 });
    });

    it('accepts an iSCSI id shorter than SPC-4 asks for (additional length 8), as LIO and qemu do', () => {
      const short = hex(`05 00 00 08 | 69 71 6e 2e 61 00 00 00`);
      expect(decodeTransportId(short, 0)).to.deep.equal({ ok: true, id: ISCSI_NAME_ID, length: 12 });
    });

    it('ignores reserved bits 5..4 of byte 0 like qemu-pr-helper (mask 0xCF)', () => {
      const withReserved = Buffer.from(FC_BYTES);
      withReserved[0] = 0x30;
      expect(decodeTransportId(withReserved, 0)).to.deep.include({ ok: true });
    });

    const bad: Array<[string, Buffer, number?]> = [
      ['an offset past the end', FC_BYTES, 24],
      ['a negative offset', FC_BYTES, -1],
      ['an unsupported protocol (SPI, 1)', hex(`01 ${zeros(23)}`)],
      ['FC with format code 01b', hex(`40 ${zeros(23)}`)],
      ['a truncated FC id', FC_BYTES.subarray(0, 23)],
      ['a truncated SAS id', SAS_BYTES.subarray(0, 12)],
      ['SAS with format code 01b', hex(`46 ${zeros(23)}`)],
      ['iSCSI with format code 10b', hex(`85 00 00 14 ${ascii('iqn.a')} ${zeros(15)}`)],
      ['an iSCSI header cut short', hex('05 00 00')],
      ['an iSCSI additional length that is not a multiple of 4', hex(`05 00 00 13 ${ascii('iqn.a')} ${zeros(14)}`)],
      ['an iSCSI additional length of 0', hex('05 00 00 00')],
      ['an iSCSI additional length above 252', hex(`05 00 01 00 ${ascii('iqn.a')} ${zeros(251)}`)],
      ['an iSCSI id longer than the buffer', ISCSI_NAME_BYTES.subarray(0, 20)],
      ['an iSCSI name without NUL', hex(`05 00 00 08 ${ascii('iqn.abcd')}`)],
      ['an empty iSCSI name', hex(`05 00 00 08 ${zeros(8)}`)],
      ['an iSCSI name with a blank', hex(`05 00 00 08 ${ascii('iq a')} ${zeros(4)}`)],
      ['an iSCSI name with a comma', hex(`05 00 00 08 ${ascii('iq,a')} ${zeros(4)}`)],
      ['a port id without ",i,0x"', hex(`45 00 00 14 ${ascii('iqn.a')} ${zeros(15)}`)],
      ['a port id with an 11-digit ISID', hex(`45 00 00 18 ${ascii('iqn.a,i,0x23d00000000')} ${zeros(3)}`)],
      ['a port id with a non-hex ISID', hex(`45 00 00 18 ${ascii('iqn.a,i,0x23d00000000g')} ${zeros(2)}`)],
    ];
    for (const [what, bytes, offset] of bad) {
      it(`rejects ${what} with a reason`, () => {
        const decoded = decodeTransportId(bytes, offset ?? 0);
        expect(decoded.ok).to.equal(false);
        if (!decoded.ok) expect(decoded.reason).to.be.a('string').that.is.not.empty;
      });
    }

    it('refuses to encode what cannot be represented', () => {
      expect(() => encodeTransportId({ protocol: 'fc', portName: 1n << 64n })).to.throw(RangeError);
      expect(() => encodeTransportId({ protocol: 'sas', sasAddress: -1n })).to.throw(RangeError);
      expect(() => encodeTransportId({ protocol: 'iscsi', name: '' })).to.throw(RangeError);
      expect(() => encodeTransportId({ protocol: 'iscsi', name: 'a'.repeat(224) })).to.throw(RangeError);
      expect(() => encodeTransportId({ protocol: 'iscsi', name: 'iqn.a', isid: '123' })).to.throw(RangeError);
    });

    it('keys iSCSI names case-insensitively and FC/SAS by 16-digit hex', () => {
      expect(transportIdKey({ protocol: 'iscsi', name: 'IQN.2026-01.Test:Host', isid: '23D000000001' })).to.equal('iscsi:iqn.2026-01.test:host,i,0x23d000000001');
      expect(transportIdKey({ protocol: 'iscsi', name: 'iqn.x' })).to.equal('iscsi:iqn.x');
      expect(transportIdKey({ protocol: 'fc', portName: 0x21n })).to.equal('fc:0x0000000000000021');
      expect(transportIdKey(SAS_ID)).to.equal('sas:0x500605b000000001');
      expect(transportIdKey({ protocol: 'fc', portName: 1n })).to.not.equal(transportIdKey({ protocol: 'sas', sasAddress: 1n }));
    });

    it('formats ids for people', () => {
      expect(formatTransportId(FC_ID)).to.equal('FCP-2 World Wide Name: 0x21000024ff000001');
      expect(formatTransportId(SAS_ID)).to.equal('SAS address: 0x500605b000000001');
      expect(formatTransportId(ISCSI_NAME_ID)).to.equal('iSCSI name: iqn.a');
      expect(formatTransportId(ISCSI_PORT_ID)).to.equal('iSCSI initiator port: iqn.a, ISID: 0x23d000000001');
    });

    it("parses sg_persist's TransportID syntax", () => {
      expect(parseTransportId('fc,21000024ff000001')).to.deep.equal(FC_ID);
      expect(parseTransportId('FCP,0x21000024FF000001')).to.deep.equal(FC_ID);
      expect(parseTransportId('sas,500605b000000001')).to.deep.equal(SAS_ID);
      expect(parseTransportId('iqn.a')).to.deep.equal(ISCSI_NAME_ID);
      expect(parseTransportId('iscsi,iqn.a')).to.deep.equal(ISCSI_NAME_ID);
      expect(parseTransportId(' iqn.a,i,0x23d000000001 ')).to.deep.equal(ISCSI_PORT_ID);
      expect(parseTransportId('iqn.a,i,0x1')).to.deep.equal({ protocol: 'iscsi', name: 'iqn.a', isid: '000000000001' });
      expect(parseTransportId('naa.5000c5')).to.deep.equal({ protocol: 'iscsi', name: 'naa.5000c5' });
      expect(parseTransportId(`6,0,0,0,50,6,5,b0,0,0,0,1${',0'.repeat(12)}`)).to.deep.equal(SAS_ID);
      expect(parseTransportId(`0x06 00 00 00 50 06 05 b0 00 00 00 01 ${zeros(12).replace(/(..)/g, '$1 ')}`)).to.deep.equal(SAS_ID);
    });

    for (const text of ['', 'fc,xyz', 'fc,12345678901234567', 'sas,', 'iqn.a b', 'iqn.a,i,0xzz', 'hello', '06 00 00', `06 ${zeros(24)}`]) {
      it(`refuses to parse ${JSON.stringify(text)}`, () => {
        expect(() => parseTransportId(text)).to.throw(RangeError);
      });
    }

    it('round-trips any representable id through bytes and through its parsed text form', () => {
      fc.assert(
        fc.property(transportIdArb, (id) => {
          const bytes = encodeTransportId(id);
          expect(bytes.length % 4).to.equal(0);
          expect(bytes.length).to.be.at.least(24);
          expect(decodeTransportId(bytes, 0)).to.deep.equal({ ok: true, id, length: bytes.length });
          const text = id.protocol === 'fc' ? `fc,${id.portName.toString(16)}` : id.protocol === 'sas' ? `sas,${id.sasAddress.toString(16)}` : `iscsi,${id.name}${id.isid ? `,i,0x${id.isid}` : ''}`;
          expect(transportIdKey(parseTransportId(text))).to.equal(transportIdKey(id));
        }),
      );
    });

    it('never throws on arbitrary bytes', () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(300), (bytes, offset) => {
          const decoded = decodeTransportId(bytes, offset);
          if (decoded.ok) expect(offset + decoded.length).to.be.at.most(bytes.length);
        }),
      );
    });
  });

  describe('PR OUT parameter lists', () => {
    it('encodes the basic list: keys, then flags in byte 20', () => {
      const bytes = hex(`01 23 45 67 89 ab cd ef | 11 22 33 44 55 66 77 88 | 00 00 00 00 | 05 00 00 00`);
      const params: PrOutParameters = {
        reservationKey: 0x0123456789abcdefn,
        serviceActionKey: 0x1122334455667788n,
        specIPT: false,
        allTgPt: true,
        aptpl: true,
        transportIds: [],
      };
      expect(encodePrOutParameters(params)).to.deep.equal(bytes);
      expect(decodePrOutParameters(bytes)).to.deep.equal({ ok: true, value: params });
    });

    it('encodes SPEC_I_PT with the TRANSPORTID PARAMETER DATA LENGTH at bytes 24..27', () => {
      const bytes = Buffer.concat([hex(`${zeros(8)} | 00 00 00 00 00 00 0a bc | 00 00 00 00 | 08 00 00 00 | 00 00 00 30`), FC_BYTES, ISCSI_NAME_BYTES]);
      const params: PrOutParameters = { reservationKey: 0n, serviceActionKey: 0xabcn, specIPT: true, allTgPt: false, aptpl: false, transportIds: [FC_ID, ISCSI_NAME_ID] };
      expect(encodePrOutParameters(params)).to.deep.equal(bytes);
      expect(decodePrOutParameters(bytes)).to.deep.equal({ ok: true, value: params });
    });

    it('accepts SPEC_I_PT with no TransportIDs', () => {
      const bytes = hex(`${zeros(20)} 08 00 00 00 | 00 00 00 00`);
      expect(decodePrOutParameters(bytes)).to.deep.include({ ok: true });
    });

    const lengthErrors: Array<[string, Buffer]> = [
      ['fewer than 24 bytes', Buffer.alloc(23)],
      ['an empty list', Buffer.alloc(0)],
      ['25 bytes with SPEC_I_PT=0', Buffer.alloc(25)],
      ['SPEC_I_PT=1 without the length field', hex(`${zeros(20)} 08 00 00 00`)],
      ['a TransportID length past the end', Buffer.concat([hex(`${zeros(20)} 08 00 00 00 | 00 00 00 30`), FC_BYTES])],
      ['a TransportID length short of the end', Buffer.concat([hex(`${zeros(20)} 08 00 00 00 | 00 00 00 10`), FC_BYTES])],
    ];
    for (const [what, bytes] of lengthErrors) {
      it(`answers ${what} with PARAMETER LIST LENGTH ERROR`, () => {
        expectSense(decodePrOutParameters(bytes), Sense.PARAMETER_LIST_LENGTH_ERROR);
      });
    }

    const fieldErrors: Array<[string, Buffer]> = [
      ['a malformed TransportID', Buffer.concat([hex(`${zeros(20)} 08 00 00 00 | 00 00 00 18`), hex(`02 ${zeros(23)}`)])],
      ['a TransportID that overruns the TransportID data', Buffer.concat([hex(`${zeros(20)} 08 00 00 00 | 00 00 00 14`), FC_BYTES.subarray(0, 20)])],
      ['an iSCSI TransportID without NUL', Buffer.concat([hex(`${zeros(20)} 08 00 00 00 | 00 00 00 0c`), hex(`05 00 00 08 ${ascii('iqn.abcd')}`)])],
    ];
    for (const [what, bytes] of fieldErrors) {
      it(`answers ${what} with INVALID FIELD IN PARAMETER LIST`, () => {
        expectSense(decodePrOutParameters(bytes), Sense.INVALID_FIELD_IN_PARAMETER_LIST);
      });
    }

    it('encodes REGISTER AND MOVE: UNREG/APTPL in byte 17, RTPI in 18..19', () => {
      const bytes = Buffer.concat([hex(`00 00 00 00 00 00 00 01 | 00 00 00 00 00 00 00 02 | 00 03 00 02 | 00 00 00 18`), ISCSI_NAME_BYTES]);
      const params: RegisterAndMoveParameters = { reservationKey: 1n, serviceActionKey: 2n, unreg: true, aptpl: true, relativeTargetPort: 2, transportId: ISCSI_NAME_ID };
      expect(encodeRegisterAndMoveParameters(params)).to.deep.equal(bytes);
      expect(decodeRegisterAndMoveParameters(bytes)).to.deep.equal({ ok: true, value: params });
    });

    const ramErrors: Array<[string, Buffer, SenseCondition]> = [
      ['fewer than 24 bytes', Buffer.alloc(20), Sense.PARAMETER_LIST_LENGTH_ERROR],
      ['a TransportID length that disagrees with the list', Buffer.concat([hex(`${zeros(20)} 00 00 00 20`), FC_BYTES]), Sense.PARAMETER_LIST_LENGTH_ERROR],
      ['no TransportID', Buffer.alloc(24), Sense.INVALID_FIELD_IN_PARAMETER_LIST],
      ['bytes after the TransportID', Buffer.concat([hex(`${zeros(20)} 00 00 00 1c`), FC_BYTES, Buffer.alloc(4)]), Sense.INVALID_FIELD_IN_PARAMETER_LIST],
      ['a malformed TransportID', Buffer.concat([hex(`${zeros(20)} 00 00 00 18`), hex(`46 ${zeros(23)}`)]), Sense.INVALID_FIELD_IN_PARAMETER_LIST],
    ];
    for (const [what, bytes, sense] of ramErrors) {
      it(`REGISTER AND MOVE: answers ${what} with ${sense === Sense.PARAMETER_LIST_LENGTH_ERROR ? 'PARAMETER LIST LENGTH ERROR' : 'INVALID FIELD IN PARAMETER LIST'}`, () => {
        expectSense(decodeRegisterAndMoveParameters(bytes), sense);
      });
    }

    it('refuses to encode TransportIDs without SPEC_I_PT, or out-of-range keys and ports', () => {
      const base: PrOutParameters = { reservationKey: 0n, serviceActionKey: 0n, specIPT: false, allTgPt: false, aptpl: false, transportIds: [FC_ID] };
      expect(() => encodePrOutParameters(base)).to.throw(RangeError);
      expect(() => encodePrOutParameters({ ...base, transportIds: [], reservationKey: 1n << 64n })).to.throw(RangeError);
      expect(() =>
        encodeRegisterAndMoveParameters({ reservationKey: 0n, serviceActionKey: 1n, unreg: false, aptpl: false, relativeTargetPort: 0x10000, transportId: FC_ID }),
      ).to.throw(RangeError);
    });

    it('round-trips random lists', () => {
      fc.assert(
        fc.property(
          fc.record({
            reservationKey: u64,
            serviceActionKey: u64,
            specIPT: fc.boolean(),
            allTgPt: fc.boolean(),
            aptpl: fc.boolean(),
            transportIds: fc.array(transportIdArb, { maxLength: 4 }),
          }),
          (p) => {
            const params = { ...p, transportIds: p.specIPT ? p.transportIds : [] };
            expect(decodePrOutParameters(encodePrOutParameters(params))).to.deep.equal({ ok: true, value: params });
          },
        ),
      );
      fc.assert(
        fc.property(
          fc.record({
            reservationKey: u64,
            serviceActionKey: u64,
            unreg: fc.boolean(),
            aptpl: fc.boolean(),
            relativeTargetPort: fc.integer({ min: 0, max: 0xffff }),
            transportId: transportIdArb,
          }),
          (p) => {
            expect(decodeRegisterAndMoveParameters(encodeRegisterAndMoveParameters(p))).to.deep.equal({ ok: true, value: p });
          },
        ),
      );
    });

    it('never throws on arbitrary bytes', () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 120 }), (bytes) => {
          decodePrOutParameters(bytes);
          decodeRegisterAndMoveParameters(bytes);
        }),
      );
    });
  });

  describe('PR IN data', () => {
    it('READ KEYS golden vector', () => {
      const bytes = hex(`00 00 00 05 00 00 00 10 | 00 00 00 00 00 00 00 aa | 00 00 00 00 00 00 00 bb`);
      expect(encodeReadKeys({ generation: 5, keys: [0xaan, 0xbbn] }, 8192)).to.deep.equal(bytes);
      expect(decodeReadKeys(bytes)).to.deep.equal({ ok: true, value: { generation: 5, keys: [0xaan, 0xbbn] }, truncated: false });
    });

    it('READ KEYS truncated to the allocation length keeps the full ADDITIONAL LENGTH (libiscsi PrinReadKeys.Truncate)', () => {
      const full = encodeReadKeys({ generation: 1, keys: [1n, 2n, 3n] }, 8192);
      const cut = encodeReadKeys({ generation: 1, keys: [1n, 2n, 3n] }, 8);
      expect(cut).to.deep.equal(hex('00 00 00 01 00 00 00 18'));
      expect(decodeReadKeys(cut)).to.deep.equal({ ok: true, value: { generation: 1, keys: [] }, truncated: true });
      const partial = encodeReadKeys({ generation: 1, keys: [1n, 2n, 3n] }, 20);
      expect(partial).to.deep.equal(full.subarray(0, 20));
      expect(decodeReadKeys(partial)).to.deep.equal({ ok: true, value: { generation: 1, keys: [1n] }, truncated: true });
      expect(encodeReadKeys({ generation: 1, keys: [1n] }, 0).length).to.equal(0);
    });

    it('READ RESERVATION golden vectors, with and without a reservation', () => {
      const held = hex(`00 00 00 01 00 00 00 10 | 00 00 00 00 00 00 00 ab | 00 00 00 00 | 00 | 05 | 00 00`);
      expect(encodeReadReservation({ generation: 1, reservation: { key: 0xabn, scope: 0, type: 5 } }, 100)).to.deep.equal(held);
      expect(decodeReadReservation(held)).to.deep.equal({ ok: true, value: { generation: 1, reservation: { key: 0xabn, scope: 0, type: 5 } }, truncated: false });
      const none = hex('00 00 00 07 00 00 00 00');
      expect(encodeReadReservation({ generation: 7 }, 100)).to.deep.equal(none);
      expect(decodeReadReservation(none)).to.deep.equal({ ok: true, value: { generation: 7 }, truncated: false });
      const cut = encodeReadReservation({ generation: 1, reservation: { key: 0xabn, scope: 0, type: 5 } }, 10);
      expect(cut).to.deep.equal(held.subarray(0, 10));
      expect(decodeReadReservation(cut)).to.deep.equal({ ok: true, value: { generation: 1 }, truncated: true });
    });

    it('REPORT CAPABILITIES golden vector: LIO-like bits and the 0xEA01 type mask', () => {
      const caps: Capabilities = {
        replaceLostReservation: false,
        crh: true,
        sipC: true,
        atpC: true,
        ptplC: true,
        tmv: true,
        allowCommands: 1,
        ptplA: true,
        types: [7, 6, 5, 3, 1, 8],
      };
      const bytes = hex('00 08 1d 91 ea 01 00 00');
      expect(encodeReportCapabilities(caps, 8)).to.deep.equal(bytes);
      expect(decodeReportCapabilities(bytes)).to.deep.equal({ ok: true, value: caps, truncated: false });
      expect(encodeReportCapabilities({ ...caps, replaceLostReservation: true, crh: false, ptplA: false, allowCommands: 5, types: [1] }, 8)).to.deep.equal(hex('00 08 8d d0 02 00 00 00'));
      expect(encodeReportCapabilities(caps, 4)).to.deep.equal(hex('00 08 1d 91'));
    });

    it('READ FULL STATUS golden vector', () => {
      const descriptor: FullStatusDescriptor = { key: 0xabn, allTgPt: false, holder: true, scope: 0, type: 1, relativeTargetPort: 1, transportId: FC_ID };
      const bytes = Buffer.concat([
        hex(`00 00 00 02 00 00 00 30 | 00 00 00 00 00 00 00 ab | 00 00 00 00 | 01 | 01 | 00 00 00 00 | 00 01 | 00 00 00 18`),
        FC_BYTES,
      ]);
      expect(encodeReadFullStatus({ generation: 2, descriptors: [descriptor] }, 8192)).to.deep.equal(bytes);
      expect(decodeReadFullStatus(bytes)).to.deep.equal({ ok: true, value: { generation: 2, descriptors: [descriptor] }, truncated: false });
      const two = encodeReadFullStatus({ generation: 2, descriptors: [descriptor, { ...descriptor, holder: false, allTgPt: true, type: 0, transportId: ISCSI_PORT_ID }] }, 8192);
      expect(two.readUInt32BE(4)).to.equal(48 + 24 + 28);
      expect(two[8 + 48 + 12]).to.equal(0x02);
      const cut = two.subarray(0, 60);
      expect(decodeReadFullStatus(cut)).to.deep.equal({ ok: true, value: { generation: 2, descriptors: [descriptor] }, truncated: true });
    });

    it('round-trips random data and truncates at any allocation length without changing the header', () => {
      fc.assert(
        fc.property(
          fc.nat(0xffffffff),
          fc.array(u64, { maxLength: 20 }),
          fc.integer({ min: 0, max: 400 }),
          (generation, keys, allocationLength) => {
            const full = encodeReadKeys({ generation, keys }, 0xffff);
            expect(decodeReadKeys(full)).to.deep.equal({ ok: true, value: { generation, keys }, truncated: false });
            const cut = encodeReadKeys({ generation, keys }, allocationLength);
            expect(cut).to.deep.equal(full.subarray(0, Math.min(full.length, allocationLength)));
            if (cut.length >= 8) expect(cut.readUInt32BE(4)).to.equal(8 * keys.length);
          },
        ),
      );
      fc.assert(
        fc.property(fc.nat(0xffffffff), fc.array(descriptorArb, { maxLength: 5 }), fc.integer({ min: 0, max: 600 }), (generation, descriptors, allocationLength) => {
          const full = encodeReadFullStatus({ generation, descriptors }, 0xffff);
          expect(decodeReadFullStatus(full)).to.deep.equal({ ok: true, value: { generation, descriptors }, truncated: false });
          const cut = encodeReadFullStatus({ generation, descriptors }, allocationLength);
          expect(cut).to.deep.equal(full.subarray(0, Math.min(full.length, allocationLength)));
          const decoded = decodeReadFullStatus(cut);
          if (cut.length >= 8) {
            expect(decoded.ok).to.equal(true);
            if (decoded.ok) expect(decoded.value.descriptors).to.deep.equal(descriptors.slice(0, decoded.value.descriptors.length));
          }
        }),
      );
      fc.assert(
        fc.property(
          fc.record({
            replaceLostReservation: fc.boolean(),
            crh: fc.boolean(),
            sipC: fc.boolean(),
            atpC: fc.boolean(),
            ptplC: fc.boolean(),
            tmv: fc.boolean(),
            allowCommands: fc.integer({ min: 0, max: 7 }),
            ptplA: fc.boolean(),
            types: fc.subarray([7, 6, 5, 3, 1, 8]),
          }),
          (caps) => {
            expect(decodeReportCapabilities(encodeReportCapabilities(caps, 8))).to.deep.equal({ ok: true, value: caps, truncated: false });
          },
        ),
      );
    });

    const decoderErrors: Array<[string, () => { ok: boolean }]> = [
      ['READ KEYS shorter than its header', () => decodeReadKeys(Buffer.alloc(7))],
      ['READ KEYS with an additional length not a multiple of 8', () => decodeReadKeys(hex('00 00 00 00 00 00 00 04 00 00 00 00'))],
      ['READ RESERVATION shorter than its header', () => decodeReadReservation(Buffer.alloc(4))],
      ['READ RESERVATION with additional length 8', () => decodeReadReservation(hex(`00 00 00 00 00 00 00 08 ${zeros(8)}`))],
      ['REPORT CAPABILITIES shorter than 8 bytes', () => decodeReportCapabilities(hex('00 08 00 00 00 00'))],
      ['REPORT CAPABILITIES with LENGTH 6', () => decodeReportCapabilities(hex('00 06 00 00 00 00 00 00'))],
      ['REPORT CAPABILITIES with an undefined type-mask bit', () => decodeReportCapabilities(hex('00 08 00 80 01 00 00 00'))],
      ['READ FULL STATUS shorter than its header', () => decodeReadFullStatus(Buffer.alloc(3))],
      [
        'READ FULL STATUS with a malformed TransportID',
        () => decodeReadFullStatus(Buffer.concat([hex(`00 00 00 00 00 00 00 30 | ${zeros(20)} 00 00 00 18`), hex(`02 ${zeros(23)}`)])),
      ],
      [
        'READ FULL STATUS whose additional length ends inside a descriptor',
        () => decodeReadFullStatus(Buffer.concat([hex(`00 00 00 00 00 00 00 34 | ${zeros(20)} 00 00 00 18`), FC_BYTES, Buffer.alloc(4)])),
      ],
      [
        'READ FULL STATUS whose descriptor length disagrees with its TransportID',
        () => decodeReadFullStatus(Buffer.concat([hex(`00 00 00 00 00 00 00 34 | ${zeros(20)} 00 00 00 1c`), FC_BYTES, Buffer.alloc(4)])),
      ],
    ];
    for (const [what, decode] of decoderErrors) {
      it(`rejects ${what}`, () => {
        const decoded = decode() as { ok: boolean; reason?: string };
        expect(decoded.ok).to.equal(false);
        expect(decoded.reason).to.be.a('string').that.is.not.empty;
      });
    }

    it('refuses bad encoder arguments', () => {
      expect(() => encodeReadKeys({ generation: 0, keys: [] }, -1)).to.throw(RangeError);
      expect(() => encodeReadKeys({ generation: 0, keys: [] }, 0x10000)).to.throw(RangeError);
      const caps: Capabilities = { crh: false, sipC: false, atpC: false, ptplC: false, tmv: true, allowCommands: 8, ptplA: false, types: [] };
      expect(() => encodeReportCapabilities(caps, 8)).to.throw(RangeError);
      expect(() => encodeReportCapabilities({ ...caps, allowCommands: 0, types: [2] }, 8)).to.throw(RangeError);
    });

    it('decoders never throw on arbitrary bytes', () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
          decodeReadKeys(bytes);
          decodeReadReservation(bytes);
          decodeReportCapabilities(bytes);
          decodeReadFullStatus(bytes);
        }),
      );
    });
  });
});

function expectSense(result: { ok: true } | { ok: false; sense: SenseCondition }, expected: SenseCondition): void {
  expect(result.ok, 'decode should fail').to.equal(false);
  if (!result.ok) expect(result.sense).to.deep.equal(expected);
}

const ISCSI_NAME_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:'.split('');
const HEX_CHARS = '0123456789abcdefABCDEF'.split('');
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });

const transportIdArb: fc.Arbitrary<TransportId> = fc.oneof(
  u64.map((portName): TransportId => ({ protocol: 'fc', portName })),
  u64.map((sasAddress): TransportId => ({ protocol: 'sas', sasAddress })),
  fc
    .tuple(
      fc.array(fc.constantFrom(...ISCSI_NAME_CHARS), { minLength: 1, maxLength: 223 }).map((chars) => chars.join('')),
      fc.option(fc.array(fc.constantFrom(...HEX_CHARS), { minLength: 12, maxLength: 12 }).map((chars) => chars.join('')), { nil: undefined }),
    )
    .map(([name, isid]): TransportId => (isid === undefined ? { protocol: 'iscsi', name } : { protocol: 'iscsi', name, isid })),
);

const descriptorArb: fc.Arbitrary<FullStatusDescriptor> = fc.record({
  key: u64,
  allTgPt: fc.boolean(),
  holder: fc.boolean(),
  scope: fc.integer({ min: 0, max: 15 }),
  type: fc.integer({ min: 0, max: 15 }),
  relativeTargetPort: fc.integer({ min: 0, max: 0xffff }),
  transportId: transportIdArb,
});
