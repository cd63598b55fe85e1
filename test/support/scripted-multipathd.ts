// A multipathd transport that answers from a table, for MultipathdClient without a daemon.

import type { MultipathdTransport } from '../../src/multipathd/client';

/** Answers each command with its entry (an Error rejects); any other command rejects. Records what was sent, in order. */
export function scriptedMultipathd(replies: Record<string, string | Error>): MultipathdTransport & { sent: string[] } {
  const sent: string[] = [];
  return {
    sent,
    async send(command) {
      sent.push(command);
      const reply = replies[command];
      if (reply === undefined) throw new Error(`unexpected command ${command}`);
      if (reply instanceof Error) throw reply;
      return reply;
    },
  };
}
