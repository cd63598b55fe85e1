// `mpath-pr in`: one PERSISTENT RESERVE IN on one device, like mpathpersist -i / sg_persist -i.

import type { Command } from 'commander';
import { readFullStatus, readKeys, readReservation, reportCapabilities, type PrExecutor } from '../../backends/pr-commands';
import { PR_IN_ACTIONS, type PrInActionName } from '../../scsi/actions';
import { withDevice } from '../device-command';
import { ExitCode } from '../exit-codes';
import { formatCapabilities, formatFullStatus, formatReadKeys, formatReadReservation, toJson } from '../format';
import { fail, type CliIo } from '../io';
import { addActionOptions, addBackendOptions, backendConfig, chosenAction, daemonSocketOption, jsonOption, type BackendOptions } from '../options';
import { reportFailure } from '../report';

type Reader = (run: PrExecutor) => Promise<{ data: unknown; text: string }>;

function reader<T>(read: (run: PrExecutor) => Promise<T>, format: (data: T) => string): Reader {
  return async (run) => {
    const data = await read(run);
    return { data, text: format(data) };
  };
}

const READERS: Readonly<Record<PrInActionName, Reader>> = {
  'read-keys': reader(readKeys, formatReadKeys),
  'read-reservation': reader(readReservation, formatReadReservation),
  'report-capabilities': reader(reportCapabilities, formatCapabilities),
  'read-full-status': reader(readFullStatus, formatFullStatus),
};

type PrInOptions = BackendOptions & { json?: boolean; socket?: string } & Record<string, unknown>;

export function addPrInCommand(program: Command, io: CliIo): Command {
  const command = program
    .command('in')
    .description('PERSISTENT RESERVE IN, like mpathpersist -i / sg_persist -i')
    .argument('<device>', 'block device, sg node, or emulated LU file');
  addActionOptions(command, PR_IN_ACTIONS).addOption(jsonOption()).addOption(daemonSocketOption());
  return addBackendOptions(command).action(async (device: string, options: PrInOptions) => {
    const action = chosenAction(PR_IN_ACTIONS, options);
    if (!action) fail(io, 'in', `choose exactly one of ${PR_IN_ACTIONS.map((a) => `--${a.name}`).join(', ')}`, ExitCode.USAGE);
    const json = options.json === true;
    const target = { device, writable: false, socket: options.socket, backend: backendConfig(options) };
    await withDevice(target, async (run) => {
      const { data, text } = await READERS[action.name](run);
      io.out(json ? toJson({ status: 'GOOD', data }) + '\n' : text);
    }).catch((error) => reportFailure(io, error, json));
  });
}
