// The lab harness's pure parts, on the host: the suite declarations and their
// grouping, the initramfs cpio writer, the module load order, the guest job file,
// and the readers of sg_persist output the lab suites use as their oracle.

import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildCpio } from '../lab/harness/cpio';
import { moduleLoadOrder } from '../lab/harness/host-image';
import { configKey, groupSuites, normalizeConfig, parseLabHeaders, type LabSuite } from '../lab/harness/lab-config';
import { labTopology, parseSgPersistFullStatus, parseSgPersistKeys, parseSgPersistReservation } from '../lab/harness/lab-guest';
import { mochaCounts } from '../lab/harness/main';
import { parsePhases, shellQuote } from '../lab/harness/vm';

describe('lab harness', function () {
  describe('@lab declarations', function () {
    it('reads one configuration per line and fills in defaults', function () {
      const configs = parseLabHeaders(
        '// @lab {"fabric": "tcm_loop"}\n// @lab {"fabric": "iscsi", "paths": 3, "secondHost": true}\nimport x;',
        'a.lab.ts',
      );
      expect(configs).to.deep.equal([
        { fabric: 'tcm_loop', paths: 2, secondHost: false, dbus: false },
        { fabric: 'iscsi', paths: 3, secondHost: true, dbus: false },
      ]);
    });

    it('refuses a suite without a declaration instead of guessing', function () {
      expect(() => parseLabHeaders('import x;\n', 'b.lab.ts')).to.throw(/b\.lab\.ts: no "\/\/ @lab/);
    });

    it('names the file and line of a malformed declaration', function () {
      expect(() => parseLabHeaders('\n// @lab {fabric: iscsi}', 'c.lab.ts')).to.throw(/c\.lab\.ts:2: @lab line is not JSON/);
    });

    for (const [raw, message] of [
      [{ fabric: 'fc' }, /fabric must be/],
      [{ paths: 0 }, /paths must be an integer from 1 to 8/],
      [{ paths: 2.5 }, /paths must be/],
      [{ paths: 9 }, /paths must be/],
      [{ dbus: 'yes' }, /dbus must be true or false/],
      [{ secondhost: true }, /unknown key "secondhost"/],
      [[], /expected a JSON object/],
      [null, /expected a JSON object/],
    ] as Array<[unknown, RegExp]>) {
      it(`rejects ${JSON.stringify(raw)}`, function () {
        expect(() => normalizeConfig(raw)).to.throw(message);
      });
    }

    it('boots once per distinct configuration, with every suite that asked for it', function () {
      const suite = (name: string, configs: object[]): LabSuite => ({
        source: name,
        compiled: name,
        configs: configs.map((c) => normalizeConfig(c)),
      });
      const groups = groupSuites([
        suite('a', [{ fabric: 'tcm_loop' }, { fabric: 'iscsi', secondHost: true }]),
        suite('b', [{ fabric: 'iscsi', secondHost: true }]),
        suite('c', [{ fabric: 'tcm_loop', paths: 2 }]),
      ]);
      expect(groups.map((g) => [configKey(g.config), g.suites.map((s) => s.source)])).to.deep.equal([
        ['tcm_loop-2p', ['a', 'c']],
        ['iscsi-2p-hostb', ['a', 'b']],
      ]);
    });
  });

  describe('initramfs cpio', function () {
    it('is a newc archive that cpio(1) lists and extracts byte for byte', function () {
      const archive = buildCpio([
        { kind: 'dir', path: 'bin' },
        { kind: 'file', path: 'bin/hello', data: Buffer.from('hi\n'), mode: 0o755 },
        { kind: 'file', path: 'odd', data: Buffer.from('12345') },
        { kind: 'symlink', path: 'sh', target: 'bin/hello' },
      ]);
      expect(archive.length % 4).to.equal(0);
      expect(archive.subarray(0, 6).toString()).to.equal('070701');
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-cpio-'));
      try {
        const result = spawnSync('cpio', ['-idm', '--quiet'], { cwd: dir, input: archive });
        expect(result.error, "cpio(1) is the oracle here").to.equal(undefined);
        expect(result.status, result.stderr.toString()).to.equal(0);
        expect(fs.readFileSync(path.join(dir, 'bin/hello'), 'utf8')).to.equal('hi\n');
        expect(fs.statSync(path.join(dir, 'bin/hello')).mode & 0o777).to.equal(0o755);
        expect(fs.readFileSync(path.join(dir, 'odd'), 'utf8')).to.equal('12345');
        expect(fs.readlinkSync(path.join(dir, 'sh'))).to.equal('bin/hello');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('refuses paths that would escape the archive root', function () {
      expect(() => buildCpio([{ kind: 'dir', path: '../etc' }])).to.throw(/bad cpio path/);
      expect(() => buildCpio([{ kind: 'dir', path: '/' }])).to.throw(/bad cpio path/);
    });

    it('is reproducible, so the image cache key stays stable', function () {
      const entries = [{ kind: 'file' as const, path: 'x', data: Buffer.from('same') }];
      expect(buildCpio(entries).equals(buildCpio(entries))).to.equal(true);
    });
  });

  describe('module load order', function () {
    const modulesDep = [
      'kernel/fs/9p/9p.ko: kernel/fs/netfs/netfs.ko kernel/net/9p/9pnet.ko',
      'kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko',
      'kernel/net/9p/9pnet.ko:',
      'kernel/fs/netfs/netfs.ko: kernel/fs/fscache/fscache.ko',
      'kernel/fs/fscache/fscache.ko:',
      'kernel/drivers/virtio/virtio_ring.ko:',
    ].join('\n');

    it('loads dependencies first and each module once', function () {
      expect(moduleLoadOrder(modulesDep, '', ['9pnet_virtio', '9p'])).to.deep.equal([
        'kernel/net/9p/9pnet.ko',
        'kernel/drivers/virtio/virtio_ring.ko',
        'kernel/net/9p/9pnet_virtio.ko',
        'kernel/fs/fscache/fscache.ko',
        'kernel/fs/netfs/netfs.ko',
        'kernel/fs/9p/9p.ko',
      ]);
    });

    it('skips built-in modules and fails on unknown ones', function () {
      expect(moduleLoadOrder(modulesDep, 'kernel/drivers/virtio/virtio_ring.ko\n', ['virtio_ring'])).to.deep.equal([]);
      expect(() => moduleLoadOrder(modulesDep, '', ['tcm_loop'])).to.throw(/tcm_loop is neither in modules.dep nor built in/);
    });
  });

  describe('host <-> guest files', function () {
    it('quotes job values so bash sources them unchanged', function () {
      const value = `it's "$HOME" \`x\` \\ ;`;
      const result = spawnSync('bash', ['-c', `V=${shellQuote(value)}; printf %s "$V"`], { encoding: 'utf8' });
      expect(result.stdout).to.equal(value);
    });

    it('reads the guest phase log, ignoring torn lines', function () {
      expect(parsePhases('stage2 3.21\nmodules 4.5\nready\n')).to.deep.equal([
        { phase: 'stage2', uptime: 3.21 },
        { phase: 'modules', uptime: 4.5 },
      ]);
    });

    it("sums mocha's spec summary and notices when there is none", function () {
      expect(mochaCounts('  12 passing (3s)\n  2 pending\n  1 failing\n')).to.deep.equal({ passing: 12, failing: 1, pending: 2 });
      expect(mochaCounts('Error: cannot find module')).to.equal(undefined);
    });

    it('labTopology refuses to run outside the lab, and checks the path count', function () {
      expect(() => labTopology({})).to.throw(/LAB_FABRIC is not set/);
      expect(() => labTopology({ LAB_FABRIC: 'iscsi', LAB_PATH_DEVICES: '/dev/sda', LAB_PATHS: '2' })).to.throw(
        /LAB_PATH_DEVICES has 1 devices but LAB_PATHS=2/,
      );
    });
  });

  describe('sg_persist readers (real sg3-utils 1.46 output from the lab)', function () {
    it('READ KEYS', function () {
      const out = '  LIO-ORG   RAMDISK-MCP       4.0 \n  Peripheral device type: disk\n  PR generation=0x2, 2 registered reservation keys follow:\n    0x1234\n    0x1234\n';
      expect(parseSgPersistKeys(out)).to.deep.equal({ generation: 2, keys: [0x1234n, 0x1234n] });
      expect(parseSgPersistKeys('  PR generation=0x0, there are NO registered reservation keys\n')).to.deep.equal({ generation: 0, keys: [] });
      expect(() => parseSgPersistKeys('  PR generation=0x2, 2 registered reservation keys follow:\n    0x1234\n')).to.throw(/count does not match/);
      expect(() => parseSgPersistKeys('garbage')).to.throw(/no PR generation/);
    });

    it('READ RESERVATION', function () {
      const held = '  PR generation=0x2, Reservation follows:\n    Key=0x1234\n    scope: LU_SCOPE,  type: Write Exclusive, registrants only\n';
      expect(parseSgPersistReservation(held)).to.deep.equal({ generation: 2, holder: { key: 0x1234n, type: 5 } });
      expect(parseSgPersistReservation('  PR generation=0x3, there is NO reservation held\n')).to.deep.equal({ generation: 3 });
      expect(() => parseSgPersistReservation('  PR generation=0x2, Reservation follows:\n    Key=0x1\n    scope: LU_SCOPE,  type: Bogus\n')).to.throw(
        /unknown reservation type/,
      );
    });

    it('READ FULL STATUS', function () {
      const out = [
        '  PR generation=0x2',
        '    Key=0x1234',
        '      All target ports bit clear',
        '      Relative port address: 0x1',
        '      << Reservation holder >>',
        '      scope: LU_SCOPE,  type: Write Exclusive, registrants only',
        '      Transport Id of initiator:',
        '        SAS address: 0x5001405aa0000001',
        '    Key=0x1234',
        '      All target ports bit clear',
        '      Relative port address: 0x2',
        '      not reservation holder',
        '      Transport Id of initiator:',
        '        SAS address: 0x5001405aa0000002',
        '',
      ].join('\n');
      expect(parseSgPersistFullStatus(out)).to.deep.equal({
        generation: 2,
        entries: [
          { key: 0x1234n, relativeTargetPort: 1, holder: true, transportId: 'SAS address: 0x5001405aa0000001' },
          { key: 0x1234n, relativeTargetPort: 2, holder: false, transportId: 'SAS address: 0x5001405aa0000002' },
        ],
      });
    });
  });
});
