// mpath-pr-helper must accept qemu-pr-helper's command line, so libvirt's managed
// helper and hand-written QEMU setups work unchanged.

import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as pr from '../../src/backends/pr-commands';
import { connectClient, executorFor } from '../support/client';
import { launchDaemon, MPATH_PR_HELPER as HELPER, runToExit, tempDir } from '../support/daemon';
import { eventually } from '../support/wait';

const helper = (args: string[]) => runToExit(HELPER, args);

describe('mpath-pr-helper takes qemu-pr-helper flags', function () {
  this.timeout(30_000);
  let dir: string;
  beforeEach(() => (dir = tempDir('mpath-pr-helper-')));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('-h and -V answer and exit 0', async () => {
    const help = await helper(['-h']);
    expect(help.code).to.equal(0);
    for (const flag of ['-k, --socket', '-f, --pidfile', '-d, --daemon', '-T, --trace', '-u, --user', '-g, --group', '-v, --verbose', '-q, --quiet', '-V, --version']) {
      expect(help.stdout).to.contain(flag);
    }
    const version = await helper(['-V']);
    expect(version.code).to.equal(0);
    expect(version.stdout).to.match(/^mpath-pr-helper \d+\.\d+\.\d+/);
  });

  it('refuses a relative socket path and an unknown flag, exiting 1', async () => {
    expect((await helper(['-k', 'relative.sock'])).code).to.equal(1);
    expect((await helper(['--no-such-flag'])).code).to.equal(1);
  });

  it('-d -f -k -T -q: daemonizes once listening, writes the pidfile, serves QEMU, and removes the pidfile on SIGTERM', async () => {
    const socket = path.join(dir, 'pr.sock');
    const pidfile = path.join(dir, 'pr.pid');
    const lu = path.join(dir, 'lu.img');
    fs.writeFileSync(lu, '');
    const parent = spawn(process.execPath, [HELPER, '-d', '-f', pidfile, '-k', socket, '-T', 'pr_manager_*', '-q'], {
      env: { ...process.env, MPATH_PR_STATE: path.join(dir, 'san.db'), MPATH_PR_INITIATOR: 'helper-test' },
      stdio: 'ignore',
    });
    const parentCode = await new Promise<number | null>((resolve) => parent.on('exit', resolve));
    expect(parentCode).to.equal(0);
    const pid = Number(fs.readFileSync(pidfile, 'utf8').trim());
    expect(pid).to.be.greaterThan(0).and.not.equal(parent.pid);
    try {
      const fd = fs.openSync(lu, 'r+');
      const client = await connectClient(socket);
      try {
        await pr.register(executorFor(client, fd), 0x1234n);
        expect((await pr.readKeys(executorFor(client, fd))).keys).to.deep.equal([0x1234n, 0x1234n]);
      } finally {
        client.close();
        fs.closeSync(fd);
      }
      expect(fs.statSync(socket).mode & 0o777).to.equal(0o600);
    } finally {
      process.kill(pid, 'SIGTERM');
    }
    await eventually(() => !fs.existsSync(pidfile), 'the daemon to remove its pidfile');
    await eventually(() => !fs.existsSync(`/proc/${pid}`) || fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] === 'Z', 'the daemon to exit');
  });

  it('socket activation: listens on fd 3 when LISTEN_FDS=1 names this process', async () => {
    // A shell binds nothing itself; `python3` creates the listening socket and execs the
    // helper with it on fd 3, as systemd would. It binds under a temporary name and renames
    // the socket once listening: between bind() and listen() a connect is refused.
    const socket = path.join(dir, 'activated.sock');
    const script = [
      'import os, socket, sys',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
      `s.bind(${JSON.stringify(`${socket}.binding`)}); s.listen(16)`,
      `os.rename(${JSON.stringify(`${socket}.binding`)}, ${JSON.stringify(socket)})`,
      'os.dup2(s.fileno(), 3); os.set_inheritable(3, True)',
      'os.environ["LISTEN_FDS"] = "1"; os.environ["LISTEN_PID"] = str(os.getpid())',
      `os.execv(${JSON.stringify(process.execPath)}, [${JSON.stringify(process.execPath)}, ${JSON.stringify(HELPER)}, "-q"])`,
    ].join('\n');
    const activated = await launchDaemon('python3', ['-c', script], {
      program: true,
      env: { MPATH_PR_STATE: path.join(dir, 'san.db'), MPATH_PR_INITIATOR: 'activated' },
      ready: { socket },
    });
    try {
      const lu = path.join(dir, 'lu.img');
      fs.writeFileSync(lu, '');
      const fd = fs.openSync(lu, 'r');
      const client = await connectClient(socket);
      try {
        expect((await pr.readKeys(executorFor(client, fd))).keys).to.deep.equal([]);
      } finally {
        client.close();
        fs.closeSync(fd);
      }
    } finally {
      await activated.stop('SIGTERM');
    }
  });

  it('socket activation combined with -k is an error, as in qemu-pr-helper', async () => {
    const script = [
      'import os, socket',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
      `s.bind(${JSON.stringify(path.join(dir, 'x.sock'))}); s.listen(1)`,
      'os.dup2(s.fileno(), 3); os.set_inheritable(3, True)',
      'os.environ["LISTEN_FDS"] = "1"; os.environ["LISTEN_PID"] = str(os.getpid())',
      `os.execv(${JSON.stringify(process.execPath)}, [${JSON.stringify(process.execPath)}, ${JSON.stringify(HELPER)}, "-k", ${JSON.stringify(path.join(dir, 'y.sock'))}])`,
    ].join('\n');
    const { code, stderr } = await runToExit('python3', ['-c', script], { program: true, env: { MPATH_PR_STATE: path.join(dir, 'san.db') } });
    expect(code).to.equal(1);
    expect(stderr).to.match(/socket activation/);
  });
});
