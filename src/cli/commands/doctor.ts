// `mpath-pr doctor`: the dm-multipath health check of ../doctor.ts on the command line, and
// --repair, which re-registers the host key through each inconsistent map.

import type { Command } from 'commander';
import { registerIgnore } from '../../backends/pr-commands';
import { defaultInitiatorName } from '../../backends/emulated/emulated-backend';
import { defaultStatePath } from '../../daemon/config';
import { MultipathdClient } from '../../multipathd/client';
import { withDevice } from '../device-command';
import { formatMpathDoctor, mpathDoctor, type MpathDoctorReport } from '../doctor';
import { ExitCode } from '../exit-codes';
import { toJson } from '../format';
import { CliExit, type CliIo } from '../io';
import { jsonOption } from '../options';
import { reportFailure } from '../report';

interface DoctorOptions {
  repair?: boolean;
  json?: boolean;
}

export function addDoctorCommand(program: Command, io: CliIo): Command {
  return program
    .command('doctor')
    .description('check every dm-multipath map: per path registration, reservation, multipathd key; --repair re-registers the host key on every path')
    .argument('[map...]', 'map aliases (default: every dm-multipath map)')
    .option('--repair', 'REGISTER AND IGNORE the host key through the map (the mpath backend verifies every path)')
    .addOption(jsonOption())
    .action(async (maps: string[], options: DoctorOptions) => {
      const multipathd = new MultipathdClient();
      const check = () => mpathDoctor({ multipathd, maps: maps.length ? maps : undefined });
      let report = await check();
      const repaired = options.repair ? await repair(io, report, options.json === true) : [];
      if (repaired.length) report = await check();
      io.out(options.json ? toJson({ ...report, repaired }) + '\n' : formatMpathDoctor(report) + (repaired.length ? `repaired: ${repaired.join(', ')}\n` : ''));
      if (report.maps.some((m) => m.verdict === 'inconsistent') || report.problems.length) throw new CliExit(ExitCode.OTHER);
    });
}

/** REGISTER AND IGNORE EXISTING KEY with the host key through every inconsistent map; the names of those repaired. */
async function repair(io: CliIo, report: MpathDoctorReport, json: boolean): Promise<string[]> {
  const repaired: string[] = [];
  for (const map of report.maps) {
    if (map.verdict !== 'inconsistent' || !map.hostKey) continue;
    const backend = { backend: 'mpath' as const, statePath: defaultStatePath(), initiator: defaultInitiatorName(), paths: 1 };
    const target = { device: `/dev/mapper/${map.name}`, writable: true, backend };
    await withDevice(target, (run) => registerIgnore(run, BigInt(map.hostKey!))).catch((error) => reportFailure(io, error, json));
    repaired.push(map.name);
  }
  return repaired;
}
