// Service-manager notifications (systemd Type=notify): READY=1 once the socket is served,
// STATUS= lines a human reads in `systemctl status`, STOPPING=1 on shutdown. Only when
// NOTIFY_SOCKET is set; otherwise, and without libsystemd, every call is a no-op that logs
// why once at debug level.

import type { Logger } from 'pino';
import { sdNotify, type NotifyOutcome } from '../../ffi/sd-notify';

export type NotifySend = (state: string) => NotifyOutcome;

export class ServiceNotifier {
  private explained = false;

  constructor(
    private readonly logger: Logger,
    private readonly send: NotifySend = sdNotify,
  ) {}

  /** The socket is served. MAINPID lets systemd follow a daemon that was started with -d. */
  ready(status: string): void {
    this.notify(`READY=1\nSTATUS=${oneLine(status)}\nMAINPID=${process.pid}`);
  }

  status(status: string): void {
    this.notify(`STATUS=${oneLine(status)}`);
  }

  stopping(status: string): void {
    this.notify(`STOPPING=1\nSTATUS=${oneLine(status)}`);
  }

  private notify(state: string): void {
    const outcome = this.send(state);
    if (outcome.sent) {
      this.logger.trace({ state }, 'sd_notify');
      return;
    }
    if (!this.explained) {
      this.explained = true;
      this.logger.debug({ reason: outcome.reason }, 'not notifying a service manager');
    }
  }
}

/** STATUS is one line: a newline would start another assignment. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}
