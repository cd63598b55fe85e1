// The server's one log line per command, built from the decoded command and its result.

import type { Logger } from 'pino';
import type { Admission } from '../backends/admission';
import type { DeviceHandle } from '../backends/backend';
import { prInTitle, prOutActionByCode, prOutTitle } from '../scsi/actions';
import { Status, prTypeName, statusName } from '../scsi/constants';
import { commandKeys } from '../scsi/pr-command';
import { describeSense, type ScsiResult } from '../scsi/sense';

/**
 * One line per command: PR OUT at info (it changes the LU), PR IN at debug, and a command
 * refused before decoding at info with the reason. Built from the decoded command only.
 */
export function logCommand(log: Logger, handle: DeviceHandle | undefined, admission: Admission | undefined, result: ScsiResult): void {
  const command = admission?.command;
  const isOut = command?.direction === 'out';
  // PR IN is logged at debug level; skip building a line nobody will write.
  if (command && !isOut && !log.isLevelEnabled('debug')) return;
  const outcome = {
    status: statusName(result.status),
    sense: result.status === Status.CHECK_CONDITION ? describeSense(result.sense) : undefined,
  };
  const summary = `${outcome.status}${outcome.sense ? ` ${outcome.sense}` : ''}`;
  if (!command) {
    log.info({ device: handle?.path, reason: admission && !admission.ok ? admission.reason : undefined, ...outcome }, `command refused: ${summary}`);
  } else if (command.direction === 'out') {
    const name = prOutTitle(command.code);
    const usesType = prOutActionByCode(command.code)?.usesType ?? false;
    const keys = commandKeys(command);
    log.info(
      {
        device: handle?.path,
        action: name,
        key: keys ? hexKey(keys.reservationKey) : undefined,
        serviceActionKey: keys ? hexKey(keys.serviceActionKey) : undefined,
        // Only these service actions use the TYPE and SCOPE fields.
        type: usesType ? prTypeName(command.type) : undefined,
        scope: usesType ? command.scope : undefined,
        ...outcome,
      },
      `PR OUT ${name}: ${summary}`,
    );
  } else {
    const name = prInTitle(command.code);
    log.debug({ device: handle?.path, action: name, allocationLength: command.allocationLength, ...outcome }, `PR IN ${name}: ${outcome.status}`);
  }
}

function hexKey(key: bigint): string {
  return key.toString(16).padStart(16, '0');
}
