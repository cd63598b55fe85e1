// Command line of the lab: `npm run test:lab` (every suite, one boot per
// configuration) and `npm run lab -- --shell|--run CMD` (one boot for a person
// or an ad-hoc command). See test/lab/README.md.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ensureImage, ensurePackages, LabUnavailableError } from './host-image';
import {
  configKey,
  DEFAULT_CONFIG,
  describeConfig,
  discoverSuites,
  groupSuites,
  LabConfig,
  LabGroup,
  normalizeConfig,
} from './lab-config';
import { bootLab, BootResult, shellQuote } from './vm';

const USAGE = `usage:
  main.js test [--fabric F] [--paths N] [--grep RE] [--timeout S] [--update-fixtures] [SUITE...]
      run the lab suites (test/lab/**/*.lab.ts), one boot per configuration they declare;
      --fabric/--paths keep only the configurations that match, SUITE keeps only those files;
      --timeout is the deadline of each boot (default 300 s + 300 s per suite in it)
  main.js --shell [--fabric tcm_loop|iscsi] [--paths N] [--second-host] [--dbus]
      boot one lab with an interactive root shell on this terminal
  main.js --run 'COMMAND' [--fabric ...] [--paths N] [--second-host] [--dbus] [--timeout S]
      boot one lab, run COMMAND (bash) in the repository with the LAB_* environment, return its status`;

interface Options {
  command: 'test' | 'shell' | 'run';
  runCommand?: string;
  partial: Record<string, unknown>;
  grep?: string;
  /** Per-boot deadline; undefined means 300 s plus 300 s per suite in the boot (600 s for --run). */
  timeoutSeconds?: number;
  updateFixtures: boolean;
  suites: string[];
}

function parseArgs(argv: string[]): Options {
  const options: Options = { command: 'test', partial: {}, updateFixtures: false, suites: [] };
  let explicit = false;
  const value = (flag: string, index: number): string => {
    const next = argv[index + 1];
    if (next === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
    return next;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    switch (arg) {
      case 'test':
        options.command = 'test';
        explicit = true;
        break;
      case '--shell':
        options.command = 'shell';
        explicit = true;
        break;
      case '--run':
        options.command = 'run';
        options.runCommand = value(arg, i++);
        explicit = true;
        break;
      case '--fabric':
        options.partial.fabric = value(arg, i++);
        break;
      case '--paths':
        options.partial.paths = Number(value(arg, i++));
        break;
      case '--second-host':
        options.partial.secondHost = true;
        break;
      case '--dbus':
        options.partial.dbus = true;
        break;
      case '--grep':
        options.grep = value(arg, i++);
        break;
      case '--timeout':
        options.timeoutSeconds = Number(value(arg, i++));
        if (!(options.timeoutSeconds > 0)) throw new Error(`--timeout must be a positive number of seconds`);
        break;
      case '--update-fixtures':
        options.updateFixtures = true;
        break;
      case '-h':
      case '--help':
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        if (arg.startsWith('-')) throw new Error(`unknown option ${arg}\n${USAGE}`);
        options.suites.push(arg);
    }
  }
  if (!explicit) throw new Error(`say what to do: test, --shell or --run 'COMMAND'\n${USAGE}`);
  return options;
}

function findRepoRoot(): string {
  // Compiled to dist/test/lab/harness/main.js.
  const root = path.resolve(__dirname, '..', '..', '..', '..');
  if (!fs.existsSync(path.join(root, 'package.json')) || !fs.existsSync(path.join(root, 'test', 'lab', 'harness'))) {
    throw new Error(`cannot find the repository root from ${__dirname}`);
  }
  return root;
}

function log(line: string): void {
  process.stderr.write(line + '\n');
}

/** A run directory per boot, so concurrent runs never share one; those of dead processes are removed. */
function makeRunDir(cacheDir: string, key: string): string {
  const runs = path.join(cacheDir, 'runs');
  fs.mkdirSync(runs, { recursive: true });
  for (const name of fs.readdirSync(runs)) {
    const pid = Number(name.split('-')[0]);
    let alive = pid === process.pid;
    if (!alive && pid > 0) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch {
        alive = false;
      }
    }
    if (!alive) fs.rmSync(path.join(runs, name), { recursive: true, force: true });
  }
  return path.join(runs, `${process.pid}-${key}`);
}

function copyTree(from: string, to: string): string[] {
  const copied: string[] = [];
  if (!fs.existsSync(from)) return copied;
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) {
      copied.push(...copyTree(source, target));
    } else if (entry.isFile()) {
      fs.mkdirSync(to, { recursive: true });
      fs.copyFileSync(source, target);
      copied.push(target);
    }
  }
  return copied;
}

/** Mocha's spec reporter summary: "N passing", "N failing", "N pending". */
export function mochaCounts(output: string): { passing: number; failing: number; pending: number } | undefined {
  const count = (word: string) => {
    const matches = [...output.matchAll(new RegExp(`^\\s*(\\d+) ${word}\\b`, 'gm'))];
    return matches.length ? Number(matches[matches.length - 1][1]) : 0;
  };
  if (!/^\s*\d+ (passing|failing|pending)\b/m.test(output)) return undefined;
  return { passing: count('passing'), failing: count('failing'), pending: count('pending') };
}

function phaseSummary(result: BootResult): string {
  return result.phases.map((p) => `${p.phase}@${p.uptime.toFixed(1)}`).join(' ');
}

interface Prepared {
  repoRoot: string;
  cacheDir: string;
  image: ReturnType<typeof ensureImage>;
}

function prepare(): Prepared {
  const repoRoot = findRepoRoot();
  const cacheDir = process.env.LAB_CACHE_DIR ?? path.join(repoRoot, '.lab-cache');
  const started = Date.now();
  ensurePackages(log);
  const image = ensureImage(cacheDir, path.join(repoRoot, 'test', 'lab', 'harness'), log);
  const spent = Date.now() - started;
  if (spent > 1000) log(`lab: host preparation took ${(spent / 1000).toFixed(1)} s`);
  return { repoRoot, cacheDir, image };
}

async function runTests(options: Options): Promise<number> {
  const { repoRoot, cacheDir, image } = prepare();
  let suites = discoverSuites(repoRoot);
  if (options.suites.length > 0) {
    const wanted = options.suites.map((s) => path.resolve(s));
    suites = suites.filter((s) => wanted.some((w) => w === path.resolve(repoRoot, s.source) || w === path.resolve(repoRoot, s.compiled)));
    if (suites.length === 0) throw new Error(`no lab suite matches ${options.suites.join(' ')}`);
  }
  let groups: LabGroup[] = groupSuites(suites);
  if (Object.keys(options.partial).length > 0) {
    const filter = options.partial;
    groups = groups.filter((g) => Object.entries(filter).every(([k, v]) => g.config[k as keyof LabConfig] === v));
  }
  if (groups.length === 0) throw new Error('no lab suite/configuration to run (a lab run that runs nothing is a failure)');
  for (const suite of suites) {
    if (!fs.existsSync(path.join(repoRoot, suite.compiled))) {
      throw new Error(`${suite.compiled} is missing: build first (npm run build)`);
    }
  }

  const mocha = path.join(repoRoot, 'node_modules', 'mocha', 'bin', 'mocha.js');
  let passed = 0;
  let failed = 0;
  let pending = 0;
  const summary: string[] = [];
  for (const group of groups) {
    const key = configKey(group.config);
    const files = group.suites.map((s) => s.compiled);
    log(`\n=== lab ${describeConfig(group.config)}: ${group.suites.map((s) => path.basename(s.source)).join(', ')} ===`);
    // --enable-source-maps goes to node itself: given to mocha, it makes mocha spawn a
    // second node process for it, which costs seconds under TCG.
    const command = [
      'exec',
      shellQuote(process.execPath),
      '--enable-source-maps',
      shellQuote(mocha),
      '--no-config',
      '--no-package',
      '--timeout', '120000',
      '--reporter', 'spec',
      ...(process.stdout.isTTY ? ['--color'] : []),
      ...(options.grep ? ['--grep', shellQuote(options.grep)] : []),
      ...files.map(shellQuote),
    ].join(' ');
    const result = await bootLab({
      config: group.config,
      image,
      repoRoot,
      runDir: makeRunDir(cacheDir, key),
      mode: 'run',
      command,
      timeoutMs: (options.timeoutSeconds ?? 300 + 300 * group.suites.length) * 1000,
      setupTimeoutMs: 180_000,
      onOutput: (chunk) => process.stdout.write(chunk),
    });
    const counts = mochaCounts(result.output);
    const wall = `${(result.wallMs / 1000).toFixed(1)} s`;
    if (result.failure) {
      failed += Math.max(1, counts?.failing ?? 0);
      passed += counts?.passing ?? 0;
      log(`\nlab: ${describeConfig(group.config)}: LAB FAILURE after ${wall}\n${result.failure}\n(run directory: ${result.runDir})`);
      summary.push(`${key}: lab failure (${wall})`);
      continue;
    }
    if (!counts || counts.passing + counts.failing === 0) {
      failed += 1;
      summary.push(`${key}: exit ${result.exitStatus}, no test ran (${wall})`);
      log(`lab: ${describeConfig(group.config)}: no test ran; exit status ${result.exitStatus}`);
      continue;
    }
    passed += counts.passing;
    pending += counts.pending;
    failed += counts.failing + (result.exitStatus !== 0 && counts.failing === 0 ? 1 : 0);
    summary.push(`${key}: exit ${result.exitStatus}, ${counts.passing} passing, ${counts.failing} failing (${wall}; guest ${phaseSummary(result)})`);
    if (options.updateFixtures) {
      const copied = copyTree(path.join(result.runDir, 'artifacts', 'fixtures'), path.join(repoRoot, 'fixtures'));
      for (const file of copied) log(`lab: updated ${path.relative(repoRoot, file)}`);
    }
  }
  log('\nlab summary:\n  ' + summary.join('\n  '));
  // Pending tests (mocha's skips with a reason) are counted, not hidden.
  console.log(`lab: ${passed} passed, ${failed} failed${pending ? `, ${pending} skipped` : ''}`);
  return failed === 0 ? 0 : 1;
}

async function runOne(options: Options): Promise<number> {
  const config = normalizeConfig({ ...DEFAULT_CONFIG, ...options.partial }, 'command line');
  const { repoRoot, cacheDir, image } = prepare();
  const result = await bootLab({
    config,
    image,
    repoRoot,
    runDir: makeRunDir(cacheDir, configKey(config)),
    mode: options.command === 'shell' ? 'shell' : 'run',
    command: options.runCommand,
    timeoutMs: (options.timeoutSeconds ?? 600) * 1000,
    setupTimeoutMs: 180_000,
    onOutput: (chunk) => process.stdout.write(chunk),
  });
  if (result.failure) {
    log(`\nlab: LAB FAILURE after ${(result.wallMs / 1000).toFixed(1)} s\n${result.failure}\n(run directory: ${result.runDir})`);
    return 1;
  }
  log(`lab: ${describeConfig(config)}: exit ${result.exitStatus} in ${(result.wallMs / 1000).toFixed(1)} s (guest ${phaseSummary(result)})`);
  return result.exitStatus ?? 1;
}

async function main(): Promise<number> {
  const options = parseArgs(process.argv.slice(2));
  return options.command === 'test' ? runTests(options) : runOne(options);
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      const reason = error instanceof LabUnavailableError ? 'the lab VM cannot run on this machine: ' : '';
      log(`lab: FAILED: ${reason}${error instanceof Error ? error.message : String(error)}`);
      console.log('lab: 0 passed, 1 failed');
      process.exit(2);
    },
  );
}
