// `mpath-pr install-units`: writes the shipped systemd units (systemd/*.socket,
// systemd/*.service) with ExecStart pointing at this installation.

import fs from 'node:fs';
import path from 'node:path';

/** The package root (where package.json and systemd/ are), from dist/src/cli. */
export function packageRoot(): string {
  return path.resolve(__dirname, '..', '..', '..');
}

export const UNIT_NAMES = ['mpath-pr.socket', 'mpath-pr.service', 'mpath-pr-helper.socket', 'mpath-pr-helper.service'] as const;

export interface RenderOptions {
  /** Where the package is installed; ExecStart runs <installDir>/dist/src/cli/…. */
  readonly installDir: string;
  /** How to run Node: "/usr/bin/env node" (default) or an absolute path to node. */
  readonly node?: string;
  /** Where the templates are read from; default <package root>/systemd. */
  readonly templateDir?: string;
}

export interface RenderedUnit {
  readonly name: string;
  readonly content: string;
}

export class InstallUnitsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InstallUnitsError';
  }
}

const EXEC_START = /^ExecStart=.*?\/dist\/src\/cli\/(mpath-pr(?:-helper)?\.js)(.*)$/m;

/** The units with ExecStart rewritten. Paths must be absolute and free of whitespace (ExecStart splits on it). */
export function renderUnits(options: RenderOptions): RenderedUnit[] {
  const node = options.node ?? '/usr/bin/env node';
  if (!path.isAbsolute(options.installDir) || /\s/.test(options.installDir)) {
    throw new InstallUnitsError(`the install directory must be an absolute path without whitespace, got ${JSON.stringify(options.installDir)}`);
  }
  if (!/^\/\S+( \S+)?$/.test(node)) throw new InstallUnitsError(`--node must be an absolute path (optionally "/usr/bin/env node"), got ${JSON.stringify(node)}`);
  const templateDir = options.templateDir ?? path.join(packageRoot(), 'systemd');
  return UNIT_NAMES.map((name) => {
    let template: string;
    try {
      template = fs.readFileSync(path.join(templateDir, name), 'utf8');
    } catch (error) {
      throw new InstallUnitsError(`cannot read the unit template ${path.join(templateDir, name)}: ${(error as Error).message}`);
    }
    if (!name.endsWith('.service')) return { name, content: template };
    if (!EXEC_START.test(template)) throw new InstallUnitsError(`${name}: no ExecStart line naming dist/src/cli/mpath-pr*.js`);
    const content = template.replace(EXEC_START, (_line, script: string, rest: string) => `ExecStart=${node} ${path.join(options.installDir, 'dist', 'src', 'cli', script)}${rest}`);
    return { name, content };
  });
}

export interface InstallOptions extends RenderOptions {
  /** Root to install under (like DESTDIR); units go to <prefix>/etc/systemd/system. */
  readonly prefix: string;
  readonly dryRun: boolean;
}

export interface InstalledUnit extends RenderedUnit {
  readonly path: string;
  readonly written: boolean;
}

export function installUnits(options: InstallOptions): InstalledUnit[] {
  const unitDir = path.join(options.prefix, 'etc', 'systemd', 'system');
  const units = renderUnits(options).map((unit) => ({ ...unit, path: path.join(unitDir, unit.name), written: false }));
  if (options.dryRun) return units;
  fs.mkdirSync(unitDir, { recursive: true, mode: 0o755 });
  return units.map((unit) => {
    // Write then rename, so systemd never reads half a unit.
    const temporary = `${unit.path}.tmp-${process.pid}`;
    fs.writeFileSync(temporary, unit.content, { mode: 0o644 });
    fs.renameSync(temporary, unit.path);
    return { ...unit, written: true };
  });
}
