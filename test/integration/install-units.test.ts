// `mpath-pr install-units` through the real CLI into a temporary prefix, the content of
// what it writes, and `systemd-analyze verify` on it when this machine has systemd-analyze.

import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InstallUnitsError, packageRoot, renderUnits, UNIT_NAMES } from '../../src/cli/install-units';
import { MPATH_PR, runToExit } from '../support/daemon';

function directives(content: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of content.split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match) map.set(match[1], [...(map.get(match[1]) ?? []), match[2]]);
  }
  return map;
}

describe('install-units (systemd units)', function () {
  this.timeout(30_000);
  let prefix: string;
  const unitDir = () => path.join(prefix, 'etc', 'systemd', 'system');

  beforeEach(() => {
    prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'mpath-pr-units-'));
  });
  afterEach(() => fs.rmSync(prefix, { recursive: true, force: true }));

  it('writes the four units under <prefix>/etc/systemd/system with ExecStart pointing at this installation', async () => {
    const { code, output } = await runToExit(MPATH_PR, ['install-units', '--prefix', prefix]);
    expect(code, output).to.equal(0);
    expect(fs.readdirSync(unitDir()).sort()).to.deep.equal([...UNIT_NAMES].sort());
    const service = fs.readFileSync(path.join(unitDir(), 'mpath-pr.service'), 'utf8');
    const helper = fs.readFileSync(path.join(unitDir(), 'mpath-pr-helper.service'), 'utf8');
    const root = packageRoot();
    expect(directives(service).get('ExecStart')).to.deep.equal([`/usr/bin/env node ${root}/dist/src/cli/mpath-pr.js serve`]);
    expect(directives(helper).get('ExecStart')).to.deep.equal([`/usr/bin/env node ${root}/dist/src/cli/mpath-pr-helper.js`]);
    // The scripts ExecStart names exist.
    expect(fs.existsSync(path.join(root, 'dist/src/cli/mpath-pr.js'))).to.equal(true);
    expect(fs.existsSync(path.join(root, 'dist/src/cli/mpath-pr-helper.js'))).to.equal(true);
    // Everything but ExecStart is the shipped template.
    const template = fs.readFileSync(path.join(root, 'systemd', 'mpath-pr.service'), 'utf8');
    expect(service.replace(/^ExecStart=.*$/m, '')).to.equal(template.replace(/^ExecStart=.*$/m, ''));
    expect(fs.statSync(path.join(unitDir(), 'mpath-pr.service')).mode & 0o777).to.equal(0o644);
  });

  it('the units carry the socket and hardening settings, and not MemoryDenyWriteExecute (V8 JIT)', () => {
    const units = new Map(renderUnits({ installDir: '/opt/mpath-pr' }).map((u) => [u.name, directives(u.content)]));
    const socket = units.get('mpath-pr.socket')!;
    expect(socket.get('ListenStream')).to.deep.equal(['/run/mpath-pr.sock']);
    expect(socket.get('SocketMode')).to.deep.equal(['0600']);
    expect(units.get('mpath-pr-helper.socket')!.get('ListenStream')).to.deep.equal(['/run/qemu-pr-helper.sock']);
    for (const name of ['mpath-pr.service', 'mpath-pr-helper.service']) {
      const unit = units.get(name)!;
      const one = (key: string) => unit.get(key)?.[0];
      expect(one('Type'), name).to.equal('notify');
      expect(one('Restart')).to.equal('on-failure');
      expect(one('ProtectSystem')).to.equal('strict');
      expect(one('ReadWritePaths')).to.equal('/var/lib/mpath-pr');
      expect(one('StateDirectory')).to.equal('mpath-pr');
      expect(one('RuntimeDirectory')).to.equal('mpath-pr');
      for (const key of ['PrivateTmp', 'ProtectHome', 'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectControlGroups', 'RestrictNamespaces', 'LockPersonality', 'NoNewPrivileges']) {
        expect(one(key), `${name} ${key}`).to.equal('yes');
      }
      expect(one('RestrictAddressFamilies')).to.equal('AF_UNIX');
      expect(one('CapabilityBoundingSet')).to.equal('CAP_SYS_RAWIO CAP_SYS_ADMIN');
      expect(one('SystemCallFilter')).to.equal('@system-service');
      expect(one('DevicePolicy')).to.equal('closed');
      expect(unit.get('DeviceAllow')).to.include.members(['block-sd rw', 'block-device-mapper rw', '/dev/mapper/control rw']);
      expect(unit.has('MemoryDenyWriteExecute'), `${name} must not set MemoryDenyWriteExecute`).to.equal(false);
      expect(unit.has('PrivateNetwork'), `${name}: multipathd's abstract socket lives in the host network namespace`).to.equal(false);
    }
    expect(units.get('mpath-pr.service')!.get('ExecStart')).to.deep.equal(['/usr/bin/env node /opt/mpath-pr/dist/src/cli/mpath-pr.js serve']);
    expect(renderUnits({ installDir: '/opt/x', node: '/usr/local/bin/node' })[1].content).to.match(/^ExecStart=\/usr\/local\/bin\/node \/opt\/x\/dist\/src\/cli\/mpath-pr\.js serve$/m);
  });

  it('--dry-run prints the units and writes nothing', async () => {
    const { code, output } = await runToExit(MPATH_PR, ['install-units', '--prefix', prefix, '--dry-run', '--install-dir', '/opt/mpath-pr']);
    expect(code, output).to.equal(0);
    expect(output).to.include(`# ${path.join(unitDir(), 'mpath-pr.service')}\n`);
    expect(output).to.include('ExecStart=/usr/bin/env node /opt/mpath-pr/dist/src/cli/mpath-pr.js serve');
    expect(fs.existsSync(unitDir())).to.equal(false);
  });

  it('refuses an install dir ExecStart cannot express, and a missing template, with a message and exit 1', async () => {
    const relative = await runToExit(MPATH_PR, ['install-units', '--prefix', prefix, '--install-dir', 'relative/dir']);
    expect(relative.code).to.equal(1);
    expect(relative.output).to.match(/install directory must be an absolute path without whitespace/);
    const spaced = await runToExit(MPATH_PR, ['install-units', '--prefix', prefix, '--install-dir', '/opt/my dir']);
    expect(spaced.code).to.equal(1);
    expect(fs.existsSync(unitDir())).to.equal(false);
    expect(() => renderUnits({ installDir: '/opt/x', templateDir: prefix })).to.throw(InstallUnitsError, /cannot read the unit template/);
    expect(() => renderUnits({ installDir: '/opt/x', node: 'node' })).to.throw(InstallUnitsError, /--node must be an absolute path/);
  });

  it('systemd-analyze verify accepts the written units without a single warning', async function () {
    const probe = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) {
      // Loud on purpose: the units are then only checked by the content test above.
      console.error('\n!!! systemd-analyze is not installed on this machine: the systemd units were NOT verified !!!\n');
      this.skip();
    }
    const { code, output } = await runToExit(MPATH_PR, ['install-units', '--prefix', prefix]);
    expect(code, output).to.equal(0);
    const files = UNIT_NAMES.map((name) => path.join(unitDir(), name));
    const verify = spawnSync('systemd-analyze', ['verify', ...files], { encoding: 'utf8', cwd: unitDir() });
    expect(verify.status, verify.stderr).to.equal(0);
    expect(verify.stderr.trim(), 'systemd-analyze warnings').to.equal('');
    // And it does catch a broken unit, so the check above means something.
    fs.writeFileSync(path.join(unitDir(), 'broken.service'), '[Service]\nType=notify\nFrobnicate=yes\nExecStart=/usr/bin/env node /x.js\n');
    const broken = spawnSync('systemd-analyze', ['verify', path.join(unitDir(), 'broken.service')], { encoding: 'utf8' });
    expect(broken.stderr).to.match(/Unknown key 'Frobnicate'/);
  });
});
