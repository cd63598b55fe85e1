// What the qemu-pr-helper server promises its owner: the execute hook it calls, the
// options it takes, the counters it keeps and the event it emits when a connection ends.

import type { Logger } from 'pino';
import type { CommandGuard } from '../backends/admission';
import type { DeviceHandle, PeerIdentity } from '../backends/backend';
import type { PrCommand } from '../scsi/pr-command';
import type { ScsiResult } from '../scsi/sense';

export interface PrHelperExecuteRequest {
  readonly handle: DeviceHandle;
  /** The request's CDB and parameter list, decoded and admitted once. */
  readonly command: PrCommand;
  readonly peer: PeerIdentity;
  /** Aborted when the client hangs up during the command, or on close({ abortInFlight }). */
  readonly signal: AbortSignal;
}

/**
 * Runs one command. Must resolve for every SCSI-level outcome (conflicts, bad parameter
 * lists, device errors); a rejection is treated as a bug, logged at error level, and
 * answered with CHECK CONDITION LUN COMMUNICATION FAILURE, which is what QEMU shows the
 * guest when the helper fails.
 */
export type PrHelperExecute = (request: PrHelperExecuteRequest) => Promise<ScsiResult>;

export interface PrHelperServerOptions {
  readonly execute: PrHelperExecute;
  readonly logger: Logger;
  /** Connections beyond this are accepted and closed at once. Default 1024. */
  readonly maxConnections?: number;
  /** Access control hook, called once per connection with SO_PEERCRED; false (or a throw) closes it. */
  readonly authorize?: (peer: PeerIdentity) => boolean | Promise<boolean>;
  /** Checks run on every admitted command before execute (after decoding and the read-only rule). */
  readonly guards?: readonly CommandGuard[];
}

export interface PrHelperServerStats {
  readonly connectionsAccepted: number;
  readonly connectionsActive: number;
  /** Closed at once: over maxConnections, refused by authorize, or no peer credentials. */
  readonly connectionsRefused: number;
  /** Commands answered (a reply was built). */
  readonly commands: number;
  readonly prIn: number;
  readonly prOut: number;
  /** execute() rejected or returned something malformed. */
  readonly executeErrors: number;
  /** Connections closed for breaking the protocol. */
  readonly protocolViolations: number;
  /** Connections lost to socket errors, or clients that left mid-request or mid-reply. */
  readonly connectionErrors: number;
}

/** The server's own, writable copy of its stats. */
export type ServerCounters = { -readonly [K in keyof PrHelperServerStats]: PrHelperServerStats[K] };

export interface ConnectionClosedEvent {
  readonly id: number;
  readonly peer: PeerIdentity | undefined;
  /** 'eof' (clean), 'server-closing', 'refused', 'connection-error', 'truncated-request', or a ProtocolViolation. */
  readonly reason: string;
  readonly commands: number;
}
