// The one behavioural contract every PR backend is held to, written once and run
// against each backend (the pattern of serialport's bindings tests): emulated on the
// host (test/contract/emulated.test.ts), sg and blkpr against LIO in the lab VM
// (test/lab/contract.lab.ts), and mpath on the lab's dm-multipath map (same file).
//
// A fixture is two initiators on one LU: host A (possibly a multipath host whose one
// REGISTER makes several registrations) and host B. A case a backend cannot run is
// listed by the fixture with the reason and shows up as a pending test carrying that
// reason, never as a silent pass. A command a backend refuses by design is listed with
// the answer it gives: the case then checks that answer and that the LU is unchanged.

import { expect } from 'chai';
import {
  buildPrIn,
  clear,
  prOut,
  preempt,
  readFullStatus,
  readKeys,
  readReservation,
  register,
  registerIgnore,
  release,
  reportCapabilities,
  reserve,
  type PrExecutor,
} from '../../src/backends/pr-commands';
import { encodePrInCdb, encodePrOutCdb } from '../../src/scsi/cdb';
import { ALL_PR_TYPES, PrInAction, PrOutAction, PrType, Status, SenseKey, prTypeName, statusName } from '../../src/scsi/constants';
import { encodePrOutParameters } from '../../src/scsi/parameter-list';
import { decodeSense, describeSense, encodeFixedSense, isUnitAttention, Sense, type ScsiResult, type SenseCondition } from '../../src/scsi/sense';
import { sameTransportId } from '../../src/scsi/transport-id';

export const CONTRACT_CASES = [
  'register-unregister',
  'register-wrong-key',
  'read-keys-generation',
  'reserve-type-1',
  'reserve-type-3',
  'reserve-type-5',
  'reserve-type-6',
  'reserve-type-7',
  'reserve-type-8',
  'reserve-conflict',
  'release-wrong-type',
  'release-non-holder',
  'clear',
  'preempt',
  'preempt-abort',
  'register-ignore',
  'register-all-tg-pt',
  'register-spec-i-pt',
  'register-and-move',
  'aptpl',
  'report-capabilities',
  'allocation-length-truncation',
  'bad-scope',
  'bad-type',
  'unknown-service-action',
  'read-only-pr-out',
  'unit-attention-after-preempt',
] as const;
export type ContractCase = (typeof CONTRACT_CASES)[number];

/** Cases whose command a backend may refuse by design (see ContractFixture.refused). */
const REFUSABLE_CASES = ['register-spec-i-pt', 'register-and-move'] as const satisfies readonly ContractCase[];
export type RefusableCase = (typeof REFUSABLE_CASES)[number];

export interface DocumentedRefusal {
  /** The CHECK CONDITION the backend answers the case's command with. */
  readonly condition: SenseCondition;
  /** Why, shown in the test title. */
  readonly reason: string;
}

/** The keys one of host A's I_T nexuses holds, as an oracle outside the backend reads them. */
export interface NexusKeys {
  readonly nexus: string;
  readonly keys: readonly bigint[];
}

export interface ContractFixture {
  /** Host A on a writable handle. */
  hostA: PrExecutor;
  /** Host B: another initiator port on the same LU. */
  hostB: PrExecutor;
  /** Host A through a handle opened read-only (PR OUT must be refused). */
  hostAReadOnly: PrExecutor;
  /**
   * I_T nexuses one REGISTER of each host creates: 1 for a single path, N for a
   * multipath host that registers on each of its N paths.
   */
  registrations: { A: number; B: number };
  /** Cases this backend cannot run, with the reason shown in the test output. */
  unsupported: Partial<Record<ContractCase, string>>;
  /**
   * Commands this backend refuses by design, with its answer: the case checks that exact
   * CHECK CONDITION and that nothing changed, instead of the SPC-4 outcome.
   */
  refused?: Partial<Record<RefusableCase, DocumentedRefusal>>;
  /**
   * The keys each of host A's I_T nexuses (one per path) holds, read by an oracle outside
   * the backend. When given, the REGISTER and PREEMPT cases check every path, not only
   * the count READ KEYS gives.
   */
  hostANexusKeys?(): Promise<readonly NexusKeys[]>;
  cleanup(): Promise<void>;
}

const KEY_A = 0xa0a0_0000_0000_0001n;
const KEY_A2 = 0xa0a0_0000_0000_0002n;
const KEY_B = 0xb0b0_0000_0000_0001n;
const WRONG_KEY = 0x0bad_0000_0000_0001n;
const RESET_KEY = 0x5e5e_0000_0000_0001n;
const UA_RETRIES = 8;

function senseOf(result: ScsiResult): { key: number; asc: number; ascq: number } | undefined {
  const decoded = decodeSense(result.sense);
  return decoded && { key: decoded.key, asc: decoded.asc, ascq: decoded.ascq };
}

function describeResult(result: ScsiResult): string {
  return result.status === Status.CHECK_CONDITION ? `CHECK CONDITION ${describeSense(result.sense)}` : statusName(result.status);
}

/**
 * Resends a command that met a UNIT ATTENTION, as the SCSI stacks in front of a real
 * target do. A target reports the attention instead of running the command (SAM-5
 * 5.14), so a resend is safe. Lab paths that multipathd's checker also polls may or may
 * not still hold an attention when a case runs; this makes the cases independent of
 * that race. The attention itself is checked on raw executors.
 */
export function retryingUnitAttention(run: PrExecutor): PrExecutor {
  return async (cdb, dataOut) => {
    for (let attempt = 1; ; attempt++) {
      const result = await run(cdb, dataOut);
      if (!isUnitAttention(result) || attempt >= UA_RETRIES) return result;
    }
  };
}

/** Reports and consumes pending unit attentions with READ KEYS; returns the conditions seen, oldest first. */
export async function drainUnitAttentions(run: PrExecutor): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < UA_RETRIES; i++) {
    const result = await run(buildPrIn(PrInAction.READ_KEYS), Buffer.alloc(0));
    if (!isUnitAttention(result)) return seen;
    seen.push(describeSense(result.sense));
  }
  throw new Error(`still UNIT ATTENTION after ${UA_RETRIES} READ KEYS: ${seen.join(', ')}`);
}

/**
 * Brings the LU back to no registrations and no reservation, whatever a failed case
 * left: REGISTER AND IGNORE EXISTING KEY then CLEAR, then drain the unit attentions
 * CLEAR gave everybody else. Host B goes first: its single path has nothing that can
 * refuse a plain REGISTER (LIO refuses ALL_TG_PT=0 from a nexus registered with
 * ALL_TG_PT=1, which host A may have left behind).
 */
export async function resetLogicalUnit(hostA: PrExecutor, hostB: PrExecutor): Promise<void> {
  const failures: string[] = [];
  const attempts: Array<[string, PrExecutor, boolean]> = [
    ['host B', hostB, false],
    ['host A', hostA, false],
    ['host A with ALL_TG_PT', hostA, true],
  ];
  let cleared = false;
  for (const [who, raw, allTgPt] of attempts) {
    const run = retryingUnitAttention(raw);
    const registered = await prOut(run, { action: 'register-ignore', serviceActionKey: RESET_KEY, allTgPt });
    if (registered.status !== Status.GOOD) {
      failures.push(`${who}: REGISTER AND IGNORE: ${describeResult(registered)}`);
      continue;
    }
    const cleared1 = await prOut(run, { action: 'clear', reservationKey: RESET_KEY });
    if (cleared1.status !== Status.GOOD) {
      failures.push(`${who}: CLEAR: ${describeResult(cleared1)}`);
      continue;
    }
    cleared = true;
    break;
  }
  if (!cleared) throw new Error(`cannot clear the LU: ${failures.join('; ')}`);
  await drainUnitAttentions(hostA);
  await drainUnitAttentions(hostB);
  const left = await readKeys(retryingUnitAttention(hostA));
  if (left.keys.length !== 0) throw new Error(`LU still has keys after CLEAR: ${left.keys.map((k) => k.toString(16)).join(', ')}`);
}

function refusalOf(fixture: ContractFixture, id: ContractCase): DocumentedRefusal | undefined {
  const refusable = (REFUSABLE_CASES as readonly ContractCase[]).includes(id);
  return refusable ? fixture.refused?.[id as RefusableCase] : undefined;
}

function expectStatus(result: ScsiResult, status: number, what: string): void {
  expect(describeResult(result), what).to.equal(statusName(status));
}

function expectCheckCondition(result: ScsiResult, condition: SenseCondition, what: string): void {
  expect(describeResult(result), what).to.equal(`CHECK CONDITION ${describeSense(encodeFixedSense(condition))}`);
}

function expectIllegalRequest(result: ScsiResult, what: string): void {
  expect(statusName(result.status), `${what}: ${describeResult(result)}`).to.equal('CHECK_CONDITION');
  expect(senseOf(result)?.key, `${what}: ${describeResult(result)}`).to.equal(SenseKey.ILLEGAL_REQUEST);
}

const repeat = (key: bigint, times: number): bigint[] => Array.from({ length: times }, () => key);

function sortedKeys(keys: readonly bigint[]): string[] {
  return keys.map((k) => `0x${k.toString(16)}`).sort();
}

/**
 * Declares the contract suite for one backend. `factory` runs before every case and
 * gives a fixture on an LU in any state; the suite clears the LU before and after each
 * case, so a failed case does not leak into the next.
 */
export function describePrBackendContract(name: string, factory: () => Promise<ContractFixture>): void {
  describe(`PR backend contract: ${name}`, function () {
    let fixture: ContractFixture | undefined;
    /** Host A and B with unit-attention resend: for setup and for cases about something else. */
    let a: PrExecutor;
    let b: PrExecutor;
    let nA: number;
    let nB: number;

    beforeEach(async function () {
      fixture = await factory();
      const unsupported = fixture.unsupported;
      const test = this.currentTest!;
      const id = caseIds.get(test);
      const reason = id === undefined ? undefined : unsupported[id];
      if (reason !== undefined) {
        // Pending, with the reason in the title the reporter prints: visible, never silent.
        test.title += ` — NOT SUPPORTED by ${name}: ${reason}`;
        const done = fixture;
        fixture = undefined;
        await done.cleanup();
        this.skip();
      }
      const refusal = id === undefined ? undefined : refusalOf(fixture, id);
      if (refusal) test.title += ` — REFUSED by ${name} with ${describeSense(encodeFixedSense(refusal.condition))}: ${refusal.reason}`;
      a = retryingUnitAttention(fixture.hostA);
      b = retryingUnitAttention(fixture.hostB);
      nA = fixture.registrations.A;
      nB = fixture.registrations.B;
      await resetLogicalUnit(fixture.hostA, fixture.hostB);
    });

    afterEach(async function () {
      if (!fixture) return;
      const done = fixture;
      fixture = undefined;
      try {
        await resetLogicalUnit(done.hostA, done.hostB);
      } finally {
        await done.cleanup();
      }
    });

    const current = (): ContractFixture => {
      if (!fixture) throw new Error('no fixture: the case runs outside its hooks');
      return fixture;
    };
    const caseIds = new Map<Mocha.Runnable, ContractCase>();
    /** Every I_T nexus of host A holds `key` (none when 0n), as the fixture's oracle reads them; nothing to check without one. */
    const expectEveryNexusOfA = async (key: bigint, what: string): Promise<void> => {
      const oracle = current().hostANexusKeys;
      if (!oracle) return;
      const nexuses = await oracle();
      expect(nexuses, `${what}: host A's nexuses`).to.have.length(nA);
      const held = Object.fromEntries(nexuses.map((n) => [n.nexus, sortedKeys(n.keys)]));
      const expected = Object.fromEntries(nexuses.map((n) => [n.nexus, key === 0n ? [] : sortedKeys([key])]));
      expect(held, `${what}: keys per nexus of host A`).to.deep.equal(expected);
    };
    const contractCase = (id: ContractCase, title: string, body: () => Promise<void>): void => {
      caseIds.set(it(`[${id}] ${title}`, body), id);
    };

    contractCase('register-unregister', 'REGISTER adds the key; REGISTER with SARK=0 removes it', async () => {
      await register(a, KEY_A);
      expect(sortedKeys((await readKeys(b)).keys)).to.deep.equal(sortedKeys(repeat(KEY_A, nA)));
      await expectEveryNexusOfA(KEY_A, 'after REGISTER');
      await register(a, 0n, { currentKey: KEY_A });
      expect((await readKeys(b)).keys).to.deep.equal([]);
      await expectEveryNexusOfA(0n, 'after REGISTER with SARK=0');
    });

    contractCase('register-wrong-key', 'REGISTER with a wrong current key is a RESERVATION CONFLICT and changes nothing', async () => {
      await register(a, KEY_A);
      const before = await readKeys(b);
      const result = await prOut(a, { action: 'register', reservationKey: WRONG_KEY, serviceActionKey: KEY_A2 });
      expectStatus(result, Status.RESERVATION_CONFLICT, 'REGISTER with a wrong key');
      const after = await readKeys(b);
      expect(sortedKeys(after.keys)).to.deep.equal(sortedKeys(repeat(KEY_A, nA)));
      expect(after.generation, 'a failed REGISTER does not count').to.equal(before.generation);
      await expectEveryNexusOfA(KEY_A, 'after the refused REGISTER');
    });

    contractCase('read-keys-generation', 'READ KEYS lists every registration and PRgeneration counts each one', async () => {
      const start = await readKeys(a);
      await register(a, KEY_A);
      const afterA = await readKeys(a);
      expect(afterA.generation - start.generation, 'one per registered I_T nexus').to.equal(nA);
      await expectEveryNexusOfA(KEY_A, 'after REGISTER');
      await register(b, KEY_B);
      const afterB = await readKeys(a);
      expect(afterB.generation - afterA.generation).to.equal(nB);
      expect(sortedKeys(afterB.keys)).to.deep.equal(sortedKeys([...repeat(KEY_A, nA), ...repeat(KEY_B, nB)]));
      expect((await readKeys(b)).generation, 'both hosts see one counter').to.equal(afterB.generation);
    });

    for (const type of ALL_PR_TYPES) {
      contractCase(`reserve-type-${type}` as ContractCase, `RESERVE ${prTypeName(type)} shows in READ RESERVATION and RELEASE ends it`, async () => {
        await register(a, KEY_A);
        const generation = (await readKeys(a)).generation;
        await reserve(a, KEY_A, type);
        const seen = await readReservation(b);
        const allRegistrants = type === PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS || type === PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
        // SPC-4 6.13.3.4: for the all-registrants types the RESERVATION KEY is zero.
        expect(seen.reservation).to.deep.equal({ key: allRegistrants ? 0n : KEY_A, scope: 0, type });
        expect(seen.generation, 'RESERVE does not count').to.equal(generation);
        await release(a, KEY_A, type);
        expect((await readReservation(a)).reservation).to.equal(undefined);
      });
    }

    contractCase('reserve-conflict', "RESERVE by a registrant while another's reservation stands is a RESERVATION CONFLICT", async () => {
      await register(a, KEY_A);
      await register(b, KEY_B);
      await reserve(a, KEY_A, PrType.WRITE_EXCLUSIVE);
      expectStatus(await prOut(b, { action: 'reserve', reservationKey: KEY_B, type: PrType.WRITE_EXCLUSIVE }), Status.RESERVATION_CONFLICT, 'RESERVE by B');
      expectStatus(await prOut(b, { action: 'reserve', reservationKey: WRONG_KEY, type: PrType.EXCLUSIVE_ACCESS }), Status.RESERVATION_CONFLICT, 'RESERVE with a wrong key');
      expect((await readReservation(b)).reservation).to.deep.equal({ key: KEY_A, scope: 0, type: PrType.WRITE_EXCLUSIVE });
    });

    contractCase('release-wrong-type', 'RELEASE by the holder with another type is INVALID RELEASE OF PERSISTENT RESERVATION', async () => {
      await register(a, KEY_A);
      await reserve(a, KEY_A, PrType.WRITE_EXCLUSIVE);
      const result = await prOut(a, { action: 'release', reservationKey: KEY_A, type: PrType.EXCLUSIVE_ACCESS });
      expectCheckCondition(result, Sense.INVALID_RELEASE_OF_PERSISTENT_RESERVATION, 'RELEASE with the wrong type');
      expect((await readReservation(b)).reservation, 'the reservation stays').to.deep.equal({ key: KEY_A, scope: 0, type: PrType.WRITE_EXCLUSIVE });
    });

    contractCase('release-non-holder', 'RELEASE by a registrant that does not hold the reservation is GOOD and changes nothing', async () => {
      await register(a, KEY_A);
      await register(b, KEY_B);
      await reserve(a, KEY_A, PrType.WRITE_EXCLUSIVE);
      expectStatus(await prOut(b, { action: 'release', reservationKey: KEY_B, type: PrType.WRITE_EXCLUSIVE }), Status.GOOD, 'RELEASE by B');
      expect((await readReservation(a)).reservation).to.deep.equal({ key: KEY_A, scope: 0, type: PrType.WRITE_EXCLUSIVE });
    });

    contractCase('clear', 'CLEAR removes every registration and the reservation, and counts once', async () => {
      await register(a, KEY_A);
      await register(b, KEY_B);
      await reserve(a, KEY_A, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
      const before = await readKeys(b);
      await clear(b, KEY_B);
      const after = await readKeys(b);
      expect(after.keys).to.deep.equal([]);
      expect(after.generation).to.equal(before.generation + 1);
      expect((await readReservation(a)).reservation).to.equal(undefined);
    });

    const preemptCase = (abort: boolean) => async () => {
      await register(a, KEY_A);
      await register(b, KEY_B);
      await reserve(a, KEY_A, PrType.WRITE_EXCLUSIVE);
      const before = await readKeys(b);
      await preempt(b, KEY_B, KEY_A, PrType.EXCLUSIVE_ACCESS, abort);
      const after = await readKeys(b);
      expect(sortedKeys(after.keys), "A's registrations are gone").to.deep.equal(sortedKeys(repeat(KEY_B, nB)));
      await expectEveryNexusOfA(0n, 'after the PREEMPT');
      expect(after.generation).to.equal(before.generation + 1);
      expect((await readReservation(b)).reservation, 'B holds with the new type').to.deep.equal({ key: KEY_B, scope: 0, type: PrType.EXCLUSIVE_ACCESS });
      await drainUnitAttentions(current().hostA);
      expectStatus(await prOut(a, { action: 'reserve', reservationKey: KEY_A, type: PrType.WRITE_EXCLUSIVE }), Status.RESERVATION_CONFLICT, 'the preempted host is no longer a registrant');
    };
    contractCase('preempt', "PREEMPT of the holder's key removes its registrations and takes the reservation", preemptCase(false));
    contractCase('preempt-abort', "PREEMPT AND ABORT of the holder's key removes its registrations and takes the reservation", preemptCase(true));

    contractCase('register-ignore', 'REGISTER AND IGNORE EXISTING KEY replaces the key whatever the current one is', async () => {
      await register(a, KEY_A);
      const before = await readKeys(b);
      await registerIgnore(a, KEY_A2);
      const after = await readKeys(b);
      expect(sortedKeys(after.keys)).to.deep.equal(sortedKeys(repeat(KEY_A2, nA)));
      expect(after.generation - before.generation).to.equal(nA);
      await expectEveryNexusOfA(KEY_A2, 'after REGISTER AND IGNORE');
      await registerIgnore(a, 0n);
      expect((await readKeys(b)).keys, 'SARK=0 unregisters').to.deep.equal([]);
      await expectEveryNexusOfA(0n, 'after REGISTER AND IGNORE with SARK=0');
    });

    contractCase('register-all-tg-pt', 'REGISTER with ALL_TG_PT=1 is accepted and READ FULL STATUS flags it', async () => {
      await register(a, KEY_A, { allTgPt: true });
      const status = await readFullStatus(b);
      expect(status.descriptors.length).to.be.greaterThan(0);
      for (const d of status.descriptors) expect(d, 'every registration made with ALL_TG_PT').to.include({ key: KEY_A, allTgPt: true });
    });

    contractCase('register-spec-i-pt', "REGISTER with SPEC_I_PT registers the listed initiator port too", async () => {
      await register(b, KEY_B);
      const bIds = (await readFullStatus(a)).descriptors.filter((d) => d.key === KEY_B).map((d) => d.transportId);
      expect(bIds).to.have.length(nB);
      await register(b, 0n, { currentKey: KEY_B });
      const params = { action: 'register' as const, serviceActionKey: KEY_A, transportIds: [bIds[0]] };
      const refusal = current().refused?.['register-spec-i-pt'];
      if (refusal) {
        expectCheckCondition(await prOut(a, params), refusal.condition, 'REGISTER with SPEC_I_PT');
        expect((await readKeys(b)).keys, 'nothing registered').to.deep.equal([]);
        return;
      }
      expectStatus(await prOut(a, params), Status.GOOD, 'REGISTER with SPEC_I_PT');
      const status = await readFullStatus(a);
      expect(status.descriptors.every((d) => d.key === KEY_A)).to.equal(true);
      expect(status.descriptors.some((d) => sameTransportId(d.transportId, bIds[0]) || (d.transportId.protocol === 'iscsi' && bIds[0].protocol === 'iscsi' && d.transportId.name === bIds[0].name)), 'B is registered').to.equal(true);
    });

    contractCase('register-and-move', 'REGISTER AND MOVE hands the reservation to another initiator port', async () => {
      await register(b, KEY_B);
      const bEntry = (await readFullStatus(a)).descriptors.find((d) => d.key === KEY_B);
      expect(bEntry, 'B is in READ FULL STATUS').to.not.equal(undefined);
      await register(b, 0n, { currentKey: KEY_B });
      await register(a, KEY_A);
      await reserve(a, KEY_A, PrType.WRITE_EXCLUSIVE);
      const result = await prOut(a, {
        action: 'register-move',
        reservationKey: KEY_A,
        serviceActionKey: KEY_B,
        transportIds: [bEntry!.transportId],
        relativeTargetPort: bEntry!.relativeTargetPort,
      });
      const refusal = current().refused?.['register-and-move'];
      if (refusal) {
        expectCheckCondition(result, refusal.condition, 'REGISTER AND MOVE');
        expect((await readReservation(b)).reservation, 'A keeps the reservation').to.deep.equal({ key: KEY_A, scope: 0, type: PrType.WRITE_EXCLUSIVE });
        expect(sortedKeys((await readKeys(b)).keys), 'the registrations stay').to.deep.equal(sortedKeys(repeat(KEY_A, nA)));
        return;
      }
      expectStatus(result, Status.GOOD, 'REGISTER AND MOVE');
      expect((await readReservation(b)).reservation).to.deep.equal({ key: KEY_B, scope: 0, type: PrType.WRITE_EXCLUSIVE });
      const holders = (await readFullStatus(b)).descriptors.filter((d) => d.holder);
      expect(holders.map((d) => d.key)).to.deep.equal([KEY_B]);
    });

    contractCase('aptpl', 'REGISTER with APTPL=1 turns PTPL_A on in REPORT CAPABILITIES', async () => {
      const caps = await reportCapabilities(a);
      expect(caps.ptplC, 'PTPL_C').to.equal(true);
      await register(a, KEY_A, { aptpl: true });
      expect((await reportCapabilities(b)).ptplA, 'PTPL_A after APTPL=1').to.equal(true);
    });

    contractCase('report-capabilities', 'REPORT CAPABILITIES decodes and lists only valid reservation types', async () => {
      const caps = await reportCapabilities(a);
      expect(caps.types.length).to.be.greaterThan(0);
      for (const type of caps.types) expect(ALL_PR_TYPES as readonly number[]).to.include(type);
      if (caps.tmv) expect(caps.types, 'with TMV=1 the mask lists the types RESERVE accepts').to.include(PrType.WRITE_EXCLUSIVE);
      expect(caps.allowCommands).to.be.within(0, 5);
    });

    contractCase('allocation-length-truncation', 'READ KEYS with a short ALLOCATION LENGTH is cut, and the header keeps the full length', async () => {
      await register(a, KEY_A);
      await register(b, KEY_B);
      const total = nA + nB;
      for (const allocationLength of [8, 12]) {
        const result = await a(encodePrInCdb({ action: PrInAction.READ_KEYS, allocationLength }), Buffer.alloc(0));
        expectStatus(result, Status.GOOD, `READ KEYS with allocation length ${allocationLength}`);
        expect(result.dataIn.length, `allocation length ${allocationLength}`).to.equal(allocationLength);
        expect(result.dataIn.readUInt32BE(4), 'ADDITIONAL LENGTH is not adjusted for truncation (SPC-4 4.2.5.6)').to.equal(8 * total);
      }
    });

    const outWithFields = (action: number, scope: number, type: number, key: bigint): { cdb: Buffer; dataOut: Buffer } => {
      const dataOut = encodePrOutParameters({ reservationKey: key, serviceActionKey: 0n, specIPT: false, allTgPt: false, aptpl: false, transportIds: [] });
      return { cdb: encodePrOutCdb({ action, scope, type, parameterListLength: dataOut.length }), dataOut };
    };

    contractCase('bad-scope', 'RESERVE with a SCOPE other than LU_SCOPE is ILLEGAL REQUEST', async () => {
      await register(a, KEY_A);
      const { cdb, dataOut } = outWithFields(PrOutAction.RESERVE, 0x2, PrType.WRITE_EXCLUSIVE, KEY_A);
      expectIllegalRequest(await a(cdb, dataOut), 'RESERVE with scope 2');
      expect((await readReservation(b)).reservation).to.equal(undefined);
    });

    contractCase('bad-type', 'RESERVE with an obsolete or reserved TYPE is ILLEGAL REQUEST', async () => {
      await register(a, KEY_A);
      for (const type of [0x0, 0x2, 0x4, 0x9, 0xf]) {
        const { cdb, dataOut } = outWithFields(PrOutAction.RESERVE, 0, type, KEY_A);
        expectIllegalRequest(await a(cdb, dataOut), `RESERVE with type ${type}`);
      }
      expect((await readReservation(b)).reservation).to.equal(undefined);
    });

    contractCase('unknown-service-action', 'an unknown PR IN or PR OUT service action is ILLEGAL REQUEST', async () => {
      expectIllegalRequest(await a(encodePrInCdb({ action: 0x1f, allocationLength: 512 }), Buffer.alloc(0)), 'PR IN service action 1Fh');
      const { cdb, dataOut } = outWithFields(0x1f, 0, 0, 0n);
      expectIllegalRequest(await a(cdb, dataOut), 'PR OUT service action 1Fh');
    });

    contractCase('read-only-pr-out', 'PR OUT through a read-only handle is INVALID COMMAND OPERATION CODE; PR IN works', async () => {
      const result = await prOut(current().hostAReadOnly, { action: 'register', serviceActionKey: KEY_A });
      expectCheckCondition(result, Sense.INVALID_OPCODE, 'REGISTER on a read-only fd');
      expect((await readKeys(retryingUnitAttention(current().hostAReadOnly))).keys).to.deep.equal([]);
    });

    contractCase('unit-attention-after-preempt', 'the preempted initiator gets UNIT ATTENTION, REGISTRATIONS PREEMPTED, once', async () => {
      await register(a, KEY_A);
      await register(b, KEY_B);
      await reserve(b, KEY_B, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
      await drainUnitAttentions(current().hostB);
      await preempt(a, KEY_A, KEY_B, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
      // Nothing else may use B's I_T nexus before this READ KEYS, or it consumes the attention:
      // the lab keeps host B's disk out of multipath and out of udev's close-write watch.
      const first = await current().hostB(buildPrIn(PrInAction.READ_KEYS), Buffer.alloc(0));
      expectCheckCondition(first, Sense.REGISTRATIONS_PREEMPTED, "B's first command after the PREEMPT");
      const second = await current().hostB(buildPrIn(PrInAction.READ_KEYS), Buffer.alloc(0));
      expectStatus(second, Status.GOOD, 'the attention is reported once');
    });
  });
}
