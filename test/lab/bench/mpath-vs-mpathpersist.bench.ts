// @lab {"fabric": "tcm_loop", "paths": 2}
//
// `npm run bench:lab` (bench/lab.ts boots the lab and runs this file; see bench/README.md).
// Not a `.lab.ts` file on purpose: the lab runner only collects test/lab/**/*.lab.ts, so this
// benchmark never runs in `npm run test:lab` / CI.
//
// On the same map in one boot: REGISTER AND IGNORE EXISTING KEY + READ KEYS cycles
//   (a) through our daemon (`mpath-pr serve --backend auto`, the mpath backend), over one
//       PrHelperClient connection sending the map's fd, as QEMU does;
//   (b) with one `mpathpersist` process per operation, as fence_mpath does.
// Cycles alternate ours / mpathpersist so both see the same host load (this runs under TCG on
// a shared machine). The only assertions are that every command succeeded and that the keys
// read back are the ones just registered, on both paths: timings are reported, never judged.

import { expect } from 'chai';
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPrIn, buildPrOut } from '../../../src/backends/pr-commands';
import { PrHelperClient } from '../../../src/protocol/client';
import type { PrHelperReply } from '../../../src/protocol/messages';
import { PrInAction, Status } from '../../../src/scsi/constants';
import { decodeReadKeys } from '../../../src/scsi/pr-in-data';
import { describeSense } from '../../../src/scsi/sense';
import { labTopology, multipathd, parseSgPersistKeys, readKeys, run, stopChild, waitFor, writeArtifact } from '../harness/lab-guest';

/** Measured cycles per side (after one warm-up cycle each). Fixed counts, not durations, so a run always ends. */
const CYCLES = Number(process.env.BENCH_LAB_CYCLES ?? 10);
if (!Number.isInteger(CYCLES) || CYCLES < 1) throw new Error(`BENCH_LAB_CYCLES must be a positive integer, got ${process.env.BENCH_LAB_CYCLES}`);
const CLEANUP_KEY = 0xc1ea11n;
const hex = (key: bigint) => `0x${key.toString(16)}`;

interface CycleTiming {
  registerMs: number;
  readKeysMs: number;
  cycleMs: number;
}

interface SideSummary {
  cycles: number;
  elapsedMs: number;
  cyclesPerSecond: number;
  opsPerSecond: number;
  medianCycleMs: number;
  medianRegisterMs: number;
  medianReadKeysMs: number;
  maxCycleMs: number;
  perCycleMs: number[];
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits;

function summarize(timings: readonly CycleTiming[]): SideSummary {
  const elapsedMs = timings.reduce((sum, t) => sum + t.cycleMs, 0);
  return {
    cycles: timings.length,
    elapsedMs: round(elapsedMs, 1),
    cyclesPerSecond: round(timings.length / (elapsedMs / 1000)),
    opsPerSecond: round((2 * timings.length) / (elapsedMs / 1000)),
    medianCycleMs: round(median(timings.map((t) => t.cycleMs))),
    medianRegisterMs: round(median(timings.map((t) => t.registerMs))),
    medianReadKeysMs: round(median(timings.map((t) => t.readKeysMs))),
    maxCycleMs: round(Math.max(...timings.map((t) => t.cycleMs))),
    perCycleMs: timings.map((t) => round(t.cycleMs)),
  };
}

const elapsedMs = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e6;

describe('bench: REGISTER AND IGNORE + READ KEYS on mpatha, mpath-pr daemon vs one mpathpersist per operation', function () {
  this.timeout(600_000);
  const topology = labTopology();
  const scratch = fs.mkdtempSync('/tmp/mpath-bench-');
  const socket = path.join(scratch, 'mpath-pr.sock');
  const log = path.join(scratch, 'mpath-pr.log');
  let daemon: ChildProcess | undefined;
  const client = new PrHelperClient();
  let mapFd = -1;

  function expectPathsHold(key: bigint, what: string): void {
    for (const device of topology.pathDevices) expect(readKeys(device).keys, `${what}: ${device}`).to.deep.equal(topology.pathDevices.map(() => key));
  }

  function clearLu(): void {
    const first = topology.pathDevices[0];
    if (readKeys(first).keys.length > 0) {
      run('sg_persist', ['--out', '--no-inquiry', '--register-ignore', `--param-sark=${hex(CLEANUP_KEY)}`, first], { allowFailure: true });
      run('sg_persist', ['--out', '--no-inquiry', '--clear', `--param-rk=${hex(CLEANUP_KEY)}`, first]);
    }
    multipathd(`unsetprkey map ${topology.mpathName}`);
    multipathd(`unsetprstatus map ${topology.mpathName}`);
  }

  before(async function () {
    clearLu();
    expect(readKeys(topology.pathDevices[0]).keys, 'LU clean before the bench').to.deep.equal([]);
    const out = fs.openSync(log, 'w');
    daemon = spawn(
      process.execPath,
      [path.join(topology.repo, 'dist/src/cli/mpath-pr.js'), 'serve', '--socket', socket, '--backend', 'auto', '--state', path.join(scratch, 'state.db'), '--log-level', 'info'],
      { stdio: ['ignore', out, out] },
    );
    fs.closeSync(out);
    await waitFor(`mpath-pr serve to listen on ${socket}`, () => daemon!.exitCode === null && fs.existsSync(socket), {
      timeoutMs: 60_000,
      describe: () => `exit ${daemon!.exitCode}; log: ${fs.readFileSync(log, 'utf8').slice(-2000)}`,
    });
    await client.connect(socket);
    mapFd = fs.openSync(topology.mpathDevice, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  });

  after(async function () {
    client.close();
    if (mapFd >= 0) fs.closeSync(mapFd);
    if (daemon) await stopChild(daemon);
    if (fs.existsSync(log)) writeArtifact(topology, 'bench/mpath-pr.log', fs.readFileSync(log, 'utf8'));
    // Suites that share a boot share the LU and multipathd's prkeys: leave nothing behind.
    clearLu();
  });

  function expectGood(reply: PrHelperReply, what: string): void {
    expect(reply.status, `${what}: status 0x${reply.status.toString(16)} ${reply.status === Status.CHECK_CONDITION ? describeSense(reply.sense) : ''}`).to.equal(Status.GOOD);
  }

  async function oursCycle(key: bigint): Promise<CycleTiming> {
    const { cdb, dataOut } = buildPrOut({ action: 'register-ignore', serviceActionKey: key });
    const started = process.hrtime.bigint();
    const registered = await client.execute(mapFd, cdb, dataOut);
    const registerMs = elapsedMs(started);
    const readStarted = process.hrtime.bigint();
    const keys = await client.execute(mapFd, buildPrIn(PrInAction.READ_KEYS), Buffer.alloc(0));
    const readKeysMs = elapsedMs(readStarted);
    const cycleMs = elapsedMs(started);
    expectGood(registered, `mpath-pr REGISTER AND IGNORE ${hex(key)}`);
    expectGood(keys, 'mpath-pr READ KEYS');
    const decoded = decodeReadKeys(keys.data);
    expect(decoded.ok, decoded.ok ? '' : decoded.reason).to.equal(true);
    if (decoded.ok) expect(decoded.value.keys, `mpath-pr READ KEYS after ${hex(key)}`).to.deep.equal(topology.pathDevices.map(() => key));
    return { registerMs, readKeysMs, cycleMs };
  }

  function mpathpersistCycle(key: bigint): CycleTiming {
    const started = process.hrtime.bigint();
    const registered = run('mpathpersist', ['--out', '--register-ignore', `--param-sark=${hex(key)}`, topology.mpathDevice], { allowFailure: true });
    const registerMs = elapsedMs(started);
    const readStarted = process.hrtime.bigint();
    const keys = run('mpathpersist', ['--in', '-k', topology.mpathDevice], { allowFailure: true });
    const readKeysMs = elapsedMs(readStarted);
    const cycleMs = elapsedMs(started);
    expect(registered.status, `mpathpersist --register-ignore ${hex(key)}: ${registered.stderr}${registered.stdout}`).to.equal(0);
    expect(keys.status, `mpathpersist --in -k: ${keys.stderr}${keys.stdout}`).to.equal(0);
    expect(parseSgPersistKeys(keys.stdout).keys, `mpathpersist --in -k after ${hex(key)}:\n${keys.stdout}`).to.deep.equal(topology.pathDevices.map(() => key));
    return { registerMs, readKeysMs, cycleMs };
  }

  it(`runs ${CYCLES} cycles each way (after one warm-up each), every command GOOD with the right keys, and reports the rates`, async function () {
    // Distinct keys per cycle and per side, so every REGISTER AND IGNORE changes the state.
    const oursKey = (i: number) => 0xbe000000n + BigInt(i);
    const cliKey = (i: number) => 0xce000000n + BigInt(i);
    const loadBefore = os.loadavg();

    await oursCycle(oursKey(0));
    expectPathsHold(oursKey(0), 'after the mpath-pr warm-up');
    mpathpersistCycle(cliKey(0));
    expectPathsHold(cliKey(0), 'after the mpathpersist warm-up');

    const ours: CycleTiming[] = [];
    const cli: CycleTiming[] = [];
    for (let i = 1; i <= CYCLES; i++) {
      ours.push(await oursCycle(oursKey(i)));
      cli.push(mpathpersistCycle(cliKey(i)));
    }
    // The independent oracle (sg_persist on each path) agrees with the last cycle.
    expectPathsHold(cliKey(CYCLES), 'after the last cycle');

    const a = summarize(ours);
    const b = summarize(cli);
    const result = {
      kind: 'lab-mpath-vs-mpathpersist',
      startedAt: new Date().toISOString(),
      lab: { fabric: topology.fabric, paths: topology.pathDevices.length, map: topology.mpathDevice },
      guest: { cpus: os.cpus().length, loadAverage: { before: loadBefore, after: os.loadavg() }, kernel: os.release(), node: process.version },
      cycle: 'PR OUT REGISTER AND IGNORE EXISTING KEY (new key each cycle) then PR IN READ KEYS, on /dev/mapper/mpatha',
      cyclesPerSide: CYCLES,
      warmupCyclesPerSide: 1,
      order: 'alternating: one mpath-pr cycle, then one mpathpersist cycle',
      ours: { how: 'mpath-pr serve --backend auto (mpath backend: REGISTER fanned out over SG_IO, PR IN by SG_IO on a path), one PrHelperClient connection', ...a },
      mpathpersist: { how: 'one mpathpersist process per operation (fence_mpath style)', ...b },
      ratioOursOverMpathpersist: { throughput: round(a.cyclesPerSecond / b.cyclesPerSecond), medianCycleSpeedup: round(b.medianCycleMs / a.medianCycleMs) },
      metrics: [
        { id: 'lab.mpath.ours.cycle', section: 'lab mpath', label: 'mpath-pr daemon, REGISTER AND IGNORE + READ KEYS cycles', value: a.cyclesPerSecond, unit: 'ops/s', higherIsBetter: true, ops: a.cycles, elapsedMs: a.elapsedMs, latency: { p50Us: Math.round(a.medianCycleMs * 1000), p99Us: Math.round(a.maxCycleMs * 1000), maxUs: Math.round(a.maxCycleMs * 1000) } },
        { id: 'lab.mpath.mpathpersist.cycle', section: 'lab mpath', label: 'mpathpersist per operation, REGISTER AND IGNORE + READ KEYS cycles', value: b.cyclesPerSecond, unit: 'ops/s', higherIsBetter: true, ops: b.cycles, elapsedMs: b.elapsedMs, latency: { p50Us: Math.round(b.medianCycleMs * 1000), p99Us: Math.round(b.maxCycleMs * 1000), maxUs: Math.round(b.maxCycleMs * 1000) } },
        { id: 'lab.mpath.ours-over-mpathpersist', section: 'lab mpath', label: 'cycles/s ratio mpath-pr / mpathpersist', value: round(a.cyclesPerSecond / b.cyclesPerSecond), unit: 'ratio', higherIsBetter: true },
      ],
    };
    const line = (name: string, s: SideSummary) =>
      `      ${name.padEnd(13)} ${s.cyclesPerSecond.toFixed(2).padStart(7)} cycles/s ${s.opsPerSecond.toFixed(2).padStart(7)} ops/s  median cycle ${s.medianCycleMs.toFixed(1)} ms (register ${s.medianRegisterMs.toFixed(1)}, read keys ${s.medianReadKeysMs.toFixed(1)}), max ${s.maxCycleMs.toFixed(1)} ms`;
    console.log(line('mpath-pr', a));
    console.log(line('mpathpersist', b));
    console.log(`      ours/mpathpersist: ${result.ratioOursOverMpathpersist.throughput.toFixed(2)}x cycles/s, median cycle ${result.ratioOursOverMpathpersist.medianCycleSpeedup.toFixed(2)}x shorter`);
    const json = JSON.stringify(result);
    writeArtifact(topology, 'bench/mpath-vs-mpathpersist.json', JSON.stringify(result, null, 2) + '\n');
    // Also on the console, so the figures survive even when the artifact cannot be fetched.
    console.log(`BENCH-JSON ${json}`);
  });
});
