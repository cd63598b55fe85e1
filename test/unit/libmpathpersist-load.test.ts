// Loading the real libmpathpersist. libmpathpersist_init() changes RLIMIT_NOFILE and writes to
// stderr, so it runs in a child process, never in the test runner. It is safe without
// device-mapper (checked: it neither exits nor touches /dev/mapper/control); the
// mpath_persistent_reserve_* calls are not (they exit(1) without device-mapper) and are left
// to the lab.

import { expect } from 'chai';
import { spawnSync } from 'child_process';
import * as path from 'path';
import { loadLibmpathpersist, MPATH_PR } from '../../ffi/libmpathpersist';

const MODULE = path.resolve(__dirname, '../../ffi/libmpathpersist.js');

function runChild(script: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('loading libmpathpersist', function () {
  this.timeout(60000);

  it('loads the installed library, reports its ABI and path, and inits once (pthread_once)', function () {
    const script = `
      const m = require(${JSON.stringify(MODULE)});
      const r = m.loadLibmpathpersist();
      if (!r.ok) { console.log(JSON.stringify({ ok: false, reason: r.reason })); process.exit(0); }
      const first = r.lib.init();
      const exit = r.lib.exit();
      const second = r.lib.init();
      console.log(JSON.stringify({ ok: true, abi: r.lib.abi, path: r.lib.path, first, exit, second, same: m.loadLibmpathpersist() === r }));
    `;
    const child = runChild(script);
    expect(child.status, child.stderr).to.equal(0);
    const out = JSON.parse(child.stdout.trim().split('\n').pop()!);
    expect(out.ok, out.reason).to.equal(true);
    expect(out.abi).to.equal('LIBMPATHPERSIST_2.1.0'); // Debian 12's 0.9.4
    expect(out.path).to.match(/libmpathpersist\.so\.0$/);
    expect(out.first).to.equal(0);
    expect(out.exit).to.equal(0);
    expect(out.second).to.equal(1);
    expect(out.same).to.equal(true);
  });

  it('says why when the library is missing, without throwing', function () {
    const r = loadLibmpathpersist('libmpathpersist-does-not-exist.so.0');
    expect(r.ok).to.equal(false);
    expect(!r.ok && r.reason).to.match(/could not be loaded.*apt-get install multipath-tools/);
  });

  it('says which symbol is missing when another library answers to the name', function () {
    const r = loadLibmpathpersist('libc.so.6');
    expect(r.ok).to.equal(false);
    expect(!r.ok && r.reason).to.match(/lacks a symbol.*libmpathpersist_init/);
  });

  it('refuses PR IN requests it cannot serve before calling the library', function () {
    // In a child: if the guard were missing, the native call would exit(1) for lack of device-mapper.
    const script = `
      const m = require(${JSON.stringify(MODULE)});
      const r = m.loadLibmpathpersist();
      const badAction = r.lib.reserveIn({ fd: -1, serviceAction: 4, allocationLength: 8 });
      let badLength;
      try { r.lib.reserveIn({ fd: -1, serviceAction: 0, allocationLength: 70000 }); } catch (e) { badLength = e.name + ': ' + e.message; }
      console.log(JSON.stringify({ badAction, badLength }));
    `;
    const child = runChild(script);
    expect(child.status, child.stderr).to.equal(0);
    const out = JSON.parse(child.stdout.trim().split('\n').pop()!);
    expect(out.badAction.rc).to.equal(MPATH_PR.SYNTAX_ERROR);
    expect(out.badAction.refused).to.match(/service action 4/);
    expect(out.badLength).to.match(/^PrinDecodeError: allocation length 70000/);
  });
});
