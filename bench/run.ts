// `npm run bench`: in-process engine and emulated-backend throughput, protocol round trips
// against our daemon and Debian's qemu-pr-helper, and daemon memory. Prints a table and
// writes bench/results/<timestamp>.json plus bench/results/latest.json (see bench/README.md).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { benchBackend, benchEngine, STORAGE_MODES } from './in-process';
import { gitInfo, machineInfo, readProcStatus, REPO_ROOT, round, type Metric } from './measure';
import {
  PEER_BINARY,
  peerVersion,
  RssSampler,
  runClients,
  runId,
  seedRegistration,
  startOurs,
  startPeer,
  type ClientLayout,
  type ServerHandle,
  type ServerKind,
} from './protocol';
import type { ProtocolOp } from './protocol-worker';
import { formatTable } from './table';

interface Options {
  /** Measured seconds per in-process metric. */
  readonly inProcessSeconds: number;
  /** Measured seconds per protocol metric. */
  readonly protocolSeconds: number;
  readonly warmupSeconds: number;
  readonly settleSeconds: number;
  readonly resultsDir: string;
}

function parseOptions(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const scale = Number(process.env.BENCH_SCALE ?? (quick ? 0.2 : 1));
  if (!(scale > 0)) throw new Error(`BENCH_SCALE must be a positive number, got ${process.env.BENCH_SCALE}`);
  const out = argv.indexOf('--out');
  return {
    inProcessSeconds: 2 * scale,
    protocolSeconds: 3 * scale,
    warmupSeconds: Math.min(0.5, 0.25 * scale),
    settleSeconds: 1,
    resultsDir: out >= 0 ? path.resolve(argv[out + 1]) : path.join(REPO_ROOT, 'bench', 'results'),
  };
}

const SINGLE: ClientLayout = { workers: 1, connectionsPerWorker: 1 };
/** 16 connections multiplexed on one client thread: the measured default (see README). */
const SIXTEEN: ClientLayout = { workers: 1, connectionsPerWorker: 16 };
/** The same 16 connections over 4 client threads, to check that one client thread is not the bottleneck. */
const SIXTEEN_SPREAD: ClientLayout = { workers: 4, connectionsPerWorker: 4 };

const PEER_NOTE =
  'qemu-pr-helper is given a regular file: it sends the CDB down its SG_IO path, the ioctl fails (ENOTTY) and it answers ' +
  'CHECK CONDITION, IO ERROR 0B/00/06. Its figures are therefore the protocol + dispatch round trip (socket, SCM_RIGHTS, ' +
  'thread-pool hop, reply) with no reservation work; ours include the full emulated PR command (SQLite transaction, and ' +
  'for PR OUT a durable commit with fsync).';

interface MemoryReport {
  idle: { vmRssKb: number; vmHwmKb: number } | null;
  loadedMaxRssKb: number | null;
  loadedHwmKb: number | null;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const startedAt = new Date();
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'mpath-pr-bench-'));
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const metrics: Metric[] = [];
  const loadBefore = os.loadavg();
  log(`mpath-pr bench: ${os.cpus().length} CPUs, load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, scratch ${scratch}`);
  if (loadBefore[0] > os.cpus().length * 0.5) {
    log(`WARNING: the machine is already busy (1-min load ${loadBefore[0].toFixed(2)}); throughput figures will be low and noisy. Prefer the server CPU per command figures.`);
  }

  // ---- in process ----
  log('\n[1/3] in-process: engine and emulated backend');
  const inProcess = { seconds: options.inProcessSeconds, warmupSeconds: options.warmupSeconds, scratchDir: scratch, log };
  metrics.push(...benchEngine(inProcess));
  for (const { mode } of STORAGE_MODES) metrics.push(...(await benchBackend(mode, inProcess)));

  // ---- protocol ----
  log('\n[2/3] protocol over a Unix socket');
  const device = path.join(scratch, 'lu.img');
  fs.writeFileSync(device, Buffer.alloc(1 << 20));
  const servers: Partial<Record<ServerKind, ServerHandle>> = {};
  const memory: Partial<Record<'ours' | 'peer', MemoryReport>> = {};
  let peerUnavailable: string | null = null;
  let clientCapacity: Record<string, unknown> | null = null;
  try {
    servers.ours = await startOurs('ours', scratch, scratch);
    if (!fs.existsSync(PEER_BINARY)) {
      peerUnavailable = `${PEER_BINARY} not found (Debian package qemu-system-common: apt-get install qemu-system-common)`;
    } else {
      try {
        servers.peer = await startPeer(scratch);
      } catch (error) {
        peerUnavailable = `${PEER_BINARY} did not start: ${(error as Error).message}`;
      }
    }
    if (peerUnavailable) log(`\n!!!!!!!! PEER UNAVAILABLE: ${peerUnavailable}\n!!!!!!!! no ours/peer ratios in this run\n`);
    await sleep(options.settleSeconds * 1000);
    for (const kind of ['ours', 'peer'] as const) {
      const server = servers[kind];
      if (server) memory[kind] = { idle: readProcStatus(server.pid), loadedMaxRssKb: null, loadedHwmKb: null };
    }
    await seedRegistration(servers.ours, device);

    const samplers = { ours: new RssSampler(servers.ours.pid), peer: servers.peer ? new RssSampler(servers.peer.pid) : null };
    const run = async (kind: ServerKind, op: ProtocolOp, layout: ClientLayout, sample: boolean, background?: ProtocolOp) => {
      const server = servers[kind];
      if (!server) return;
      const sampler = kind === 'ours' ? samplers.ours : kind === 'peer' ? samplers.peer : null;
      const result = await runClients({
        server,
        op,
        layout,
        devicePath: device,
        seconds: options.protocolSeconds,
        warmupSeconds: options.warmupSeconds,
        background,
        onTick: sample && sampler ? () => sampler.sample() : undefined,
      });
      metrics.push(result);
      log(`  ${result.label}: ${Math.round(result.value)} ops/s, p50 ${result.latency?.p50Us} us, server CPU ${result.cpuUsPerOp ?? '?'} us/cmd`);
    };
    // Ours and the peer alternate per configuration so slow drifts in machine load hit both alike.
    for (const op of ['pr-in', 'pr-out'] as const) {
      for (const layout of [SINGLE, SIXTEEN]) {
        for (const kind of ['ours', 'peer'] as const) await run(kind, op, layout, layout === SIXTEEN);
      }
    }
    for (const kind of ['ours', 'peer'] as const) await run(kind, 'pr-in', SIXTEEN_SPREAD, true);
    for (const kind of ['ours', 'peer'] as const) {
      const server = servers[kind];
      const report = memory[kind];
      const sampler = samplers[kind];
      if (!server || !report || !sampler) continue;
      report.loadedMaxRssKb = sampler.maxRssKb || null;
      report.loadedHwmKb = readProcStatus(server.pid)?.vmHwmKb ?? null;
    }
    // Head-of-line check: does one client's durable PR OUT delay another client's PR IN?
    for (const kind of ['ours', 'peer'] as const) await run(kind, 'pr-in', SINGLE, false, 'pr-out');
    clientCapacity = judgeClientCapacity(metrics);
    log(`  client capacity: ${clientCapacity.conclusion}`);

    // The same daemon with its state on tmpfs: fsync is free there, which isolates the protocol
    // and engine cost of a PR OUT from the disk's flush latency.
    if (fs.existsSync('/dev/shm')) {
      const shm = fs.mkdtempSync('/dev/shm/mpath-pr-bench-');
      try {
        servers['ours-tmpfs'] = await startOurs('ours-tmpfs', scratch, shm);
        for (const layout of [SINGLE, SIXTEEN]) await run('ours-tmpfs', 'pr-out', layout, false);
      } finally {
        await servers['ours-tmpfs']?.stop();
        delete servers['ours-tmpfs'];
        fs.rmSync(shm, { recursive: true, force: true });
      }
    }
  } finally {
    for (const server of Object.values(servers)) await server?.stop();
  }

  // ---- memory ----
  log('\n[3/3] daemon memory (VmRSS / VmHWM from /proc/<pid>/status)');
  for (const kind of ['ours', 'peer'] as const) {
    const report = memory[kind];
    if (!report) continue;
    const add = (what: string, label: string, value: number | null | undefined) => {
      if (value === null || value === undefined || Number.isNaN(value)) return;
      metrics.push({ id: `rss.${kind}.${what}`, section: 'memory', label: `${kind}: ${label}`, value, unit: 'kB', higherIsBetter: false });
    };
    add('idle.vmrss', 'VmRSS idle (after start + settle)', report.idle?.vmRssKb);
    add('loaded.max-vmrss', 'VmRSS max during 16-client runs', report.loadedMaxRssKb);
    add('loaded.vmhwm', 'VmHWM after the loaded runs', report.loadedHwmKb);
  }

  const ratios = !peerUnavailable ? computeRatios(metrics) : [];
  metrics.push(...ratios);
  const loadAfter = os.loadavg();
  const finishedAt = new Date();
  const result = {
    schema: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationSeconds: round((finishedAt.getTime() - startedAt.getTime()) / 1000, 1),
    options,
    machine: machineInfo(scratch),
    loadAverage: { before: loadBefore.map((l) => round(l, 2)), after: loadAfter.map((l) => round(l, 2)) },
    git: gitInfo(REPO_ROOT),
    peer: peerUnavailable
      ? null
      : { binary: PEER_BINARY, version: peerVersion(), note: PEER_NOTE },
    peerUnavailableReason: peerUnavailable,
    clientCapacity,
    metrics,
  };

  log('');
  log(formatTable(metrics));
  log('');
  log(`Peer: ${peerUnavailable ? `UNAVAILABLE: ${peerUnavailable}` : `${result.peer?.version ?? PEER_BINARY}`}`);
  if (!peerUnavailable) log(`NOTE: ${PEER_NOTE}`);
  log(`Load average before ${result.loadAverage.before.join(' ')}, after ${result.loadAverage.after.join(' ')} (${os.cpus().length} CPUs).`);

  fs.mkdirSync(options.resultsDir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const file = path.join(options.resultsDir, `${stamp}.json`);
  const json = `${JSON.stringify(result, null, 2)}\n`;
  fs.writeFileSync(file, json);
  fs.writeFileSync(path.join(options.resultsDir, 'latest.json'), json);
  log(`\nwrote ${path.relative(process.cwd(), file)} and latest.json (${result.durationSeconds} s)`);
  fs.rmSync(scratch, { recursive: true, force: true });
}

function find(metrics: readonly Metric[], id: string): Metric | undefined {
  return metrics.find((m) => m.id === id);
}

/** ours/peer throughput (and server CPU per command) for each protocol configuration. */
function computeRatios(metrics: readonly Metric[]): Metric[] {
  const out: Metric[] = [];
  const pairs: [ServerKind, ProtocolOp, ClientLayout, ProtocolOp?][] = [
    ['ours', 'pr-in', SINGLE],
    ['ours', 'pr-in', SIXTEEN],
    ['ours', 'pr-in', SIXTEEN_SPREAD],
    ['ours', 'pr-out', SINGLE],
    ['ours', 'pr-out', SIXTEEN],
    ['ours', 'pr-in', SINGLE, 'pr-out'],
    ['ours-tmpfs', 'pr-out', SINGLE],
    ['ours-tmpfs', 'pr-out', SIXTEEN],
  ];
  for (const [kind, op, layout, background] of pairs) {
    const oursId = runId(kind, op, layout, background);
    const peerId = runId('peer', op, layout, background);
    const ours = find(metrics, oursId);
    const peer = find(metrics, peerId);
    if (!ours || !peer) continue;
    const suffix = oursId.slice(`protocol.${kind}.`.length);
    out.push({
      id: `ratio.${kind}-vs-peer.${suffix}`,
      section: 'ours / peer',
      label: `${kind}/peer throughput, ${ours.label.slice(ours.label.indexOf(':') + 2)}`,
      value: ours.value / peer.value,
      unit: 'ratio',
      higherIsBetter: true,
    });
    if (ours.cpuUsPerOp && peer.cpuUsPerOp) {
      out.push({
        id: `ratio.${kind}-vs-peer.${suffix}.server-cpu`,
        section: 'ours / peer',
        label: `${kind}/peer server CPU per command, ${ours.label.slice(ours.label.indexOf(':') + 2)}`,
        value: ours.cpuUsPerOp / peer.cpuUsPerOp,
        unit: 'ratio',
        higherIsBetter: false,
      });
    }
  }
  return out;
}

/**
 * Whether one client thread can drive 16 connections. Primary evidence: how busy that
 * thread's event loop was (a saturated client shows ~1.0). Secondary: whether spreading the
 * same 16 connections over 4 threads raised throughput beyond the noise margin; on a busy
 * machine a single pair of runs can disagree, so both figures are kept.
 */
function judgeClientCapacity(metrics: readonly Metric[]): Record<string, unknown> & { conclusion: string } {
  const NOISE = 1.1;
  const SATURATED_ELU = 0.9;
  const verdicts: string[] = [];
  const figures: Record<string, { oneThread: number; fourThreads: number; oneThreadClientElu?: number; fourThreadsClientElu?: number }> = {};
  for (const kind of ['ours', 'peer'] as const) {
    const one = find(metrics, runId(kind, 'pr-in', SIXTEEN));
    const four = find(metrics, runId(kind, 'pr-in', SIXTEEN_SPREAD));
    if (!one || !four) continue;
    figures[kind] = {
      oneThread: round(one.value),
      fourThreads: round(four.value),
      oneThreadClientElu: one.clientEventLoopUtilization,
      fourThreadsClientElu: four.clientEventLoopUtilization,
    };
    const gain = four.value / one.value;
    const elu = one.clientEventLoopUtilization ?? NaN;
    const saturated = elu >= SATURATED_ELU;
    verdicts.push(
      `${kind}: the single client thread was ${Math.round(elu * 100)}% busy ` +
        `(${saturated ? 'saturated: one client thread is a bottleneck' : 'not saturated: one client thread suffices'}); ` +
        `4 threads gave ${gain.toFixed(2)}x its throughput${gain > NOISE === saturated ? '' : ' (throughput disagrees: noise, or on a loaded machine more client threads simply win a larger share of the CPUs)'}`,
    );
  }
  return { figures, noiseMargin: NOISE, saturatedElu: SATURATED_ELU, conclusion: verdicts.join('; ') || 'not measured' };
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
