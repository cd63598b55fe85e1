// The pure halves of ffi/libmpathpersist.ts: turning what the library leaves in struct prin_resp
// back into SCSI data-in, and laying out struct prout_param_descriptor. The library itself is
// emulated here, step by step from libmpathpersist/mpath_pr_ioctl.c (0.9.4): it copies the
// device's answer into the struct (at most mx_resp_len bytes) and converts some fields to
// host order. The SCSI side is checked with the project's own SPC codecs in src/scsi.

import { expect } from 'chai';
import {
  decodePrinResponse,
  layoutProutParam,
  MPATH_F_SPEC_I_PT_MASK,
  MPATH_PRIN,
  MPATH_PROTOCOL_ID,
  MPATH_WWUI_PORT_IDENTIFIER,
  patchProutPointers,
  PrinDecodeError,
  prinResponseBytes,
  PROUT_TRNPTID_LIST_OFFSET,
  ProutParamError,
  RFSTAT_MAX_SAFE_DESCRIPTORS,
  type PrinDecoded,
} from '../../ffi/libmpathpersist';
import { PrType } from '../../src/scsi/constants';
import {
  decodeReadFullStatus,
  encodeReadFullStatus,
  encodeReadKeys,
  encodeReadReservation,
  type FullStatusDescriptor,
} from '../../src/scsi/pr-in-data';
import { encodeTransportId } from '../../src/scsi/transport-id';

/** get_prin_length() of 0.9.4 with mpath_mx_alloc_len = 0. */
function mxRespLen(sa: number): number {
  return [8192, 24, 8, 8192][sa];
}

/** prin_do_scsi_ioctl + mpath_format_* of 0.9.4, applied to what the device answered. */
function libraryFill(sa: number, device: Buffer): Buffer {
  const resp = Buffer.alloc(prinResponseBytes(sa));
  device.copy(resp, 0, 0, Math.min(mxRespLen(sa), device.length));
  if (sa === MPATH_PRIN.READ_KEYS || sa === MPATH_PRIN.READ_RESERVATION) {
    resp.writeUInt32LE(resp.readUInt32BE(0), 0);
    resp.writeUInt32LE(resp.readUInt32BE(4), 4);
  } else if (sa === MPATH_PRIN.REPORT_CAPABILITIES) {
    resp.writeUInt16LE(resp.readUInt16BE(0), 0);
    resp.writeUInt16LE(resp.readUInt16BE(4), 4);
  } else {
    resp.writeUInt32LE(resp.readUInt32BE(0), 0);
    const additionalLength = resp.readUInt32BE(4);
    resp.writeUInt32LE(additionalLength, 4);
    if (additionalLength === 0 || additionalLength > 8192) return resp;
    const temp = Buffer.from(resp.subarray(8, 8 + 8192));
    resp.fill(0, 8, 8 + 8192);
    let count = 0;
    for (let k = 0; k < additionalLength; ) {
      const p = temp.subarray(k);
      let tidLen = p.length >= 24 ? p.readUInt32BE(20) : 0;
      if (tidLen + 24 + k > additionalLength) tidLen = (additionalLength - k - 24) >>> 0;
      const entry = 8 + 270 * count;
      p.copy(resp, entry, 0, 8);
      resp[entry + 8] = p[12];
      resp[entry + 9] = p[13];
      resp.writeUInt16LE(p.readUInt16BE(18), entry + 10);
      if (tidLen > 0 && tidLen < 0x80000000) {
        const t = p.subarray(24);
        resp[entry + 12] = (t[0] >> 6) & 3;
        const protocol = t[0] & 0xf;
        resp[entry + 13] = protocol;
        if (protocol === 0) t.copy(resp, entry + 14, 8, 16);
        else if (protocol === 6) t.copy(resp, entry + 14, 4, 12);
        else if (protocol === 5) {
          const n = Math.min(t.readUInt16BE(2), 256);
          t.copy(resp, entry + 14, 4, 4 + n);
        }
      }
      resp.writeBigUInt64LE(0xdeadbeefn + BigInt(count), 8200 + 8 * count); // descriptors[count]
      count++;
      k += (24 + tidLen) >>> 0;
    }
    resp.writeUInt32LE(count, 4);
  }
  return resp;
}

function padTo(buf: Buffer, allocationLength: number): Buffer {
  const size = Math.min(8192, allocationLength);
  const out = Buffer.alloc(size);
  buf.copy(out, 0, 0, Math.min(buf.length, size));
  return out;
}

function decoded(sa: number, device: Buffer, allocationLength: number): PrinDecoded {
  const result = decodePrinResponse(sa, libraryFill(sa, device), allocationLength);
  if ('refused' in result) throw new Error(result.refused);
  return result;
}

const ALLOCATION_LENGTHS = [0, 4, 8, 12, 20, 24, 40, 255, 8192, 8193, 65535];

describe('libmpathpersist PR IN answers → SCSI data-in (as qemu-pr-helper builds it)', function () {
  it('READ KEYS: header in big-endian, keys raw, cut and zero-padded to min(8192, allocation length)', function () {
    const device = encodeReadKeys({ generation: 0x01020304, keys: [0x1111n, 0xabcdef0123456789n, 0x42n] }, 8192);
    for (const alloc of ALLOCATION_LENGTHS) {
      const d = decoded(MPATH_PRIN.READ_KEYS, device, alloc);
      expect(d.wire.equals(padTo(device, alloc)), `allocation length ${alloc}`).to.equal(true);
    }
    const d = decoded(MPATH_PRIN.READ_KEYS, device, 8192);
    expect(d).to.deep.include({ kind: 'read-keys', generation: 0x01020304, additionalLength: 24 });
    expect(d.kind === 'read-keys' && d.keys).to.deep.equal([0x1111n, 0xabcdef0123456789n, 0x42n]);
  });

  it('READ KEYS with no keys', function () {
    const device = encodeReadKeys({ generation: 9, keys: [] }, 8192);
    const d = decoded(MPATH_PRIN.READ_KEYS, device, 100);
    expect(d.wire.equals(padTo(device, 100))).to.equal(true);
    expect(d.kind === 'read-keys' && d.keys).to.deep.equal([]);
  });

  it('READ KEYS beyond the 8192-byte transfer keeps the full additional length and the keys that arrived', function () {
    const keys = Array.from({ length: 1100 }, (_, i) => BigInt(i + 1));
    const device = encodeReadKeys({ generation: 1, keys }, 65535);
    const d = decoded(MPATH_PRIN.READ_KEYS, device, 65535);
    expect(d.wire).to.have.length(8192);
    expect(d.wire.readUInt32BE(4)).to.equal(8800);
    expect(d.wire.equals(device.subarray(0, 8192))).to.equal(true);
    expect(d.kind === 'read-keys' && d.keys.length).to.equal(1023);
  });

  it('READ RESERVATION with and without a reservation', function () {
    const held = encodeReadReservation({ generation: 5, reservation: { key: 0xfeedn, scope: 0, type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY } }, 8192);
    for (const alloc of ALLOCATION_LENGTHS) {
      expect(decoded(MPATH_PRIN.READ_RESERVATION, held, alloc).wire.equals(padTo(held, alloc)), `allocation length ${alloc}`).to.equal(true);
    }
    const d = decoded(MPATH_PRIN.READ_RESERVATION, held, 24);
    expect(d.kind === 'read-reservation' && d.reservation).to.deep.equal({ key: 0xfeedn, scope: 0, type: 5 });

    const none = encodeReadReservation({ generation: 6 }, 8192);
    const n = decoded(MPATH_PRIN.READ_RESERVATION, none, 24);
    expect(n.wire.equals(padTo(none, 24))).to.equal(true);
    expect(n.kind === 'read-reservation' && n.reservation).to.equal(undefined);
  });

  it('REPORT CAPABILITIES: length and type mask back to big-endian, flags untouched', function () {
    const device = Buffer.from([0x00, 0x08, 0x1d, 0x81, 0xea, 0x01, 0x00, 0x00]);
    for (const alloc of ALLOCATION_LENGTHS) {
      expect(decoded(MPATH_PRIN.REPORT_CAPABILITIES, device, alloc).wire.equals(padTo(device, alloc)), `allocation length ${alloc}`).to.equal(true);
    }
    const d = decoded(MPATH_PRIN.REPORT_CAPABILITIES, device, 8);
    expect(d).to.deep.include({ kind: 'report-capabilities', length: 8, typeMask: 0xea01 });
    expect(d.kind === 'report-capabilities' && d.flags).to.deep.equal([0x1d, 0x81]);
  });

  describe('READ FULL STATUS', function () {
    /** A registration that holds no reservation, unless `fields` say otherwise. */
    const descriptor = (fields: Pick<FullStatusDescriptor, 'key' | 'relativeTargetPort' | 'transportId'> & Partial<FullStatusDescriptor>): FullStatusDescriptor => ({
      allTgPt: false,
      holder: false,
      scope: 0,
      type: 0,
      ...fields,
    });
    const fc = descriptor({
      key: 0x1234n,
      holder: true,
      type: PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
      relativeTargetPort: 3,
      transportId: { protocol: 'fc', portName: 0x2100001b32a1b2c3n },
    });
    const sas = descriptor({ key: 0x99n, allTgPt: true, relativeTargetPort: 1, transportId: { protocol: 'sas', sasAddress: 0x5000c50012345678n } });
    const iscsi = descriptor({
      key: 0xabcdefn,
      relativeTargetPort: 2,
      transportId: { protocol: 'iscsi', name: 'iqn.2003-01.org.linux-iscsi.host1', isid: '23d000000001' },
    });

    it('rebuilds FC, SAS and iSCSI descriptors that decode to what the device sent', function () {
      const device = encodeReadFullStatus({ generation: 77, descriptors: [fc, sas, iscsi] }, 8192);
      const d = decoded(MPATH_PRIN.READ_FULL_STATUS, device, 8192);
      expect(d.kind).to.equal('read-full-status');
      const back = decodeReadFullStatus(d.wire);
      expect(back.ok, back.ok ? '' : back.reason).to.equal(true);
      if (!back.ok) return;
      expect(back.value.generation).to.equal(77);
      expect(back.value.descriptors).to.deep.equal([fc, sas, iscsi]);
      expect(back.truncated).to.equal(false);
    });

    it('cuts to the allocation length', function () {
      const device = encodeReadFullStatus({ generation: 1, descriptors: [fc, sas] }, 8192);
      const d = decoded(MPATH_PRIN.READ_FULL_STATUS, device, 30);
      expect(d.wire).to.have.length(30);
      expect(d.wire.readUInt32BE(4)).to.equal(96);
    });

    it(`accepts ${RFSTAT_MAX_SAFE_DESCRIPTORS} descriptors and refuses more (they overflow the library's buffer)`, function () {
      const many = (n: number) => encodeReadFullStatus({ generation: 1, descriptors: Array.from({ length: n }, (_, i) => ({ ...fc, key: BigInt(i + 1), holder: false })) }, 8192);
      const ok = decodePrinResponse(MPATH_PRIN.READ_FULL_STATUS, libraryFill(MPATH_PRIN.READ_FULL_STATUS, many(30)), 8192);
      expect('refused' in ok).to.equal(false);
      const refused = decodePrinResponse(MPATH_PRIN.READ_FULL_STATUS, libraryFill(MPATH_PRIN.READ_FULL_STATUS, many(31)), 8192);
      expect(refused).to.have.property('refused').that.matches(/31 descriptors/);
    });

    it('refuses an answer the library left unconverted (additional length over 8192)', function () {
      const device = Buffer.alloc(8192);
      device.writeUInt32BE(9000, 4);
      const r = decodePrinResponse(MPATH_PRIN.READ_FULL_STATUS, libraryFill(MPATH_PRIN.READ_FULL_STATUS, device), 8192);
      expect(r).to.have.property('refused');
    });

    it('reads an empty status', function () {
      const device = encodeReadFullStatus({ generation: 4, descriptors: [] }, 8192);
      const d = decoded(MPATH_PRIN.READ_FULL_STATUS, device, 8);
      expect(d.wire.equals(device)).to.equal(true);
    });
  });

  it('rejects allocation lengths that do not fit the CDB and unknown service actions', function () {
    const resp = Buffer.alloc(prinResponseBytes(0));
    expect(() => decodePrinResponse(0, resp, -1)).to.throw(PrinDecodeError);
    expect(() => decodePrinResponse(0, resp, 65536)).to.throw(PrinDecodeError);
    expect(() => decodePrinResponse(0, resp, 1.5)).to.throw(PrinDecodeError);
    expect(() => decodePrinResponse(4, resp, 8)).to.throw(PrinDecodeError);
  });
});

describe('libmpathpersist PR OUT parameter layout', function () {
  it('writes key and service action key big-endian, flags at byte 20, no transport IDs', function () {
    const layout = layoutProutParam({ key: 0x0102030405060708n, serviceActionKey: 0xa1a2a3a4a5a6a7a8n, flags: 0x05 });
    expect(layout.bytes).to.have.length(PROUT_TRNPTID_LIST_OFFSET);
    expect(layout.bytes.subarray(0, 24).toString('hex')).to.equal('0102030405060708' + 'a1a2a3a4a5a6a7a8' + '00000000' + '05000000');
    expect(layout.bytes.readUInt32LE(8216)).to.equal(0);
    expect(layout.pointers).to.deep.equal([]);
  });

  it('lays out transport IDs after the pointer list and points at them', function () {
    // struct transportid holds an iSCSI name as the SPC-4 TransportID does from ADDITIONAL LENGTH on (36: padded with NULs).
    const iscsiName = encodeTransportId({ protocol: 'iscsi', name: 'iqn.2003-01.org.linux-iscsi.host2' }).subarray(2);
    const layout = layoutProutParam({
      key: 1n,
      serviceActionKey: 2n,
      flags: MPATH_F_SPEC_I_PT_MASK,
      transportIds: [
        { formatCode: 0, protocolId: MPATH_PROTOCOL_ID.FC, name: Buffer.from('2100001b32a1b2c3', 'hex') },
        { formatCode: MPATH_WWUI_PORT_IDENTIFIER, protocolId: MPATH_PROTOCOL_ID.ISCSI, name: iscsiName },
      ],
    });
    const listAt = PROUT_TRNPTID_LIST_OFFSET;
    const firstTid = listAt + 16;
    expect(layout.bytes).to.have.length(firstTid + 2 * 258);
    expect(layout.bytes.readUInt32LE(8216)).to.equal(2);
    expect(layout.pointers).to.deep.equal([
      { at: listAt, target: firstTid },
      { at: listAt + 8, target: firstTid + 258 },
    ]);
    patchProutPointers(layout, 0x7f0000001000n);
    expect(layout.bytes.readBigUInt64LE(listAt)).to.equal(0x7f0000001000n + BigInt(firstTid));
    expect(layout.bytes.readBigUInt64LE(listAt + 8)).to.equal(0x7f0000001000n + BigInt(firstTid + 258));
    expect([layout.bytes[firstTid], layout.bytes[firstTid + 1]]).to.deep.equal([0, 0]);
    expect(layout.bytes.subarray(firstTid + 2, firstTid + 10).toString('hex')).to.equal('2100001b32a1b2c3');
    const second = firstTid + 258;
    expect([layout.bytes[second], layout.bytes[second + 1]]).to.deep.equal([0x40, 5]);
    expect(layout.bytes.subarray(second + 2, second + 2 + iscsiName.length).equals(iscsiName)).to.equal(true);
  });

  it('builds a fresh block on every call', function () {
    const params = { key: 1n, serviceActionKey: 0n, flags: 0 };
    expect(layoutProutParam(params).bytes).not.to.equal(layoutProutParam(params).bytes);
  });

  it('refuses what the struct cannot carry', function () {
    const base = { key: 1n, serviceActionKey: 0n, flags: 0 };
    const tid = { formatCode: 0, protocolId: 0, name: Buffer.alloc(8) };
    expect(() => layoutProutParam({ ...base, key: -1n })).to.throw(ProutParamError);
    expect(() => layoutProutParam({ ...base, serviceActionKey: 1n << 64n })).to.throw(ProutParamError);
    expect(() => layoutProutParam({ ...base, flags: 256 })).to.throw(ProutParamError);
    expect(() => layoutProutParam({ ...base, transportIds: Array(33).fill(tid) })).to.throw(ProutParamError, /32/);
    expect(() => layoutProutParam({ ...base, transportIds: [{ ...tid, protocolId: 1 }] })).to.throw(ProutParamError);
    expect(() => layoutProutParam({ ...base, transportIds: [{ ...tid, formatCode: 1 }] })).to.throw(ProutParamError, /0x40/);
    expect(() => layoutProutParam({ ...base, transportIds: [{ ...tid, name: Buffer.alloc(9) }] })).to.throw(ProutParamError);
    expect(() => layoutProutParam({ ...base, transportIds: [{ formatCode: 0, protocolId: 5, name: Buffer.alloc(257) }] })).to.throw(ProutParamError);
    expect(() => layoutProutParam({ ...base, transportIds: Array(32).fill(tid) })).not.to.throw();
  });
});
