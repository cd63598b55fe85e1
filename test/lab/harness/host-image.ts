// Everything the host needs before it can boot a lab: the Debian packages,
// the kernel as an uncompressed vmlinux (booted directly through its PVH entry,
// which saves the ~2.6 s of xz decompression a bzImage costs under TCG) and a
// tiny initramfs. The vmlinux and initramfs are cached under the cache
// directory, keyed by kernel version and by the content that goes into them,
// so a fresh machine rebuilds them and a warm one reuses them.

import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { buildCpio, CpioEntry } from './cpio';

/** The lab cannot run on this machine; the message says why and what was tried. */
export class LabUnavailableError extends Error {
  override name = 'LabUnavailableError';
}

/** Debian packages and a binary each one must provide. */
export const REQUIRED_PACKAGES: ReadonlyArray<{ pkg: string; provides: string }> = [
  { pkg: 'qemu-system-x86', provides: '/usr/bin/qemu-system-x86_64' },
  { pkg: 'linux-image-amd64', provides: '/boot' },
  { pkg: 'multipath-tools', provides: '/sbin/multipathd' },
  { pkg: 'sg3-utils', provides: '/usr/bin/sg_persist' },
  { pkg: 'busybox-static', provides: '/bin/busybox' },
  { pkg: 'open-iscsi', provides: '/sbin/iscsid' },
  { pkg: 'dbus-daemon', provides: '/usr/bin/dbus-daemon' },
  { pkg: 'udev', provides: '/bin/udevadm' },
  { pkg: 'kmod', provides: '/sbin/modprobe' },
  { pkg: 'xz-utils', provides: '/usr/bin/xz' },
  { pkg: 'util-linux', provides: '/usr/bin/setsid' },
  { pkg: 'iproute2', provides: '/sbin/ip' },
];

/** Modules stage 1 needs to reach the host root; everything else is modprobed later from that root. */
export const STAGE1_MODULES = ['virtio_pci', '9pnet_virtio', '9p', 'overlay', 'configfs'];

function isInstalled(pkg: string): boolean {
  const result = spawnSync('dpkg-query', ['-W', '-f=${db:Status-Abbrev}', pkg], { encoding: 'utf8' });
  return result.status === 0 && result.stdout.startsWith('ii');
}

function missingPackages(): string[] {
  return REQUIRED_PACKAGES.filter(({ pkg, provides }) => !fs.existsSync(provides) || !isInstalled(pkg)).map(({ pkg }) => pkg);
}

function installedKernelVersions(): string[] {
  if (!fs.existsSync('/lib/modules')) return [];
  return fs
    .readdirSync('/lib/modules')
    .filter((version) => fs.existsSync(`/boot/vmlinuz-${version}`) && fs.existsSync(`/lib/modules/${version}/modules.dep`));
}

/**
 * Installs the lab's Debian packages when any is missing. Throws LabUnavailableError
 * (never returns quietly) when they cannot be installed.
 */
export function ensurePackages(log: (line: string) => void): void {
  const missing = missingPackages();
  const needKernel = installedKernelVersions().length === 0;
  if (missing.length === 0 && !needKernel) return;
  const toInstall = [...new Set([...missing, ...(needKernel ? ['linux-image-amd64'] : [])])];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new LabUnavailableError(`missing Debian packages ${toInstall.join(' ')} and not root, so cannot apt-get install them`);
  }
  log(`lab: installing Debian packages: ${toInstall.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // Other processes on the machine may hold the dpkg lock; wait for it instead of failing.
  const install = () =>
    spawnSync(
      'apt-get',
      ['install', '-y', '-q', '--no-install-recommends', '-o', 'DPkg::Lock::Timeout=600', ...toInstall],
      { env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 64 << 20 },
    );
  let result = install();
  if (result.status !== 0) {
    log('lab: apt-get install failed; running apt-get update and trying once more');
    spawnSync('apt-get', ['update', '-q', '-o', 'DPkg::Lock::Timeout=600'], { env, stdio: 'ignore' });
    result = install();
  }
  if (result.status !== 0) {
    const tail = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n');
    throw new LabUnavailableError(
      `apt-get install ${toInstall.join(' ')} failed (${result.error?.message ?? `exit ${result.status}`}):\n${tail}`,
    );
  }
  const stillMissing = missingPackages();
  if (stillMissing.length > 0 || installedKernelVersions().length === 0) {
    throw new LabUnavailableError(`after apt-get install, still missing: ${[...stillMissing, 'a kernel'].join(' ')}`);
  }
}

function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** The kernel to boot: $LAB_KERNEL if set, else the newest one with both /boot/vmlinuz and modules. */
export function pickKernelVersion(): string {
  const versions = installedKernelVersions().sort(compareVersions);
  const wanted = process.env.LAB_KERNEL;
  if (wanted) {
    if (!versions.includes(wanted)) {
      throw new LabUnavailableError(`LAB_KERNEL=${wanted} but installed kernels are: ${versions.join(', ') || 'none'}`);
    }
    return wanted;
  }
  const newest = versions.at(-1);
  if (!newest) throw new LabUnavailableError('no kernel with /boot/vmlinuz-<ver> and /lib/modules/<ver> is installed');
  return newest;
}

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const COMPRESSION_MAGICS: ReadonlyArray<{ name: string; magic: Buffer; decompress: (data: Buffer) => Buffer | undefined }> = [
  { name: 'xz', magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), decompress: (d) => runDecompressor('xz', ['-dc', '--single-stream'], d) },
  { name: 'zstd', magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), decompress: (d) => runDecompressor('zstd', ['-dcq'], d) },
  {
    name: 'gzip',
    magic: Buffer.from([0x1f, 0x8b, 0x08]),
    decompress: (d) => {
      try {
        return zlib.gunzipSync(d, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
      } catch {
        return undefined;
      }
    },
  },
];

function runDecompressor(command: string, args: string[], data: Buffer): Buffer | undefined {
  const result = spawnSync(command, args, { input: data, maxBuffer: 1 << 30 });
  // Trailing bytes after the stream make some decompressors exit non-zero; the ELF check decides.
  return result.stdout && result.stdout.length > 0 ? result.stdout : undefined;
}

/**
 * The uncompressed ELF kernel inside a bzImage, as scripts/extract-vmlinux finds it:
 * try every compression magic at every offset and keep the first result that is ELF.
 */
export function extractVmlinux(bzImage: Buffer): Buffer {
  for (const { magic, decompress } of COMPRESSION_MAGICS) {
    for (let at = bzImage.indexOf(magic); at !== -1; at = bzImage.indexOf(magic, at + 1)) {
      const out = decompress(bzImage.subarray(at));
      if (out && out.subarray(0, 4).equals(ELF_MAGIC)) return out;
    }
  }
  throw new LabUnavailableError('no xz/zstd/gzip-compressed ELF kernel found inside the bzImage');
}

/** Module load order for `wanted`, dependencies first, from the kernel's modules.dep; built-ins are skipped. */
export function moduleLoadOrder(modulesDep: string, builtin: string, wanted: readonly string[]): string[] {
  const canonical = (name: string) => name.replace(/-/g, '_');
  const depsOf = new Map<string, string[]>();
  const pathOf = new Map<string, string>();
  for (const line of modulesDep.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const file = line.slice(0, colon).trim();
    const name = canonical(path.basename(file).replace(/\.ko(\.(xz|zst|gz))?$/, ''));
    pathOf.set(name, file);
    depsOf.set(
      name,
      line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map((dep) => canonical(path.basename(dep).replace(/\.ko(\.(xz|zst|gz))?$/, ''))),
    );
  }
  const builtins = new Set(
    builtin
      .split('\n')
      .filter(Boolean)
      .map((file) => canonical(path.basename(file).replace(/\.ko$/, ''))),
  );
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = (name: string) => {
    const key = canonical(name);
    if (builtins.has(key) || order.includes(pathOf.get(key) ?? '')) return;
    const file = pathOf.get(key);
    if (!file) throw new LabUnavailableError(`kernel module ${name} is neither in modules.dep nor built in`);
    if (visiting.has(key)) throw new Error(`module dependency cycle at ${name}`);
    visiting.add(key);
    for (const dep of depsOf.get(key) ?? []) visit(dep);
    visiting.delete(key);
    order.push(file);
  };
  wanted.forEach(visit);
  return order;
}

function sha256(...parts: Array<string | Buffer>): string {
  const hash = crypto.createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest('hex');
}

function writeAtomically(file: string, data: Buffer): void {
  const temp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(temp, data);
  fs.renameSync(temp, file);
}

export interface LabImage {
  kernelVersion: string;
  vmlinux: string;
  initramfs: string;
}

/** Returns the cached vmlinux and initramfs for the chosen kernel, building what is missing. */
export function ensureImage(cacheDir: string, harnessDir: string, log: (line: string) => void): LabImage {
  const kernelVersion = pickKernelVersion();
  const dir = path.join(cacheDir, kernelVersion);
  fs.mkdirSync(dir, { recursive: true });

  const bzImagePath = `/boot/vmlinuz-${kernelVersion}`;
  const bzStat = fs.statSync(bzImagePath);
  const vmlinux = path.join(dir, `vmlinux-${bzStat.size}-${Math.floor(bzStat.mtimeMs)}`);
  if (!fs.existsSync(vmlinux)) {
    const started = Date.now();
    writeAtomically(vmlinux, extractVmlinux(fs.readFileSync(bzImagePath)));
    log(`lab: extracted ${vmlinux} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    for (const name of fs.readdirSync(dir)) {
      if (/^vmlinux-\d+-\d+$/.test(name) && path.join(dir, name) !== vmlinux) fs.rmSync(path.join(dir, name), { force: true });
    }
  }

  const moduleRoot = `/lib/modules/${kernelVersion}`;
  const order = moduleLoadOrder(
    fs.readFileSync(path.join(moduleRoot, 'modules.dep'), 'utf8'),
    fs.existsSync(path.join(moduleRoot, 'modules.builtin')) ? fs.readFileSync(path.join(moduleRoot, 'modules.builtin'), 'utf8') : '',
    STAGE1_MODULES,
  );
  const init = fs.readFileSync(path.join(harnessDir, 'guest-init.sh'));
  const busybox = fs.readFileSync('/bin/busybox');
  const modules = order.map((file) => ({ file, data: fs.readFileSync(path.join(moduleRoot, file)) }));
  const key = sha256(kernelVersion, init, busybox, ...modules.flatMap((m) => [m.file, m.data])).slice(0, 16);
  const initramfs = path.join(dir, `initramfs-${key}.cpio`);
  if (!fs.existsSync(initramfs)) {
    const entries: CpioEntry[] = [
      { kind: 'dir', path: 'bin' },
      { kind: 'dir', path: 'dev' },
      { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
      { kind: 'dir', path: 'proc' },
      { kind: 'dir', path: 'sys' },
      { kind: 'dir', path: 'modules' },
      { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
      { kind: 'file', path: 'init', data: init, mode: 0o755 },
      ...modules.map((m): CpioEntry => ({ kind: 'file', path: `modules/${path.basename(m.file)}`, data: m.data })),
      { kind: 'file', path: 'modules.order', data: Buffer.from(modules.map((m) => path.basename(m.file) + '\n').join('')) },
    ];
    // Uncompressed on purpose: unpacking gzip costs more under TCG than reading the extra megabytes.
    writeAtomically(initramfs, buildCpio(entries));
    log(`lab: built ${initramfs} (${modules.length} modules)`);
    // Older images are dead weight; a QEMU still reading one keeps its open file.
    for (const name of fs.readdirSync(dir)) {
      if (/^initramfs-[0-9a-f]+\.cpio$/.test(name) && path.join(dir, name) !== initramfs) fs.rmSync(path.join(dir, name), { force: true });
    }
  }
  return { kernelVersion, vmlinux, initramfs };
}
