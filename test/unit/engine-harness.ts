// A small driver for the PR engine in unit tests: one LU, named initiators, commands
// built with the real codecs and run through `execute`, so every test exercises the
// CDB and parameter-list decoding the backend relies on.

import { expect } from 'chai';
import { buildPrIn, buildPrOut } from '../../src/backends/pr-commands';
import { encodePrOutCdb } from '../../src/scsi/cdb';
import { PrInAction, PrOutAction, Status } from '../../src/scsi/constants';
import { encodePrOutParameters } from '../../src/scsi/parameter-list';
import { decodeReadFullStatus, decodeReadKeys, decodeReadReservation, decodeReportCapabilities } from '../../src/scsi/pr-in-data';
import { decodeSense, Sense, type ScsiResult, type SenseCondition, type SenseName } from '../../src/scsi/sense';
import type { TransportId } from '../../src/scsi/transport-id';
import { executeBytes } from '../support/pr-bytes';
import { defaultEngineOptions, initialState, nexusKey, type EngineOptions, type Nexus, type PrState } from '../../src/engine';

export const iscsi = (name: string, isid?: string): TransportId => (isid === undefined ? { protocol: 'iscsi', name } : { protocol: 'iscsi', name, isid });
export const nexus = (initiator: TransportId, targetPort = 1): Nexus => ({ initiator, targetPort });

export const HOST_A = iscsi('iqn.2026-01.test:host-a');
export const HOST_B = iscsi('iqn.2026-01.test:host-b');
export const HOST_C = iscsi('iqn.2026-01.test:host-c');

export interface OutFlags {
  aptpl?: boolean;
  allTgPt?: boolean;
  specIPT?: boolean;
  transportIds?: TransportId[];
}

export class Lu {
  state: PrState = initialState();
  constructor(public options: EngineOptions = defaultEngineOptions([1, 2])) {}

  run(n: Nexus, cdb: Uint8Array, dataOut: Uint8Array = Buffer.alloc(0)): ScsiResult {
    const before = this.state;
    const outcome = executeBytes(this.state, n, cdb, dataOut, this.options);
    expect(outcome.changed).to.equal(outcome.state !== before, 'changed must say whether a new state came back');
    this.state = outcome.state;
    return outcome.result;
  }

  out(n: Nexus, action: number, rk: bigint, sark: bigint, type = 0, flags: OutFlags = {}, scope = 0): ScsiResult {
    const params = encodePrOutParameters({
      reservationKey: rk,
      serviceActionKey: sark,
      specIPT: flags.specIPT ?? false,
      allTgPt: flags.allTgPt ?? false,
      aptpl: flags.aptpl ?? false,
      transportIds: flags.transportIds ?? [],
    });
    return this.run(n, encodePrOutCdb({ action, type, scope, parameterListLength: params.length }), params);
  }

  register(n: Nexus, rk: bigint, sark: bigint, flags: OutFlags = {}): ScsiResult {
    return this.out(n, PrOutAction.REGISTER, rk, sark, 0, flags);
  }
  registerIgnore(n: Nexus, sark: bigint, flags: OutFlags = {}, rk = 0n): ScsiResult {
    return this.out(n, PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, rk, sark, 0, flags);
  }
  reserve(n: Nexus, key: bigint, type: number): ScsiResult {
    return this.out(n, PrOutAction.RESERVE, key, 0n, type);
  }
  release(n: Nexus, key: bigint, type: number): ScsiResult {
    return this.out(n, PrOutAction.RELEASE, key, 0n, type);
  }
  clear(n: Nexus, key: bigint): ScsiResult {
    return this.out(n, PrOutAction.CLEAR, key, 0n);
  }
  preempt(n: Nexus, key: bigint, sark: bigint, type: number, abort = false): ScsiResult {
    return this.out(n, abort ? PrOutAction.PREEMPT_AND_ABORT : PrOutAction.PREEMPT, key, sark, type);
  }
  registerAndMove(n: Nexus, rk: bigint, sark: bigint, destination: TransportId, relativeTargetPort: number, flags: { unreg?: boolean; aptpl?: boolean } = {}): ScsiResult {
    const { cdb, dataOut } = buildPrOut({ action: 'register-move', reservationKey: rk, serviceActionKey: sark, transportIds: [destination], relativeTargetPort, ...flags });
    return this.run(n, cdb, dataOut);
  }

  prIn(n: Nexus, action: number, allocationLength = 8192): ScsiResult {
    return this.run(n, buildPrIn(action, allocationLength));
  }
  readKeys(n: Nexus) {
    return this.read(n, PrInAction.READ_KEYS, decodeReadKeys);
  }
  readReservation(n: Nexus) {
    return this.read(n, PrInAction.READ_RESERVATION, decodeReadReservation);
  }
  readFullStatus(n: Nexus) {
    return this.read(n, PrInAction.READ_FULL_STATUS, decodeReadFullStatus);
  }
  reportCapabilities(n: Nexus) {
    return this.read(n, PrInAction.REPORT_CAPABILITIES, decodeReportCapabilities);
  }

  /** A PR IN that must answer GOOD with data that decodes. */
  private read<T>(n: Nexus, action: number, decode: (data: Uint8Array) => { ok: true; value: T } | { ok: false; reason: string }): T {
    const decoded = decode(good(this.prIn(n, action)).dataIn);
    if (!decoded.ok) throw new Error(decoded.reason);
    return decoded.value;
  }

  /** The names of the unit attentions pending for a nexus, without consuming them. */
  pendingUnitAttentions(n: Nexus): readonly SenseName[] {
    return this.state.unitAttentions[nexusKey(n)] ?? [];
  }
}

/** A fresh LU where `holder` registered its key, then each of `others`, and the holder reserved with `type`. */
export function reservedLu(holder: readonly [Nexus, bigint], type: number, ...others: (readonly [Nexus, bigint])[]): Lu {
  const lu = new Lu();
  for (const [n, key] of [holder, ...others]) expectGood(lu.register(n, 0n, key));
  expectGood(lu.reserve(holder[0], holder[1], type));
  return lu;
}

export function good(result: ScsiResult): ScsiResult {
  expect(result.status, `expected GOOD, got status 0x${result.status.toString(16)} ${senseText(result)}`).to.equal(Status.GOOD);
  return result;
}

export function expectGood(result: ScsiResult): void {
  good(result);
}

export function expectConflict(result: ScsiResult): void {
  expect(result.status, `expected RESERVATION CONFLICT, got 0x${result.status.toString(16)} ${senseText(result)}`).to.equal(Status.RESERVATION_CONFLICT);
  expect(result.sense.length).to.equal(0);
}

export function expectCheck(result: ScsiResult, cond: SenseCondition): void {
  expect(result.status, `expected CHECK CONDITION, got 0x${result.status.toString(16)}`).to.equal(Status.CHECK_CONDITION);
  const sense = decodeSense(result.sense);
  expect(sense, 'sense data').to.not.equal(undefined);
  expect([sense!.key, sense!.asc, sense!.ascq]).to.deep.equal([cond.key, cond.asc, cond.ascq]);
}

export function expectUnitAttention(result: ScsiResult, name: 'RESERVATIONS_RELEASED' | 'RESERVATIONS_PREEMPTED' | 'REGISTRATIONS_PREEMPTED'): void {
  expectCheck(result, Sense[name]);
}

function senseText(result: ScsiResult): string {
  const s = decodeSense(result.sense);
  return s ? `sense ${s.key.toString(16)}/${s.asc.toString(16)}/${s.ascq.toString(16)}` : '';
}
