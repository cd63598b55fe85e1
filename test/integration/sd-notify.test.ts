// sd_notify on a real daemon: the test plays systemd with its own AF_UNIX datagram socket
// (NOTIFY_SOCKET), and reads what a `mpath-pr serve` sends through libsystemd.

import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { NotifyReceiver, sdNotify } from '../../ffi/sd-notify';
import { ServiceNotifier } from '../../src/daemon/notify';
import { daemonSuite, launchDaemon, MPATH_PR } from '../support/daemon';
import { eventually } from '../support/wait';

/** Moves what reached `receiver` into `into` until `done` holds on all of it. */
async function collectUntil(receiver: NotifyReceiver, into: string[], done: (all: string[]) => boolean, what: string): Promise<void> {
  const collected = () => {
    into.push(...receiver.drain());
    return done(into);
  };
  await eventually(collected, what, { timeoutMs: 15_000, describe: () => JSON.stringify(into) });
}

describe('sd_notify (a real daemon, a real notification socket)', function () {
  this.timeout(60_000);
  const suite = daemonSuite('mpath-pr-notify-', { mode: 0o711 });
  let dir: string;
  let receiver: NotifyReceiver;

  beforeEach(() => {
    dir = suite.dir;
    receiver = new NotifyReceiver(path.join(dir, 'notify.sock'));
    // Like systemd's own /run/systemd/notify: anyone may send, so the daemon still can after dropping to nobody.
    fs.chmodSync(path.join(dir, 'notify.sock'), 0o777);
  });

  afterEach(() => receiver.close());

  it('READY=1 with STATUS and MAINPID after listening (from the re-executed, unprivileged image), STATUS on SIGHUP, STOPPING=1 on SIGTERM', async () => {
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir);
    fs.chownSync(stateDir, 65534, 65534);
    const socket = path.join(dir, 'd.sock');
    const d = suite.add(await launchDaemon(MPATH_PR, ['serve', '--socket', socket, '--state', path.join(stateDir, 'san.db'), '--user', 'nobody'], {
      env: { NOTIFY_SOCKET: receiver.path },
    }));
    const messages: string[] = [];
    await collectUntil(receiver, messages, (all) => all.some((m) => m.includes('READY=1')), 'READY=1');
    const ready = messages.find((m) => m.includes('READY=1'))!;
    expect(ready.split('\n')).to.deep.equal(['READY=1', `STATUS=serving on ${socket} (backend auto, uid 65534)`, `MAINPID=${d.pid}`]);
    // The privileged image reported progress before handing over, and never claimed readiness.
    expect(messages[0]).to.equal(`STATUS=listening on ${socket}; dropping privileges`);
    expect(messages.filter((m) => m.includes('READY=1'))).to.have.length(1);

    d.child.kill('SIGHUP');
    await collectUntil(receiver, messages, (all) => all.some((m) => m.startsWith(`STATUS=serving on ${socket}: `)), 'STATUS after SIGHUP');
    expect(messages.find((m) => m.startsWith(`STATUS=serving on ${socket}: `))).to.equal(
      `STATUS=serving on ${socket}: 0 connections, 0 commands (0 PR OUT), 0 connections and 0 devices refused`,
    );

    expect(await d.stop('SIGTERM')).to.equal(0);
    messages.push(...receiver.drain());
    const stopping = messages.find((m) => m.startsWith('STOPPING=1'));
    expect(stopping, JSON.stringify(messages)).to.match(/^STOPPING=1\nSTATUS=stopping: /);
  });

  it('without NOTIFY_SOCKET nothing is sent, and the debug log says why', async () => {
    const d = suite.add(await launchDaemon(MPATH_PR, ['serve', '--socket', path.join(dir, 'e.sock'), '--state', path.join(dir, 'san.db'), '--log-level', 'debug'], {
      env: { NOTIFY_SOCKET: '' },
    }));
    expect(d.logs()).to.match(/"reason":"NOTIFY_SOCKET is not set".*"msg":"not notifying a service manager"/);
    expect(receiver.drain()).to.deep.equal([]);
  });

  it('sdNotify reports a send failure instead of throwing (socket path with no listener)', () => {
    const saved = process.env.NOTIFY_SOCKET;
    process.env.NOTIFY_SOCKET = path.join(dir, 'nobody-listens.sock');
    try {
      const outcome = sdNotify('STATUS=test');
      expect(outcome).to.deep.equal({ sent: false, reason: 'sd_notify failed: ENOENT' });
      process.env.NOTIFY_SOCKET = receiver.path;
      expect(sdNotify('STATUS=direct')).to.deep.equal({ sent: true });
      expect(receiver.drain()).to.deep.equal(['STATUS=direct']);
    } finally {
      if (saved === undefined) delete process.env.NOTIFY_SOCKET;
      else process.env.NOTIFY_SOCKET = saved;
    }
  });

  it('ServiceNotifier keeps STATUS on one line and explains a missing manager once', () => {
    const sent: string[] = [];
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l)) });
    const ok = new ServiceNotifier(logger, (state) => (sent.push(state), { sent: true }));
    ok.status('two\nlines');
    ok.stopping('bye');
    expect(sent).to.deep.equal(['STATUS=two lines', 'STOPPING=1\nSTATUS=bye']);
    const absent = new ServiceNotifier(logger, () => ({ sent: false, reason: 'NOTIFY_SOCKET is not set' }));
    absent.ready('x');
    absent.status('y');
    expect(lines.filter((l) => l.msg === 'not notifying a service manager')).to.have.length(1);
  });
});
