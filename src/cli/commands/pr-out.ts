// `mpath-pr out`: one PERSISTENT RESERVE OUT on one device, like mpathpersist -o / sg_persist -o.

import type { Command } from 'commander';
import { PrCommandError, prOut, type PrExecutor, type PrOutRequest } from '../../backends/pr-commands';
import { PR_OUT_ACTIONS, type PrOutActionInfo } from '../../scsi/actions';
import { Status } from '../../scsi/constants';
import { parseTransportId, type TransportId } from '../../scsi/transport-id';
import { withDevice } from '../device-command';
import { ExitCode } from '../exit-codes';
import { toJson } from '../format';
import { fail, type CliIo } from '../io';
import {
  addActionOptions,
  addBackendOptions,
  argumentParser,
  backendConfig,
  chosenAction,
  collect,
  daemonSocketOption,
  jsonOption,
  parseKey,
  parseNonNegative,
  parseType,
  type BackendOptions,
} from '../options';
import { reportFailure, resultJson } from '../report';

/** The actions the CLI offers: those with an sg_persist option letter. */
const OUT_ACTIONS = PR_OUT_ACTIONS.filter((a): a is PrOutActionInfo & { letter: string } => a.letter !== undefined);

interface PrOutOptions extends BackendOptions, Record<string, unknown> {
  paramRk?: bigint;
  paramSark?: bigint;
  proutType?: number;
  paramAptpl?: boolean;
  paramAlltgpt?: boolean;
  transportId: TransportId[];
  relativeTargetPort?: number;
  unreg?: boolean;
  json?: boolean;
  socket?: string;
}

export function addPrOutCommand(program: Command, io: CliIo): Command {
  const command = program
    .command('out')
    .description('PERSISTENT RESERVE OUT, like mpathpersist -o / sg_persist -o')
    .argument('<device>', 'block device, sg node, or emulated LU file');
  addActionOptions(command, OUT_ACTIONS)
    .option('-K, --param-rk <key>', 'RESERVATION KEY (hex)', parseKey)
    .option('-S, --param-sark <key>', 'SERVICE ACTION RESERVATION KEY (hex)', parseKey)
    .option('-T, --prout-type <type>', 'reservation type: 1 WE, 3 EA, 5 WE-RO, 6 EA-RO, 7 WE-AR, 8 EA-AR', parseType)
    .option('-Z, --param-aptpl', 'APTPL: persist through power loss')
    .option('-Y, --param-alltgpt', 'ALL_TG_PT: register on all target ports')
    .option('-X, --transport-id <id>', 'TransportID (repeatable): iqn.…[,i,0x<isid>], fc,<hex>, sas,<hex>', collect(parseTransportId), [])
    .option('--relative-target-port <n>', 'REGISTER AND MOVE: destination relative target port', argumentParser(parseNonNegative))
    .option('--unreg', 'REGISTER AND MOVE: unregister the source I_T nexus')
    .addOption(jsonOption())
    .addOption(daemonSocketOption());
  return addBackendOptions(command).action((device: string, options: PrOutOptions) => runPrOut(io, device, options));
}

async function runPrOut(io: CliIo, device: string, options: PrOutOptions): Promise<void> {
  const action = chosenAction(OUT_ACTIONS, options);
  if (!action) fail(io, 'out', `choose exactly one of ${OUT_ACTIONS.map((a) => `--${a.name}`).join(', ')}`, ExitCode.USAGE);
  const request: PrOutRequest = {
    action: action.name,
    reservationKey: options.paramRk,
    serviceActionKey: options.paramSark,
    type: options.proutType,
    aptpl: options.paramAptpl === true,
    allTgPt: options.paramAlltgpt === true,
    transportIds: options.transportId,
    relativeTargetPort: options.relativeTargetPort,
    unreg: options.unreg === true,
  };
  const json = options.json === true;
  const target = { device, writable: true, socket: options.socket, backend: backendConfig(options) };
  await withDevice(target, async (run) => {
    const result = await sendPrOut(io, run, request);
    if (result.status !== Status.GOOD) throw new PrCommandError(action.title, result);
    io.out(json ? toJson(resultJson(result)) + '\n' : `${action.title}: done\n`);
  }).catch((error) => reportFailure(io, error, json));
}

/** prOut, with a request the parameter list cannot carry reported as a usage error. */
async function sendPrOut(io: CliIo, run: PrExecutor, request: PrOutRequest) {
  try {
    return await prOut(run, request);
  } catch (error) {
    if (error instanceof RangeError) fail(io, 'out', error.message, ExitCode.USAGE);
    throw error;
  }
}
