// `mpath-pr install-units`: the command-line face of ../install-units.ts.

import { Option, type Command } from 'commander';
import { installUnits, InstallUnitsError, packageRoot, type InstalledUnit } from '../install-units';
import { ExitCode } from '../exit-codes';
import { fail, type CliIo } from '../io';

interface InstallUnitsOptions {
  prefix: string;
  installDir: string;
  node: string;
  dryRun?: boolean;
}

export function addInstallUnitsCommand(program: Command, io: CliIo): Command {
  return program
    .command('install-units')
    .description('write the systemd units (mpath-pr.socket/.service, mpath-pr-helper.socket/.service) for this installation')
    .addOption(new Option('--prefix <dir>', 'install under this root; units go to <dir>/etc/systemd/system').default('/'))
    .addOption(new Option('--install-dir <dir>', 'the package directory ExecStart runs from').default(packageRoot(), 'this installation'))
    .addOption(new Option('--node <path>', 'how ExecStart runs Node').default('/usr/bin/env node'))
    .option('--dry-run', 'print the units and where they would go; write nothing')
    .action((options: InstallUnitsOptions) => {
      let units: InstalledUnit[];
      try {
        units = installUnits({ prefix: options.prefix, installDir: options.installDir, node: options.node, dryRun: options.dryRun === true });
      } catch (error) {
        if (error instanceof InstallUnitsError || (error as NodeJS.ErrnoException).code) fail(io, 'install-units', (error as Error).message, ExitCode.USAGE);
        throw error;
      }
      for (const unit of units) {
        if (options.dryRun) io.out(`# ${unit.path}\n${unit.content}\n`);
        else io.out(`wrote ${unit.path}\n`);
      }
      if (!options.dryRun) {
        io.out('next: systemctl daemon-reload && systemctl enable --now mpath-pr.socket   (or mpath-pr-helper.socket in place of qemu-pr-helper.socket)\n');
      }
    });
}
