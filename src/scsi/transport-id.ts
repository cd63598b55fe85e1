// SCSI TransportIDs (SPC-4 'TransportID identifiers') for the three protocols a PR initiator is named by
// here: Fibre Channel, SAS and iSCSI. Pure codecs; the decoder never throws.

import { ProtocolId } from './constants';

export type TransportId =
  | { protocol: 'fc'; portName: bigint }
  | { protocol: 'sas'; sasAddress: bigint }
  /** `isid` present: format 01b (initiator port, "name,i,0x<isid>"); absent: format 00b (device name). */
  | { protocol: 'iscsi'; name: string; isid?: string };

export type DecodedTransportId = { ok: true; id: TransportId; length: number } | { ok: false; reason: string };

/** FC and SAS TransportIDs are always 24 bytes. */
export const FIXED_TRANSPORT_ID_LENGTH = 24;
/** SPC-4 FC TransportID: N_PORT_NAME in bytes 8..15. */
const FC_PORT_NAME_OFFSET = 8;
/** SPC-4 SAS TransportID: SAS ADDRESS in bytes 4..11. */
const SAS_ADDRESS_OFFSET = 4;
/** SPC-4 (iSCSI TransportID): the iSCSI ADDITIONAL LENGTH is at least 20 and a multiple of 4. */
export const ISCSI_MIN_ADDITIONAL_LENGTH = 20;
/**
 * Largest iSCSI ADDITIONAL LENGTH accepted. qemu-pr-helper refuses more than 252
 * (libmpathpersist's struct transportid), and a format-01b id built from the longest
 * legal name (223 bytes) needs only 244.
 */
export const ISCSI_MAX_ADDITIONAL_LENGTH = 252;
/** RFC 3720 3.2.6.1: an iSCSI name is at most 223 bytes. */
export const ISCSI_NAME_MAX_LENGTH = 223;

const FORMAT_DEVICE_NAME = 0x0;
const FORMAT_PORT_IDENTIFIER = 0x1;
const ISID_SEPARATOR = ',i,0x';
const U64_MAX = (1n << 64n) - 1n;

function isValidIscsiName(name: string): boolean {
  // Printable ASCII without blanks; a comma would make "name" and "name,i,0x…" ambiguous.
  return name.length > 0 && name.length <= ISCSI_NAME_MAX_LENGTH && /^[\x21-\x2b\x2d-\x7e]+$/.test(name);
}

function isValidIsid(isid: string): boolean {
  // The ISID is 6 bytes, written as 12 hexadecimal characters.
  return /^[0-9a-fA-F]{12}$/.test(isid);
}

function checkU64(name: string, value: bigint): void {
  if (typeof value !== 'bigint' || value < 0n || value > U64_MAX) throw new RangeError(`${name} must be a 64-bit unsigned bigint`);
}

function iscsiText(id: { name: string; isid?: string }): string {
  return id.isid === undefined ? id.name : `${id.name}${ISID_SEPARATOR}${id.isid}`;
}

/** An FC or SAS TransportID: the protocol identifier, then one 64-bit name at `offset`. */
function encodeFixedLength(protocolId: number, field: string, name: bigint, offset: number): Buffer {
  checkU64(field, name);
  const out = Buffer.alloc(FIXED_TRANSPORT_ID_LENGTH);
  out[0] = protocolId;
  out.writeBigUInt64BE(name, offset);
  return out;
}

/** Encodes a TransportID. Throws RangeError for values that cannot be represented. */
export function encodeTransportId(id: TransportId): Buffer {
  switch (id.protocol) {
    case 'fc':
      return encodeFixedLength(ProtocolId.FC, 'portName', id.portName, FC_PORT_NAME_OFFSET);
    case 'sas':
      return encodeFixedLength(ProtocolId.SAS, 'sasAddress', id.sasAddress, SAS_ADDRESS_OFFSET);
    case 'iscsi': {
      if (!isValidIscsiName(id.name)) throw new RangeError(`invalid iSCSI name ${JSON.stringify(id.name)}`);
      if (id.isid !== undefined && !isValidIsid(id.isid)) throw new RangeError(`invalid ISID ${JSON.stringify(id.isid)} (12 hex digits)`);
      const text = Buffer.from(iscsiText(id), 'ascii');
      const additionalLength = Math.max(ISCSI_MIN_ADDITIONAL_LENGTH, Math.ceil((text.length + 1) / 4) * 4);
      const out = Buffer.alloc(4 + additionalLength); // zero fill supplies the NUL and the padding
      out[0] = ((id.isid === undefined ? FORMAT_DEVICE_NAME : FORMAT_PORT_IDENTIFIER) << 6) | ProtocolId.ISCSI;
      out.writeUInt16BE(additionalLength, 2);
      text.copy(out, 4);
      return out;
    }
    default:
      throw new RangeError(`unknown TransportID protocol ${(id as { protocol: unknown }).protocol}`);
  }
}

/**
 * Decodes the TransportID that starts at `offset`. `length` is how many bytes it
 * occupies. Reserved bits 5..4 of byte 0 are ignored (as qemu-pr-helper and LIO do);
 * bytes after the iSCSI name's NUL are padding and are not inspected.
 */
export function decodeTransportId(buf: Uint8Array, offset: number): DecodedTransportId {
  if (!Number.isInteger(offset) || offset < 0 || offset >= buf.length) return { ok: false, reason: 'no TransportID at this offset' };
  const format = buf[offset] >> 6;
  const protocol = buf[offset] & 0x0f;
  const available = buf.length - offset;
  const view = Buffer.from(buf.buffer, buf.byteOffset + offset, available);
  switch (protocol) {
    case ProtocolId.FC:
    case ProtocolId.SAS: {
      const what = protocol === ProtocolId.FC ? 'FC' : 'SAS';
      if (format !== FORMAT_DEVICE_NAME) return { ok: false, reason: `${what} TransportID with format code ${format}` };
      if (available < FIXED_TRANSPORT_ID_LENGTH) return { ok: false, reason: `${what} TransportID truncated (${available} of 24 bytes)` };
      const id: TransportId =
        protocol === ProtocolId.FC
          ? { protocol: 'fc', portName: view.readBigUInt64BE(FC_PORT_NAME_OFFSET) }
          : { protocol: 'sas', sasAddress: view.readBigUInt64BE(SAS_ADDRESS_OFFSET) };
      return { ok: true, id, length: FIXED_TRANSPORT_ID_LENGTH };
    }
    case ProtocolId.ISCSI: {
      if (format !== FORMAT_DEVICE_NAME && format !== FORMAT_PORT_IDENTIFIER) return { ok: false, reason: `iSCSI TransportID with format code ${format}` };
      if (available < 4) return { ok: false, reason: 'iSCSI TransportID header truncated' };
      const additionalLength = view.readUInt16BE(2);
      // SPC-4 asks senders for at least 20, but LIO and qemu-pr-helper accept shorter
      // ids, and sg_persist users do send them, so only the hard limits are enforced.
      if (additionalLength === 0 || additionalLength % 4 !== 0) return { ok: false, reason: `iSCSI additional length ${additionalLength} is not a positive multiple of 4` };
      if (additionalLength > ISCSI_MAX_ADDITIONAL_LENGTH) return { ok: false, reason: `iSCSI additional length ${additionalLength} exceeds ${ISCSI_MAX_ADDITIONAL_LENGTH}` };
      if (available < 4 + additionalLength) return { ok: false, reason: `iSCSI TransportID truncated (${available} of ${4 + additionalLength} bytes)` };
      const field = view.subarray(4, 4 + additionalLength);
      const nul = field.indexOf(0);
      if (nul < 0) return { ok: false, reason: 'iSCSI name is not NUL-terminated' };
      const text = field.subarray(0, nul).toString('latin1');
      let id: TransportId;
      if (format === FORMAT_DEVICE_NAME) {
        id = { protocol: 'iscsi', name: text };
      } else {
        const at = text.toLowerCase().lastIndexOf(ISID_SEPARATOR);
        if (at < 0) return { ok: false, reason: 'iSCSI port identifier lacks the ",i,0x" separator' };
        id = { protocol: 'iscsi', name: text.slice(0, at), isid: text.slice(at + ISID_SEPARATOR.length) };
        if (!isValidIsid(id.isid!)) return { ok: false, reason: `invalid ISID ${JSON.stringify(id.isid)}` };
      }
      if (!isValidIscsiName(id.name)) return { ok: false, reason: `invalid iSCSI name ${JSON.stringify(id.name)}` };
      return { ok: true, id, length: 4 + additionalLength };
    }
    default:
      return { ok: false, reason: `unsupported protocol identifier 0x${protocol.toString(16)}` };
  }
}

function hex64(value: bigint): string {
  return `0x${value.toString(16).padStart(16, '0')}`;
}

/**
 * A canonical string for comparing and indexing initiators. iSCSI names compare
 * case-insensitively (RFC 3720 3.2.6.1: names are normalised with stringprep, which
 * lower-cases them), so the key is lower-cased; so is the ISID's hex.
 */
export function transportIdKey(id: TransportId): string {
  switch (id.protocol) {
    case 'fc':
      return `fc:${hex64(id.portName)}`;
    case 'sas':
      return `sas:${hex64(id.sasAddress)}`;
    case 'iscsi':
      return `iscsi:${iscsiText(id).toLowerCase()}`;
  }
}

export function sameTransportId(a: TransportId, b: TransportId): boolean {
  return transportIdKey(a) === transportIdKey(b);
}

/** One line, in the spirit of sg_persist's READ FULL STATUS output. */
export function formatTransportId(id: TransportId): string {
  switch (id.protocol) {
    case 'fc':
      return `FCP-2 World Wide Name: ${hex64(id.portName)}`;
    case 'sas':
      return `SAS address: ${hex64(id.sasAddress)}`;
    case 'iscsi':
      return id.isid === undefined ? `iSCSI name: ${id.name}` : `iSCSI initiator port: ${id.name}, ISID: 0x${id.isid}`;
  }
}

function parseHex64(text: string, what: string): bigint {
  const digits = text.replace(/^0x/i, '');
  if (!/^[0-9a-fA-F]{1,16}$/.test(digits)) throw new RangeError(`${what} must be up to 16 hex digits, got ${JSON.stringify(text)}`);
  return BigInt(`0x${digits}`);
}

/**
 * Parses a TransportID as sg_persist's --transport-id accepts it:
 * "fc,<16 hex>" (or "fcp,"), "sas,<16 hex>", an iSCSI name ("iqn.…", "eui.…", "naa.…",
 * or "iscsi,<name>"), an iSCSI port "<name>,i,0x<isid>", or the raw TransportID bytes
 * as hex, separated by commas or blanks. Throws RangeError with a readable message.
 */
export function parseTransportId(text: string): TransportId {
  const trimmed = text.trim();
  const lower = trimmed.toLowerCase();
  const fc = /^fcp?,(.*)$/i.exec(trimmed);
  if (fc) return { protocol: 'fc', portName: parseHex64(fc[1], 'FC port name') };
  const sas = /^sas,(.*)$/i.exec(trimmed);
  if (sas) return { protocol: 'sas', sasAddress: parseHex64(sas[1], 'SAS address') };
  const iscsiPrefixed = /^iscsi,(.*)$/i.exec(trimmed);
  if (iscsiPrefixed || /^(iqn|eui|naa)\./.test(lower)) {
    const body = iscsiPrefixed ? iscsiPrefixed[1] : trimmed;
    const at = body.toLowerCase().lastIndexOf(ISID_SEPARATOR);
    let id: TransportId;
    if (at < 0) {
      id = { protocol: 'iscsi', name: body };
    } else {
      const isidDigits = body.slice(at + ISID_SEPARATOR.length);
      if (!/^[0-9a-fA-F]{1,12}$/.test(isidDigits)) throw new RangeError(`invalid ISID ${JSON.stringify(isidDigits)}`);
      id = { protocol: 'iscsi', name: body.slice(0, at), isid: isidDigits.padStart(12, '0') };
    }
    if (!isValidIscsiName(id.name)) throw new RangeError(`invalid iSCSI name ${JSON.stringify(id.name)}`);
    return id;
  }
  const tokens = trimmed.split(/[\s,]+/).filter((t) => t.length > 0);
  if (tokens.length > 0 && tokens.every((t) => /^(0x)?[0-9a-fA-F]{1,2}$/i.test(t))) {
    const bytes = Buffer.from(tokens.map((t) => parseInt(t.replace(/^0x/i, ''), 16)));
    const decoded = decodeTransportId(bytes, 0);
    if (!decoded.ok) throw new RangeError(`invalid TransportID bytes: ${decoded.reason}`);
    if (decoded.length !== bytes.length) throw new RangeError(`TransportID bytes: ${bytes.length - decoded.length} trailing bytes`);
    return decoded.id;
  }
  throw new RangeError(`unrecognised TransportID ${JSON.stringify(text)} (expected fc,<hex>, sas,<hex>, iqn.…[,i,0x<isid>] or hex bytes)`);
}
