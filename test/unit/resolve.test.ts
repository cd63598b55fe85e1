// The device resolver and the device description it decides by (src/device): real files and
// real character devices of this host, plus a FAKE sysfs tree (test/support/fake-sysfs.ts)
// for the device kinds this host does not have (dm-multipath maps, SCSI disks, sg nodes,
// NVMe), laid out as kernel 6.1 presents /sys.

import { runBytes } from '../support/pr-bytes';
import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { DeviceHandle, ExecuteOptions, PrBackend } from '../../src/backends/backend';
import { BackendResolver, chooseBackend, type ConcreteBackendName, type BackendChoice } from '../../src/backends/resolve';
import { describeHandle, describeIdentity, deviceKey, DeviceTree, rdevOf } from '../../src/device';
import { encodePrInCdb, encodePrOutCdb } from '../../src/scsi/cdb';
import { Status } from '../../src/scsi/constants';
import type { PrCommand } from '../../src/scsi/pr-command';
import { Sense, senseMatches, type ScsiResult, good } from '../../src/scsi/sense';
import { FakeSysfs } from '../support/fake-sysfs';

function handleFor(fd: number, p: string, writable = true): DeviceHandle {
  return { fd, path: p, writable };
}

const PR_IN = encodePrInCdb({ action: 0, allocationLength: 8 });
const PR_OUT = encodePrOutCdb({ action: 0, parameterListLength: 24 });

/** Records every attribute read, to see what is read when. */
class CountingTree extends DeviceTree {
  readonly attributes: string[] = [];
  override readBytes(relative: string, maxBytes: number): Buffer | undefined {
    this.attributes.push(relative);
    return super.readBytes(relative, maxBytes);
  }
}

function buildFakeSysfs(): FakeSysfs {
  const t = new FakeSysfs();
  // Two SCSI paths (sdb, sdc) to one LU, behind a dm-multipath map dm-0 (253:0).
  t.scsiDisk({ host: 2, name: 'sdb', dev: '8:16', state: 'running', sg: { name: 'sg1', dev: '21:2' } });
  t.scsiDisk({ host: 3, name: 'sdc', dev: '8:32', state: 'offline', sg: { name: 'sg2', dev: '21:3' } });
  // A partition of sdb.
  t.partition('sdb', 'sdb1', '8:17');
  // The multipath map, an LVM volume and a dm device created without a uuid.
  t.dmMap({ kname: 'dm-0', dev: '253:0', uuid: 'mpath-36001405aaaabbbbccccdddd0000000', name: 'mpatha', slaves: ['sdb', 'sdc'] });
  t.dmMap({ kname: 'dm-1', dev: '253:1', uuid: 'LVM-Xq3v7rA0' });
  t.dmMap({ kname: 'dm-2', dev: '253:2', uuid: '' });
  // A block device on a SCSI host that shows no scsi_disk/scsi_device directories.
  t.scsiDisk({ host: 4, target: 1, name: 'sdd', dev: '8:48', bare: true });
  // The same under an iSCSI session directory.
  t.scsiDisk({ host: 5, via: 'session1', name: 'sde', dev: '8:64', bare: true });
  // NVMe namespace, loop device, virtio disk, and /dev/null's entry.
  t.blockDevice('devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1', '259:0', 'devices/pci0000:00/0000:00:04.0/nvme/nvme0');
  t.blockDevice('devices/virtual/block/loop0', '7:0');
  t.blockDevice('devices/pci0000:00/0000:00:02.0/virtio1/block/vda', '254:0', 'devices/pci0000:00/0000:00:02.0/virtio1');
  t.charDevice('devices/virtual/mem/null', '1:3');
  return t;
}

class RecordingBackend implements PrBackend {
  readonly calls: DeviceHandle[] = [];
  closed = false;
  constructor(readonly name: ConcreteBackendName) {}
  async execute(device: DeviceHandle, _command: PrCommand, _options?: ExecuteOptions): Promise<ScsiResult> {
    this.calls.push(device);
    return good(Buffer.from(this.name));
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

describe('device resolver (src/backends/resolve.ts)', function () {
  let tree: FakeSysfs;
  let fake: DeviceTree;
  let tmp: string;

  before(function () {
    tree = buildFakeSysfs();
    fake = tree.tree;
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpr-resolve-'));
  });
  after(function () {
    tree.remove();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  describe('dev_t', function () {
    it('rdevOf computes /dev/null as 1:3 from fstat when the handle carries no rdev', function () {
      const fd = fs.openSync('/dev/null', 'r');
      try {
        expect(rdevOf(handleFor(fd, '/dev/null'))).to.deep.equal({ major: 1, minor: 3 });
        expect(deviceKey(handleFor(fd, '/dev/null'))).to.equal('1:3');
      } finally {
        fs.closeSync(fd);
      }
    });
    it('rdevOf prefers the rdev the handle\'s description carries', function () {
      expect(rdevOf(tree.handle('/nonexistent', 'block', '8:0'))).to.deep.equal({ major: 8, minor: 0 });
    });
    it('deviceKey falls back to the path for files', function () {
      const file = path.join(tmp, 'key-file');
      fs.writeFileSync(file, '');
      expect(deviceKey({ fd: -1, path: file, writable: true })).to.equal(`path:${file}`);
    });
  });

  describe('classification of real files and devices of this host', function () {
    it('a regular file is regular-file', function () {
      const file = path.join(tmp, 'lu.img');
      fs.writeFileSync(file, Buffer.alloc(4096));
      const fd = fs.openSync(file, 'r+');
      try {
        expect(describeHandle(handleFor(fd, file)).class).to.equal('regular-file');
      } finally {
        fs.closeSync(fd);
      }
    });
    for (const dev of ['/dev/null', '/dev/zero']) {
      it(`${dev} (a character device that is not SCSI) is char-device`, function () {
        const fd = fs.openSync(dev, 'r');
        try {
          const info = describeHandle(handleFor(fd, dev));
          expect(info.class).to.equal('char-device');
          expect(info.rdev?.major).to.equal(1);
        } finally {
          fs.closeSync(fd);
        }
      });
    }
    it('a directory is not-a-device', function () {
      const fd = fs.openSync(tmp, 'r');
      try {
        expect(describeHandle(handleFor(fd, tmp)).class).to.equal('not-a-device');
      } finally {
        fs.closeSync(fd);
      }
    });
    it('a closed fd with a missing path is unknown, not an exception', function () {
      const info = describeHandle({ fd: 1_000_000, path: path.join(tmp, 'gone'), writable: true });
      expect(info.class).to.equal('unknown');
      expect(info.detail).to.match(/cannot stat/);
    });
    it('a path without an fd is stat()ed', function () {
      expect(describeHandle({ fd: -1, path: '/dev/null', writable: false }).class).to.equal('char-device');
    });
  });

  describe('classification against the fake sysfs tree', function () {
    const cases: Array<[string, 'block' | 'char', number, number, string]> = [
      ['dm-multipath map (dm uuid mpath-…)', 'block', 253, 0, 'dm-multipath'],
      ['LVM volume (dm uuid LVM-…)', 'block', 253, 1, 'dm'],
      ['dm device without a uuid', 'block', 253, 2, 'dm'],
      ['SCSI disk sdb', 'block', 8, 16, 'scsi-block'],
      ['partition sdb1', 'block', 8, 17, 'partition'],
      ['block device under a SCSI host without scsi_disk', 'block', 8, 48, 'scsi-block'],
      ['iSCSI block device (host/session/target) without scsi_disk', 'block', 8, 64, 'scsi-block'],
      ['NVMe namespace', 'block', 259, 0, 'nvme'],
      ['loop device', 'block', 7, 0, 'block-without-pr'],
      ['virtio disk', 'block', 254, 0, 'block-without-pr'],
      ['block dev_t missing from sysfs', 'block', 9, 99, 'unknown'],
      ['sg node sg1', 'char', 21, 2, 'scsi-generic'],
      ['/dev/null entry', 'char', 1, 3, 'char-device'],
      ['char dev_t missing from sysfs', 'char', 240, 7, 'char-device'],
    ];
    for (const [label, kind, major, minor, expected] of cases) {
      it(`${label} ${major}:${minor} → ${expected}`, function () {
        const info = tree.describe(kind, `${major}:${minor}`, `/dev/fake-${major}-${minor}`);
        expect(info.class, info.detail).to.equal(expected);
        expect(info.rdev).to.deep.equal(expected === 'unknown' || expected === 'char-device' ? info.rdev : { major, minor });
      });
    }
    it('slaves of the map, their dev_t and SCSI state', function () {
      expect(fake.slavesOf({ major: 253, minor: 0 })).to.deep.equal(['sdb', 'sdc']);
      expect(fake.blockDevNumber('sdb')).to.deep.equal({ major: 8, minor: 16 });
      expect(fake.scsiState('sdb')).to.equal('running');
      expect(fake.scsiState('sdc')).to.equal('offline');
      expect(fake.slavesOf({ major: 8, minor: 16 })).to.deep.equal([]);
      expect(fake.blockDevNumber('nosuch')).to.equal(undefined);
    });
    it('describes a multipath map: its name, WWID and paths with dev_t, SCSI state and host', function () {
      const map = tree.describe('block', '253:0', '/dev/dm-0');
      expect([map.kind, map.class, map.mapName, map.wwid]).to.deep.equal(['block', 'dm-multipath', 'mpatha', '36001405aaaabbbbccccdddd0000000']);
      expect(map.paths).to.deep.equal([
        { name: 'sdb', rdev: { major: 8, minor: 16 }, scsiState: 'running', scsiHost: 2 },
        { name: 'sdc', rdev: { major: 8, minor: 32 }, scsiState: 'offline', scsiHost: 3 },
      ]);
      const disk = tree.describe('block', '8:16', '/dev/sdb');
      expect([disk.mapName, disk.paths]).to.deep.equal([undefined, []]);
      expect(tree.describe('block', '253:1').mapName).to.equal(undefined);
    });
    it('reads the name, WWID and paths only when asked, and each once', function () {
      const counting = new CountingTree(tree.root, tree.devRoot);
      const map = describeIdentity({ kind: 'block', rdev: { major: 253, minor: 0 } }, '/dev/dm-0', counting);
      const classification = counting.attributes.length;
      expect(counting.attributes).to.not.include('dev/block/253:0/dm/name');
      expect([map.mapName, map.mapName, map.wwid, map.paths.length, map.paths.length]).to.deep.equal(['mpatha', 'mpatha', '36001405aaaabbbbccccdddd0000000', 2, 2]);
      // dm/name once, each path's dev and state once; the WWID came with the dm uuid the classification read.
      expect(counting.attributes.slice(classification)).to.deep.equal([
        'dev/block/253:0/dm/name',
        'class/block/sdb/dev',
        'class/block/sdb/device/state',
        'class/block/sdc/dev',
        'class/block/sdc/device/state',
      ]);
    });
    it('reads are bounded to 4 KiB and unreadable attributes are undefined', function () {
      tree.file('big/attr', 'x'.repeat(10_000));
      expect(fake.read('big/attr')?.length).to.equal(4096);
      expect(fake.read('big')).to.equal(undefined); // a directory
      expect(fake.read('no/such/attr')).to.equal(undefined);
      expect(fake.read('../../../../../../../../etc/does-not-exist')).to.equal(undefined);
    });
  });

  describe('chooseBackend', function () {
    const all = new Set<ConcreteBackendName>(['emulated', 'sg', 'blkpr', 'mpath']);
    const info = (cls: Parameters<typeof chooseBackend>[0]['class']) => ({ class: cls, detail: cls });
    const pick = (c: BackendChoice) => (c.ok ? c.backend : 'refused');
    it('follows the preference table when everything is available', function () {
      expect(pick(chooseBackend(info('regular-file'), all))).to.equal('emulated');
      expect(pick(chooseBackend(info('dm-multipath'), all))).to.equal('mpath');
      expect(pick(chooseBackend(info('dm'), all))).to.equal('blkpr');
      expect(pick(chooseBackend(info('scsi-block'), all))).to.equal('sg');
      expect(pick(chooseBackend(info('scsi-generic'), all))).to.equal('sg');
      expect(pick(chooseBackend(info('nvme'), all))).to.equal('blkpr');
    });
    it('a multipath map without the mpath backend goes to blkpr (REGISTER reaches every path), never to sg', function () {
      expect(pick(chooseBackend(info('dm-multipath'), new Set<ConcreteBackendName>(['sg', 'blkpr'])))).to.equal('blkpr');
      expect(pick(chooseBackend(info('dm-multipath'), new Set<ConcreteBackendName>(['sg'])))).to.equal('refused');
    });
    it('a SCSI disk without sg goes to blkpr', function () {
      expect(pick(chooseBackend(info('scsi-block'), new Set<ConcreteBackendName>(['blkpr'])))).to.equal('blkpr');
    });
    for (const cls of ['partition', 'block-without-pr', 'char-device', 'not-a-device', 'unknown'] as const) {
      it(`${cls} is refused with INVALID OPERATION CODE`, function () {
        const choice = chooseBackend(info(cls), all);
        expect(choice.ok).to.equal(false);
        if (choice.ok) return;
        expect(choice.result.status).to.equal(Status.CHECK_CONDITION);
        expect(senseMatches(choice.result.sense, Sense.INVALID_OPCODE)).to.equal(true);
        expect(choice.reason).to.match(/not a PR-capable device/);
      });
    }
    it('says which backend is missing', function () {
      const choice = chooseBackend(info('regular-file'), new Set<ConcreteBackendName>(['sg']));
      expect(choice.ok).to.equal(false);
      if (!choice.ok) expect(choice.reason).to.match(/needs the emulated backend/);
    });
    it('a forced backend wins over the table', function () {
      expect(pick(chooseBackend(info('char-device'), all, 'sg'))).to.equal('sg');
      expect(pick(chooseBackend(info('regular-file'), new Set<ConcreteBackendName>(['emulated']), 'sg'))).to.equal('refused');
    });
  });

  describe('BackendResolver', function () {
    function makeResolver(names: ConcreteBackendName[], forced?: ConcreteBackendName) {
      const backends: Partial<Record<ConcreteBackendName, RecordingBackend>> = {};
      for (const n of names) backends[n] = new RecordingBackend(n);
      const decisions: BackendChoice[] = [];
      const resolver = new BackendResolver({ backends, forced, deviceTree: fake, onDecision: (_d, c) => decisions.push(c) });
      return { resolver, backends, decisions };
    }

    it('is named auto', function () {
      expect(makeResolver(['emulated']).resolver.name).to.equal('auto');
    });
    it('sends a regular file to the emulated backend', async function () {
      const file = path.join(tmp, 'emul.img');
      fs.writeFileSync(file, Buffer.alloc(512));
      const fd = fs.openSync(file, 'r+');
      try {
        const { resolver, backends, decisions } = makeResolver(['emulated', 'sg']);
        const result = await runBytes(resolver, handleFor(fd, file), PR_IN, new Uint8Array(0));
        expect(result.dataIn.toString()).to.equal('emulated');
        expect(backends.emulated!.calls).to.have.length(1);
        expect(backends.sg!.calls).to.have.length(0);
        expect(decisions[0].ok).to.equal(true);
      } finally {
        fs.closeSync(fd);
      }
    });
    it('answers /dev/null itself with INVALID OPERATION CODE and calls no backend', async function () {
      const fd = fs.openSync('/dev/null', 'r+');
      try {
        const { resolver, backends, decisions } = makeResolver(['emulated', 'sg', 'blkpr']);
        const result = await runBytes(resolver, handleFor(fd, '/dev/null'), PR_IN, new Uint8Array(0));
        expect(result.status).to.equal(Status.CHECK_CONDITION);
        expect(senseMatches(result.sense, Sense.INVALID_OPCODE)).to.equal(true);
        expect(backends.sg!.calls.length + backends.blkpr!.calls.length + backends.emulated!.calls.length).to.equal(0);
        expect(decisions[0].ok).to.equal(false);
      } finally {
        fs.closeSync(fd);
      }
    });
    it('refuses PR OUT on a read-only handle before resolving', async function () {
      const { resolver, decisions } = makeResolver(['emulated']);
      const result = await runBytes(resolver, handleFor(-1, '/dev/null', false), PR_OUT, Buffer.alloc(24));
      expect(senseMatches(result.sense, Sense.INVALID_OPCODE)).to.equal(true);
      expect(decisions).to.have.length(0);
    });
    it('--backend forces one backend for every device', async function () {
      const fd = fs.openSync('/dev/zero', 'r');
      try {
        const { resolver, backends } = makeResolver(['sg', 'emulated'], 'sg');
        const result = await runBytes(resolver, handleFor(fd, '/dev/zero'), PR_IN, new Uint8Array(0));
        expect(result.dataIn.toString()).to.equal('sg');
        expect(backends.sg!.calls).to.have.length(1);
      } finally {
        fs.closeSync(fd);
      }
    });
    it('refuses to start with a forced backend it does not have', function () {
      expect(() => makeResolver(['emulated'], 'mpath')).to.throw(/--backend mpath/);
    });
    it('never throws for an odd device', async function () {
      const { resolver } = makeResolver(['emulated', 'sg', 'blkpr']);
      const result = await runBytes(resolver, { fd: 1_000_000, path: '/nonexistent/really', writable: true }, PR_IN, new Uint8Array(0));
      expect(senseMatches(result.sense, Sense.INVALID_OPCODE)).to.equal(true);
    });
    it('close() closes each backend once', async function () {
      const { resolver, backends } = makeResolver(['emulated', 'sg']);
      await resolver.close();
      expect(backends.emulated!.closed).to.equal(true);
      expect(backends.sg!.closed).to.equal(true);
    });
  });

  describe('this host\'s loop device (when present)', function () {
    it('/dev/loop0 is a block device without PR support', function () {
      if (!fs.existsSync('/dev/loop0')) this.skip();
      const fd = fs.openSync('/dev/loop0', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      try {
        const info = describeHandle(handleFor(fd, '/dev/loop0'));
        expect(info.class).to.equal('block-without-pr');
        expect(info.rdev?.major).to.equal(7);
      } finally {
        fs.closeSync(fd);
      }
    });
  });
});
