// Typed PR commands built on the one primitive every backend (and the protocol client)
// offers: run a CDB with a parameter list and get status, sense and data back.
// The CLI, the D-Bus service and the tests use these instead of hand-made CDBs.

import { PR_HELPER_DATA_SIZE, PrInAction, Status, LU_SCOPE } from '../scsi/constants';
import { encodePrInCdb, encodePrOutCdb } from '../scsi/cdb';
import {
  encodePrOutParameters,
  encodeRegisterAndMoveParameters,
} from '../scsi/parameter-list';
import {
  decodeReadFullStatus,
  decodeReadKeys,
  decodeReadReservation,
  decodeReportCapabilities,
  type Capabilities,
  type ReadFullStatusData,
  type ReadKeysData,
  type ReadReservationData,
} from '../scsi/pr-in-data';
import type { TransportId } from '../scsi/transport-id';
import { prOutAction, type PrOutActionName } from '../scsi/actions';
import { describeSense, decodeSense, type ScsiResult } from '../scsi/sense';
import { SenseKey } from '../scsi/constants';
import type { DeviceHandle, ExecuteOptions, PrBackend } from './backend';
import { admitCommand, type CommandGuard } from './admission';
import { decodePrCommand, type PrInCommand, type PrOutCommand } from '../scsi/pr-command';

/** Runs one command on one device; a backend bound to a handle, or a socket client. */
export type PrExecutor = (cdb: Buffer, dataOut: Buffer) => Promise<ScsiResult>;

/** A backend bound to a device, behind the same admission stage the protocol server uses. */
export function bindBackend(backend: PrBackend, device: DeviceHandle, options?: ExecuteOptions, guards: readonly CommandGuard[] = []): PrExecutor {
  return async (cdb, dataOut) => {
    const admission = admitCommand(device, cdb, dataOut, guards, options?.peer);
    return admission.ok ? backend.execute(device, admission.command, options) : admission.result;
  };
}

export type { PrOutActionName };

export interface PrOutRequest {
  action: PrOutActionName;
  /** RESERVATION KEY (--param-rk). */
  reservationKey?: bigint;
  /** SERVICE ACTION RESERVATION KEY (--param-sark). */
  serviceActionKey?: bigint;
  /** Reservation type for RESERVE, RELEASE, PREEMPT, PREEMPT AND ABORT, REGISTER AND MOVE. */
  type?: number;
  aptpl?: boolean;
  allTgPt?: boolean;
  /** SPEC_I_PT TransportIDs for REGISTER, or the destination for REGISTER AND MOVE. */
  transportIds?: TransportId[];
  /** REGISTER AND MOVE only. */
  relativeTargetPort?: number;
  unreg?: boolean;
}

export function buildPrOut(request: PrOutRequest): { cdb: Buffer; dataOut: Buffer } {
  const action = prOutAction(request.action).code;
  const transportIds = request.transportIds ?? [];
  let dataOut: Buffer;
  if (request.action === 'register-move') {
    if (transportIds.length !== 1) throw new RangeError('REGISTER AND MOVE needs exactly one destination TransportID');
    dataOut = encodeRegisterAndMoveParameters({
      reservationKey: request.reservationKey ?? 0n,
      serviceActionKey: request.serviceActionKey ?? 0n,
      unreg: request.unreg ?? false,
      aptpl: request.aptpl ?? false,
      relativeTargetPort: request.relativeTargetPort ?? 0,
      transportId: transportIds[0],
    });
  } else {
    dataOut = encodePrOutParameters({
      reservationKey: request.reservationKey ?? 0n,
      serviceActionKey: request.serviceActionKey ?? 0n,
      specIPT: transportIds.length > 0,
      allTgPt: request.allTgPt ?? false,
      aptpl: request.aptpl ?? false,
      transportIds,
    });
  }
  const cdb = encodePrOutCdb({ action, scope: LU_SCOPE, type: request.type ?? 0, parameterListLength: dataOut.length });
  return { cdb, dataOut };
}

export function buildPrIn(action: number, allocationLength = PR_HELPER_DATA_SIZE): Buffer {
  return encodePrInCdb({ action, allocationLength });
}

/** A PR OUT command built by this program (never from the wire), as the typed form backends take. */
export function prOutCommand(request: PrOutRequest): PrOutCommand {
  const { cdb, dataOut } = buildPrOut(request);
  return decodeBuilt(cdb, dataOut) as PrOutCommand;
}

/** A PR IN command built by this program, as the typed form backends take. */
export function prInCommand(action: number, allocationLength = PR_HELPER_DATA_SIZE): PrInCommand {
  return decodeBuilt(buildPrIn(action, allocationLength), Buffer.alloc(0)) as PrInCommand;
}

function decodeBuilt(cdb: Buffer, dataOut: Buffer) {
  const decoded = decodePrCommand(cdb, dataOut);
  // The encoders write well-framed commands; anything else is a bug here, not input.
  if (!decoded.ok) throw new Error(`built an ill-framed PR command: ${decoded.reason}`);
  return decoded.command;
}

/** What went wrong, in the classes an admin or a script acts on. */
export type PrOutcome =
  | 'good'
  | 'reservation-conflict'
  | 'illegal-request'
  | 'unit-attention'
  | 'not-ready'
  | 'medium-or-hardware-error'
  | 'aborted-command'
  | 'busy'
  | 'other';

/** The status bytes that say all there is to say. */
const OUTCOME_BY_STATUS: ReadonlyMap<number, PrOutcome> = new Map([
  [Status.GOOD, 'good'],
  [Status.RESERVATION_CONFLICT, 'reservation-conflict'],
  [Status.BUSY, 'busy'],
  [Status.TASK_SET_FULL, 'busy'],
]);

/** CHECK CONDITION, by sense key. */
const OUTCOME_BY_SENSE_KEY: ReadonlyMap<number, PrOutcome> = new Map([
  [SenseKey.ILLEGAL_REQUEST, 'illegal-request'],
  [SenseKey.UNIT_ATTENTION, 'unit-attention'],
  [SenseKey.NOT_READY, 'not-ready'],
  [SenseKey.MEDIUM_ERROR, 'medium-or-hardware-error'],
  [SenseKey.HARDWARE_ERROR, 'medium-or-hardware-error'],
  [SenseKey.ABORTED_COMMAND, 'aborted-command'],
]);

export function classifyResult(result: ScsiResult): PrOutcome {
  if (result.status !== Status.CHECK_CONDITION) return OUTCOME_BY_STATUS.get(result.status) ?? 'other';
  const key = decodeSense(result.sense)?.key;
  return (key !== undefined ? OUTCOME_BY_SENSE_KEY.get(key) : undefined) ?? 'other';
}

/** A command that did not end GOOD, carrying the full SCSI result. */
export class PrCommandError extends Error {
  readonly outcome: PrOutcome;
  constructor(
    readonly command: string,
    readonly result: ScsiResult,
  ) {
    const outcome = classifyResult(result);
    super(
      `${command}: ${
        outcome === 'reservation-conflict' ? 'reservation conflict' : result.sense.length ? describeSense(result.sense) : `status 0x${result.status.toString(16)}`
      }`,
    );
    this.name = 'PrCommandError';
    this.outcome = outcome;
  }
}

/** Malformed PR IN data from a device: the command "worked" but the answer is unusable. */
export class MalformedResponseError extends Error {
  constructor(command: string, reason: string) {
    super(`${command}: malformed response: ${reason}`);
    this.name = 'MalformedResponseError';
  }
}

async function prIn<T>(
  run: PrExecutor,
  action: number,
  name: string,
  decode: (data: Uint8Array) => { ok: true; value: T } | { ok: false; reason: string },
): Promise<T> {
  const result = await run(buildPrIn(action), Buffer.alloc(0));
  if (result.status !== Status.GOOD) throw new PrCommandError(name, result);
  const decoded = decode(result.dataIn);
  if (!decoded.ok) throw new MalformedResponseError(name, decoded.reason);
  return decoded.value;
}

export const readKeys = (run: PrExecutor): Promise<ReadKeysData> => prIn(run, PrInAction.READ_KEYS, 'READ KEYS', decodeReadKeys);
export const readReservation = (run: PrExecutor): Promise<ReadReservationData> =>
  prIn(run, PrInAction.READ_RESERVATION, 'READ RESERVATION', decodeReadReservation);
export const reportCapabilities = (run: PrExecutor): Promise<Capabilities> =>
  prIn(run, PrInAction.REPORT_CAPABILITIES, 'REPORT CAPABILITIES', decodeReportCapabilities);
export const readFullStatus = (run: PrExecutor): Promise<ReadFullStatusData> =>
  prIn(run, PrInAction.READ_FULL_STATUS, 'READ FULL STATUS', decodeReadFullStatus);

/** Runs a PR OUT and returns the raw result (the caller decides what non-GOOD means). */
export async function prOut(run: PrExecutor, request: PrOutRequest): Promise<ScsiResult> {
  const { cdb, dataOut } = buildPrOut(request);
  return run(cdb, dataOut);
}

/** Runs a PR OUT and throws PrCommandError unless it ended GOOD. */
export async function prOutOrThrow(run: PrExecutor, request: PrOutRequest): Promise<void> {
  const result = await prOut(run, request);
  if (result.status !== Status.GOOD) throw new PrCommandError(prOutAction(request.action).title, result);
}

export const register = (run: PrExecutor, newKey: bigint, options: { currentKey?: bigint; aptpl?: boolean; allTgPt?: boolean } = {}) =>
  prOutOrThrow(run, {
    action: 'register',
    reservationKey: options.currentKey ?? 0n,
    serviceActionKey: newKey,
    aptpl: options.aptpl,
    allTgPt: options.allTgPt,
  });
export const registerIgnore = (run: PrExecutor, newKey: bigint, options: { aptpl?: boolean; allTgPt?: boolean } = {}) =>
  prOutOrThrow(run, { action: 'register-ignore', serviceActionKey: newKey, aptpl: options.aptpl, allTgPt: options.allTgPt });
export const reserve = (run: PrExecutor, key: bigint, type: number) => prOutOrThrow(run, { action: 'reserve', reservationKey: key, type });
export const release = (run: PrExecutor, key: bigint, type: number) => prOutOrThrow(run, { action: 'release', reservationKey: key, type });
export const clear = (run: PrExecutor, key: bigint) => prOutOrThrow(run, { action: 'clear', reservationKey: key });
export const preempt = (run: PrExecutor, key: bigint, victimKey: bigint, type: number, abort = false) =>
  prOutOrThrow(run, { action: abort ? 'preempt-abort' : 'preempt', reservationKey: key, serviceActionKey: victimKey, type });
