// `npm run bench:lab`: boots the SAN lab VM once and runs the lab benchmarks in it
// (test/lab/bench/*.bench.ts, mocha suites like the lab suites but never collected by
// `npm run test:lab`, which only takes *.lab.ts), then copies each JSON result the guest left
// in its artifacts/bench/ into bench/results/lab-<name>-<timestamp>.json and
// bench/results/lab-<name>-latest.json, adding the host's commit and load. See bench/README.md.
//
//   node dist/bench/lab.js [--timeout S] [BENCH_FILE...]    (default: every test/lab/bench/*.bench.ts)

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureImage, ensurePackages, LabUnavailableError } from '../test/lab/harness/host-image';
import { configKey, describeConfig, parseLabHeaders, type LabConfig } from '../test/lab/harness/lab-config';
import { mochaCounts } from '../test/lab/harness/main';
import { bootLab, shellQuote } from '../test/lab/harness/vm';
import { gitInfo, REPO_ROOT } from './measure';

const BENCH_DIR = path.join('test', 'lab', 'bench');

interface BenchFile {
  source: string;
  compiled: string;
  config: LabConfig;
}

function log(line: string): void {
  process.stderr.write(line + '\n');
}

function benchFiles(requested: string[]): BenchFile[] {
  const sources = requested.length
    ? requested.map((f) => path.relative(REPO_ROOT, path.resolve(f)))
    : fs
        .readdirSync(path.join(REPO_ROOT, BENCH_DIR))
        .filter((f) => f.endsWith('.bench.ts'))
        .sort()
        .map((f) => path.join(BENCH_DIR, f));
  if (sources.length === 0) throw new Error(`no lab benchmark in ${BENCH_DIR}`);
  return sources.map((source) => {
    if (!source.endsWith('.bench.ts')) throw new Error(`${source}: lab benchmarks are .bench.ts files (a .lab.ts file would also run in npm run test:lab)`);
    const configs = parseLabHeaders(fs.readFileSync(path.join(REPO_ROOT, source), 'utf8'), source);
    // One configuration per benchmark: the figures of different fabrics are not one result.
    if (configs.length !== 1) throw new Error(`${source}: a lab benchmark declares exactly one @lab configuration, found ${configs.length}`);
    const compiled = path.join('dist', source.replace(/\.ts$/, '.js'));
    if (!fs.existsSync(path.join(REPO_ROOT, compiled))) throw new Error(`${compiled} is missing: build first (npm run build)`);
    return { source, compiled, config: configs[0] };
  });
}

/** The JSON results a benchmark left: the artifact files, or else its `BENCH-JSON {...}` console lines. */
function collectResults(artifactsDir: string, output: string): Array<{ name: string; result: Record<string, unknown> }> {
  const found: Array<{ name: string; result: Record<string, unknown> }> = [];
  if (fs.existsSync(artifactsDir)) {
    for (const file of fs.readdirSync(artifactsDir).filter((f) => f.endsWith('.json')).sort()) {
      found.push({ name: path.basename(file, '.json'), result: JSON.parse(fs.readFileSync(path.join(artifactsDir, file), 'utf8')) });
    }
  }
  if (found.length === 0) {
    for (const match of output.matchAll(/^BENCH-JSON (\{.*\})\s*$/gm)) {
      const result = JSON.parse(match[1]) as Record<string, unknown>;
      found.push({ name: String(result.kind ?? 'lab-bench'), result });
    }
  }
  return found;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let timeoutSeconds = 900;
  const requested: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--timeout') {
      timeoutSeconds = Number(argv[++i]);
      if (!(timeoutSeconds > 0)) throw new Error('--timeout must be a positive number of seconds');
    } else if (argv[i].startsWith('-')) {
      throw new Error(`unknown option ${argv[i]}; usage: lab.js [--timeout S] [BENCH_FILE...]`);
    } else {
      requested.push(argv[i]);
    }
  }
  const files = benchFiles(requested);
  const cacheDir = process.env.LAB_CACHE_DIR ?? path.join(REPO_ROOT, '.lab-cache');
  ensurePackages(log);
  const image = ensureImage(cacheDir, path.join(REPO_ROOT, 'test', 'lab', 'harness'), log);
  const resultsDir = path.join(REPO_ROOT, 'bench', 'results');
  const mocha = path.join(REPO_ROOT, 'node_modules', 'mocha', 'bin', 'mocha.js');
  let failures = 0;

  // One boot per benchmark, so no benchmark runs on a LU another one just used.
  for (const file of files) {
    const key = configKey(file.config);
    log(`\n=== lab bench ${describeConfig(file.config)}: ${file.source} ===`);
    const hostLoadBefore = os.loadavg();
    // The run directory name starts with our pid, like the lab runner's: its clean-up of
    // dead runs leaves it alone while we run.
    const runDir = path.join(cacheDir, 'runs', `${process.pid}-bench-${key}`);
    fs.rmSync(runDir, { recursive: true, force: true });
    const command = ['exec', shellQuote(process.execPath), '--enable-source-maps', shellQuote(mocha), '--no-config', '--no-package', '--timeout', '600000', '--reporter', 'spec', shellQuote(file.compiled)].join(' ');
    const result = await bootLab({
      config: file.config,
      image,
      repoRoot: REPO_ROOT,
      runDir,
      mode: 'run',
      command,
      // Benchmark knobs (BENCH_LAB_*) reach the guest's job environment.
      env: Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith('BENCH_LAB_') && e[1] !== undefined)),
      timeoutMs: timeoutSeconds * 1000,
      setupTimeoutMs: 180_000,
      onOutput: (chunk) => process.stdout.write(chunk),
    });
    const counts = mochaCounts(result.output);
    if (result.failure || result.exitStatus !== 0 || !counts || counts.failing > 0 || counts.passing === 0) {
      failures++;
      log(`lab bench: ${file.source} FAILED (exit ${result.exitStatus}${result.failure ? `; ${result.failure}` : ''}); run directory ${result.runDir}; no result written`);
      continue;
    }
    const results = collectResults(path.join(result.runDir, 'artifacts', 'bench'), result.output);
    if (results.length === 0) {
      failures++;
      log(`lab bench: ${file.source} passed but left no JSON result (artifacts/bench/*.json or BENCH-JSON line)`);
      continue;
    }
    fs.mkdirSync(resultsDir, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    for (const { name, result: body } of results) {
      const stored = {
        ...body,
        source: file.source,
        git: gitInfo(REPO_ROOT),
        host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', kernel: os.release(), node: process.version, loadAverage: { before: hostLoadBefore, after: os.loadavg() } },
        labWallMs: result.wallMs,
      };
      const text = JSON.stringify(stored, null, 2) + '\n';
      const target = path.join(resultsDir, `lab-${name}-${stamp}.json`);
      fs.writeFileSync(target, text);
      fs.writeFileSync(path.join(resultsDir, `lab-${name}-latest.json`), text);
      log(`lab bench: wrote ${path.relative(REPO_ROOT, target)} (and lab-${name}-latest.json)`);
    }
  }
  return failures === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    const reason = error instanceof LabUnavailableError ? 'the lab VM cannot run on this machine: ' : '';
    log(`lab bench: FAILED: ${reason}${error instanceof Error ? error.message : String(error)}`);
    process.exit(2);
  },
);
