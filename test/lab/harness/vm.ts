// One boot of the lab VM: QEMU under TCG with the host's / shared read-only over
// virtio-9p and a writable "results" share (the run directory) through which the
// host hands the guest its job and the guest hands back phase, logs, topology
// and the exit status. The job's output also streams to the host live on the
// guest's second serial port. Every boot has a deadline: a guest that never
// finishes is killed and reported with its console log tail.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LabConfig } from './lab-config';
import { LabImage } from './host-image';

export const QEMU = '/usr/bin/qemu-system-x86_64';

export interface BootOptions {
  config: LabConfig;
  image: LabImage;
  repoRoot: string;
  /** Host directory shared writable with the guest at /lab; emptied first. */
  runDir: string;
  /** 'run' executes `command` and powers off; 'shell' gives an interactive shell on this terminal. */
  mode: 'run' | 'shell';
  /** bash command line run in the guest (mode 'run'), with the LAB_* environment set. */
  command?: string;
  /** Extra environment for the command. */
  env?: Record<string, string>;
  /** Whole-boot deadline (mode 'run'). */
  timeoutMs: number;
  /** Deadline for the guest to finish its setup (reach phase "ready"). */
  setupTimeoutMs: number;
  /** Receives the command's output as it streams from the guest. */
  onOutput?: (chunk: Buffer) => void;
}

export interface BootResult {
  /** The command's exit status, or null when the lab failed before the command finished. */
  exitStatus: number | null;
  /** Why the lab (not the command) failed, with the evidence; undefined on a clean run. */
  failure?: string;
  /** The command's full output as the guest recorded it. */
  output: string;
  /** Guest seconds since boot at each setup phase, as reported by the guest. */
  phases: Array<{ phase: string; uptime: number }>;
  wallMs: number;
  runDir: string;
}

/** Quotes a value for bash `source`. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

function readIfExists(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function tail(text: string, lines: number): string {
  return text.replace(/\r/g, '').trimEnd().split('\n').slice(-lines).join('\n');
}

export function parsePhases(text: string): Array<{ phase: string; uptime: number }> {
  return text
    .split('\n')
    .map((line) => /^(\S+)\s+([\d.]+)$/.exec(line.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ phase: m[1], uptime: Number(m[2]) }));
}

export function qemuArgs(options: BootOptions): string[] {
  const { image, repoRoot, runDir, mode } = options;
  const append = [
    'console=ttyS0',
    'panic=-1',
    // TSC calibration under TCG on a busy host can be wildly off (guest time ran 11x
    // fast in one boot), which breaks every deadline in the guest; HPET is read from
    // the host clock.
    'clocksource=hpet',
    'tsc=unstable',
    // A guest under TCG gains nothing from these and pays for them in boot time.
    'mitigations=off',
    'no_timer_check',
    'i8042.noaux',
    'i8042.nokbd',
    'nowatchdog',
    ...(mode === 'shell' ? ['quiet'] : []),
    `lab.init=${path.join(repoRoot, 'test/lab/harness/guest-setup.sh')}`,
    `lab.repo=${repoRoot}`,
  ].join(' ');
  const args = [
    '-accel', 'tcg',
    '-machine', 'pc',
    '-cpu', 'max',
    '-smp', '2',
    '-m', '2048',
    '-nodefaults',
    '-no-user-config',
    '-no-reboot',
    '-display', 'none',
    '-kernel', image.vmlinux,
    '-initrd', image.initramfs,
    '-append', append,
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${runDir},mount_tag=labout,security_model=none,multidevs=remap`,
  ];
  if (mode === 'shell') {
    args.push('-serial', 'mon:stdio');
  } else {
    args.push('-serial', `file:${path.join(runDir, 'console.log')}`, '-serial', 'stdio', '-monitor', 'none');
  }
  return args;
}

export function writeJob(options: BootOptions): void {
  const { config, runDir, mode } = options;
  fs.rmSync(runDir, { recursive: true, force: true });
  fs.mkdirSync(path.join(runDir, 'artifacts'), { recursive: true });
  const vars: Record<string, string> = {
    LAB_MODE: mode,
    LAB_FABRIC: config.fabric,
    LAB_PATHS: String(config.paths),
    LAB_SECOND_HOST: config.secondHost ? '1' : '0',
    LAB_DBUS: config.dbus ? '1' : '0',
    LAB_COMMAND: options.command ?? '',
    LAB_TERM_ROWS: String(process.stdout.rows ?? 24),
    LAB_TERM_COLS: String(process.stdout.columns ?? 80),
    // Debugging aid: LAB_FULL_UDEV=1 keeps every packaged udev rule.
    LAB_FULL_UDEV: process.env.LAB_FULL_UDEV === '1' ? '1' : '0',
  };
  const extra = Object.entries(options.env ?? {}).map(([name, value]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`bad environment variable name ${JSON.stringify(name)}`);
    return `export ${name}=${shellQuote(value)}`;
  });
  const lines = [...Object.entries(vars).map(([name, value]) => `${name}=${shellQuote(value)}`), ...extra];
  fs.writeFileSync(path.join(runDir, 'job.env'), lines.join('\n') + '\n');
}

/** Boots the lab once and resolves when QEMU has exited (never rejects for guest failures). */
export function bootLab(options: BootOptions): Promise<BootResult> {
  writeJob(options);
  const { runDir } = options;
  const started = Date.now();
  const child = spawn(QEMU, qemuArgs(options), {
    stdio: options.mode === 'shell' ? 'inherit' : ['ignore', 'pipe', 'pipe'],
  });
  let qemuStderr = '';
  child.stdout?.on('data', (chunk: Buffer) => options.onOutput?.(chunk));
  child.stderr?.on('data', (chunk: Buffer) => {
    qemuStderr += chunk.toString();
  });

  let killedFor: string | undefined;
  const kill = (reason: string) => {
    if (killedFor !== undefined) return;
    killedFor = reason;
    child.kill('SIGKILL');
  };
  const timers: NodeJS.Timeout[] = [];
  if (options.mode === 'run') {
    timers.push(setTimeout(() => kill(`the boot exceeded its ${options.timeoutMs / 1000} s deadline`), options.timeoutMs));
    const setupWatch = setInterval(() => {
      const phases = parsePhases(readIfExists(path.join(runDir, 'phases')));
      if (phases.some((p) => p.phase === 'ready' || p.phase === 'failed')) {
        clearInterval(setupWatch);
      } else if (Date.now() - started > options.setupTimeoutMs) {
        clearInterval(setupWatch);
        kill(`the guest did not finish its setup within ${options.setupTimeoutMs / 1000} s`);
      }
    }, 250);
    timers.push(setupWatch);
  }

  return new Promise((resolve) => {
    let spawnError: Error | undefined;
    child.on('error', (error) => {
      spawnError = error;
    });
    child.on('close', (code, signal) => {
      timers.forEach((t) => clearTimeout(t));
      const phases = parsePhases(readIfExists(path.join(runDir, 'phases')));
      const statusText = readIfExists(path.join(runDir, 'exit-status')).trim();
      const guestFailure = readIfExists(path.join(runDir, 'failure')).trim();
      const output = readIfExists(path.join(runDir, 'output.log'));
      const exitStatus = /^\d+$/.test(statusText) ? Number(statusText) : null;
      let failure: string | undefined;
      if (spawnError) {
        failure = `could not start ${QEMU}: ${spawnError.message}`;
      } else if (killedFor || guestFailure || (options.mode === 'run' && exitStatus === null)) {
        const lastPhase = phases.at(-1)?.phase ?? 'stage 1 (initramfs)';
        const why =
          killedFor ??
          (guestFailure
            ? `the guest setup failed: ${guestFailure}`
            : `QEMU exited (${signal ?? `status ${code}`}) without the guest reporting an exit status`);
        failure = [
          `${why}; last phase reached: ${lastPhase}`,
          qemuStderr.trim() ? `--- QEMU stderr ---\n${tail(qemuStderr, 20)}` : '',
          readIfExists(path.join(runDir, 'setup.log')) ? `--- guest setup log (tail) ---\n${tail(readIfExists(path.join(runDir, 'setup.log')), 30)}` : '',
          `--- guest console (tail of ${path.join(runDir, 'console.log')}) ---\n${tail(readIfExists(path.join(runDir, 'console.log')), 40)}`,
        ]
          .filter(Boolean)
          .join('\n');
      }
      resolve({ exitStatus, failure, output, phases, wallMs: Date.now() - started, runDir });
    });
  });
}
