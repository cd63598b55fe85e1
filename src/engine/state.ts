// The persistent-reservation state of one logical unit, as plain immutable data, and
// its JSON form (bigints as "0x…" strings) for the emulated backend's store.

import { isPrType, PrType, LU_SCOPE } from '../scsi/constants';
import { Sense, type SenseName } from '../scsi/sense';
import { encodeTransportId, transportIdKey, type TransportId } from '../scsi/transport-id';

/** An I_T nexus: one initiator port talking to one target port of the LU. */
export interface Nexus {
  readonly initiator: TransportId;
  /** Relative target port identifier, 1..65535 (0 is reserved by SPC-4). */
  readonly targetPort: number;
}

export function nexusKey(n: Nexus): string {
  return `${transportIdKey(n.initiator)}@${n.targetPort}`;
}

export interface Registration {
  readonly initiator: TransportId;
  readonly targetPort: number;
  readonly key: bigint;
  /** Made by a REGISTER with ALL_TG_PT=1 (reported in READ FULL STATUS). */
  readonly allTgPt: boolean;
  /** The APTPL bit of the command that made or last changed this registration. */
  readonly aptpl: boolean;
}

/** `Reservation.holder` for the all-registrants types, where every registrant holds it. */
export const ALL_REGISTRANTS = 'all-registrants';

export interface Reservation {
  /** nexusKey of the holder, or ALL_REGISTRANTS. */
  readonly holder: string;
  readonly type: number;
  readonly scope: number;
}

export interface PrState {
  /** PRgeneration, a 32-bit counter. */
  readonly generation: number;
  /** One entry per registered I_T nexus, in registration order (READ KEYS order). */
  readonly registrations: readonly Registration[];
  readonly reservation: Reservation | null;
  /** Pending unit attentions per nexusKey, oldest first. */
  readonly unitAttentions: Readonly<Record<string, readonly SenseName[]>>;
  /** The APTPL bit most recently received with a successful registering command (PTPL_A). */
  readonly aptpl: boolean;
}

export function initialState(): PrState {
  return { generation: 0, registrations: [], reservation: null, unitAttentions: {}, aptpl: false };
}

export function isAllRegistrantsType(type: number): boolean {
  return type === PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS || type === PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
}

export function registrationKey(r: Registration): string {
  return nexusKey({ initiator: r.initiator, targetPort: r.targetPort });
}

// ---- JSON ----

const STATE_FORMAT_VERSION = 1;

function hex(value: bigint): string {
  return `0x${value.toString(16)}`;
}

function transportIdToJson(id: TransportId): unknown {
  switch (id.protocol) {
    case 'fc':
      return { protocol: 'fc', portName: hex(id.portName) };
    case 'sas':
      return { protocol: 'sas', sasAddress: hex(id.sasAddress) };
    case 'iscsi':
      return id.isid === undefined ? { protocol: 'iscsi', name: id.name } : { protocol: 'iscsi', name: id.name, isid: id.isid };
  }
}

export function serializeState(s: PrState): string {
  return JSON.stringify({
    version: STATE_FORMAT_VERSION,
    generation: s.generation,
    aptpl: s.aptpl,
    registrations: s.registrations.map((r) => ({
      initiator: transportIdToJson(r.initiator),
      targetPort: r.targetPort,
      key: hex(r.key),
      allTgPt: r.allTgPt,
      aptpl: r.aptpl,
    })),
    reservation: s.reservation && { holder: s.reservation.holder, type: s.reservation.type, scope: s.reservation.scope },
    unitAttentions: s.unitAttentions,
  });
}

class StateFormatError extends Error {
  constructor(message: string) {
    super(`invalid PR state: ${message}`);
    this.name = 'StateFormatError';
  }
}

function expect(condition: boolean, message: string): asserts condition {
  if (!condition) throw new StateFormatError(message);
}

function parseU64(value: unknown, what: string): bigint {
  expect(typeof value === 'string' && /^0x[0-9a-f]{1,16}$/.test(value), `${what} must be a "0x…" hex string of at most 16 digits`);
  return BigInt(value);
}

function parseBool(value: unknown, what: string): boolean {
  expect(typeof value === 'boolean', `${what} must be a boolean`);
  return value;
}

function parseTransportIdJson(value: unknown, what: string): TransportId {
  expect(typeof value === 'object' && value !== null, `${what} must be an object`);
  const v = value as Record<string, unknown>;
  switch (v.protocol) {
    case 'fc':
      return { protocol: 'fc', portName: parseU64(v.portName, `${what}.portName`) };
    case 'sas':
      return { protocol: 'sas', sasAddress: parseU64(v.sasAddress, `${what}.sasAddress`) };
    case 'iscsi': {
      expect(typeof v.name === 'string' && v.name.length > 0, `${what}.name must be a non-empty string`);
      if (v.isid === undefined) return { protocol: 'iscsi', name: v.name };
      expect(typeof v.isid === 'string' && /^[0-9a-fA-F]{12}$/.test(v.isid), `${what}.isid must be 12 hex digits`);
      return { protocol: 'iscsi', name: v.name, isid: v.isid };
    }
    default:
      throw new StateFormatError(`${what}.protocol ${JSON.stringify(v.protocol)} is unknown`);
  }
}

/**
 * Parses what serializeState wrote. Throws StateFormatError (with the offending field)
 * for anything else, including states that break the engine's invariants: duplicate
 * nexuses, or a reservation whose holder is not registered.
 */
export function parseState(text: string): PrState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new StateFormatError(`not JSON (${(err as Error).message})`);
  }
  expect(typeof raw === 'object' && raw !== null && !Array.isArray(raw), 'top level must be an object');
  const o = raw as Record<string, unknown>;
  expect(o.version === STATE_FORMAT_VERSION, `version must be ${STATE_FORMAT_VERSION}`);
  expect(Number.isInteger(o.generation) && (o.generation as number) >= 0 && (o.generation as number) <= 0xffffffff, 'generation must be a 32-bit unsigned integer');
  const aptpl = parseBool(o.aptpl, 'aptpl');
  expect(Array.isArray(o.registrations), 'registrations must be an array');
  const seen = new Set<string>();
  const registrations: Registration[] = (o.registrations as unknown[]).map((item, i) => {
    const what = `registrations[${i}]`;
    expect(typeof item === 'object' && item !== null, `${what} must be an object`);
    const r = item as Record<string, unknown>;
    expect(Number.isInteger(r.targetPort) && (r.targetPort as number) >= 1 && (r.targetPort as number) <= 0xffff, `${what}.targetPort must be 1..65535`);
    const initiator = parseTransportIdJson(r.initiator, `${what}.initiator`);
    try {
      // The engine encodes these in READ FULL STATUS, so they must be representable.
      encodeTransportId(initiator);
    } catch (err) {
      throw new StateFormatError(`${what}.initiator: ${(err as Error).message}`);
    }
    const reg: Registration = {
      initiator,
      targetPort: r.targetPort as number,
      key: parseU64(r.key, `${what}.key`),
      allTgPt: parseBool(r.allTgPt, `${what}.allTgPt`),
      aptpl: parseBool(r.aptpl, `${what}.aptpl`),
    };
    const k = registrationKey(reg);
    expect(!seen.has(k), `${what} duplicates nexus ${k}`);
    seen.add(k);
    return reg;
  });
  let reservation: Reservation | null = null;
  if (o.reservation !== null) {
    expect(typeof o.reservation === 'object' && o.reservation !== undefined, 'reservation must be an object or null');
    const r = o.reservation as Record<string, unknown>;
    expect(typeof r.type === 'number' && isPrType(r.type), 'reservation.type must be a reservation type');
    expect(r.scope === LU_SCOPE, 'reservation.scope must be LU_SCOPE');
    expect(typeof r.holder === 'string', 'reservation.holder must be a string');
    if (isAllRegistrantsType(r.type)) {
      expect(r.holder === ALL_REGISTRANTS && registrations.length > 0, 'an all-registrants reservation needs registrants and holder "all-registrants"');
    } else {
      expect(seen.has(r.holder), `reservation holder ${r.holder} is not registered`);
    }
    reservation = { holder: r.holder, type: r.type, scope: r.scope };
  }
  expect(typeof o.unitAttentions === 'object' && o.unitAttentions !== null && !Array.isArray(o.unitAttentions), 'unitAttentions must be an object');
  const unitAttentions: Record<string, SenseName[]> = {};
  for (const [nexus, list] of Object.entries(o.unitAttentions as Record<string, unknown>)) {
    expect(Array.isArray(list) && list.length > 0, `unitAttentions[${nexus}] must be a non-empty array`);
    unitAttentions[nexus] = (list as unknown[]).map((name) => {
      expect(typeof name === 'string' && Object.prototype.hasOwnProperty.call(Sense, name), `unitAttentions[${nexus}] has unknown condition ${JSON.stringify(name)}`);
      return name as SenseName;
    });
  }
  return { generation: o.generation as number, registrations, reservation, unitAttentions, aptpl };
}
