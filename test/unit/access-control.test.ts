// Access-control building blocks: glob and WWID matching, device identity from a fake
// sysfs, peer allow-lists, FIFO slots, and the policy object the daemon drives.

import { expect } from 'chai';
import pino from 'pino';
import type { DeviceHandle, PeerIdentity } from '../../src/backends/backend';
import { accessFromEnvironment } from '../../src/cli/mpath-pr-helper';
import {
  AccessControl,
  deviceAllowed,
  deviceIdentity,
  FifoSlots,
  globToRegExp,
  OPEN_ACCESS,
  peerAllowed,
  wwidForms,
  type AccessSettings,
} from '../../src/daemon/access-control';
import { ConfigError, parseDevicePattern, parseLimit, splitList } from '../../src/daemon/config';
import { Status } from '../../src/scsi/constants';
import { good, Sense, senseMatches, type ScsiResult } from '../../src/scsi/sense';
import { FakeSysfs } from '../support/fake-sysfs';

function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { logger, lines };
}

const peer = (uid: number, gid = uid, pid = 4242): PeerIdentity => ({ pid, uid, gid });
const fileHandle = (p: string): DeviceHandle => ({ fd: -1, path: p, writable: true });

describe('access control: glob matching', () => {
  const cases: [string, string, boolean][] = [
    ['/dev/mapper/mpath*', '/dev/mapper/mpatha', true],
    ['/dev/mapper/mpath*', '/dev/mapper/sub/mpatha', false],
    ['/srv/lus/**', '/srv/lus/a/b/c.img', true],
    ['/srv/lus/**.img', '/srv/lus/a/b.img', true],
    ['/srv/lu?.img', '/srv/lu1.img', true],
    ['/srv/lu?.img', '/srv/lu12.img', false],
    ['/srv/lu[0-3].img', '/srv/lu2.img', true],
    ['/srv/lu[0-3].img', '/srv/lu7.img', false],
    ['/srv/lu[!0-3].img', '/srv/lu7.img', true],
    ['/srv/lu[!0-3].img', '/srv/lu2.img', false],
    ['/srv/lu[.img', '/srv/lu[.img', true],
    ['/srv/a.b+(c)', '/srv/a.b+(c)', true],
    ['/srv/a.b', '/srv/aXb', false],
    ['/dev/sda', '/dev/sdab', false],
  ];
  for (const [glob, candidate, expected] of cases) {
    it(`${glob} ${expected ? 'matches' : 'does not match'} ${candidate}`, () => {
      expect(globToRegExp(glob).test(candidate)).to.equal(expected);
    });
  }

  it('is case-insensitive only when asked (WWIDs)', () => {
    expect(globToRegExp('3600140ABC*', { caseInsensitive: true }).test('3600140abcdef')).to.equal(true);
    expect(globToRegExp('/dev/SDA').test('/dev/sda')).to.equal(false);
  });
});

describe('access control: WWIDs and device identity', () => {
  let fake: FakeSysfs;
  beforeEach(() => {
    fake = new FakeSysfs();
    fake.dmMap({ kname: 'dm-3', dev: '253:3', uuid: 'mpath-36001405aabbccdd', name: 'mpatha' });
    fake.dmMap({ kname: 'dm-5', dev: '253:5', uuid: 'LVM-abcdef', name: 'vg-lv' });
    fake.scsiDisk({ host: 2, name: 'sdb', dev: '8:16', wwid: 'naa.6001405AABBCCDD' });
    fake.scsiDisk({ host: 3, name: 'sdc', dev: '8:32', wwid: 'naa.6001405eeff0011', sg: { name: 'sg1', dev: '21:1' } });
    // A block device with the sg node's numbers: the sg node must not be looked up under dev/block.
    fake.scsiDisk({ host: 4, name: 'sdq', dev: '21:1', wwid: 'naa.60014050000000' });
  });
  afterEach(() => fake.remove());

  it('turns the kernel naa./eui. forms into the multipath form too', () => {
    expect(wwidForms('naa.6001405AABB\n')).to.deep.equal(['naa.6001405AABB', '36001405aabb']);
    expect(wwidForms('eui.0025385b71b0')).to.deep.equal(['eui.0025385b71b0', '20025385b71b0']);
    expect(wwidForms('t10.LIO-ORG disk0')).to.deep.equal(['t10.LIO-ORG disk0']);
    expect(wwidForms('  \n')).to.deep.equal([]);
  });

  it('a dm-multipath map is known by its /dev/mapper name and its WWID', () => {
    const id = deviceIdentity(fake.handle('/dev/dm-3', 'block', '253:3'));
    expect(id).to.deep.equal({ paths: ['/dev/dm-3', '/dev/mapper/mpatha'], wwids: ['36001405aabbccdd'] });
  });

  it('a non-multipath dm map has a mapper name but no WWID', () => {
    const id = deviceIdentity(fake.handle('/dev/dm-5', 'block', '253:5'));
    expect(id).to.deep.equal({ paths: ['/dev/dm-5', '/dev/mapper/vg-lv'], wwids: [] });
  });

  it('a SCSI disk has the device/wwid forms; an sg node is looked up under dev/char, not dev/block', () => {
    expect(deviceIdentity(fake.handle('/dev/sdb', 'block', '8:16')).wwids).to.deep.equal([
      'naa.6001405AABBCCDD',
      '36001405aabbccdd',
    ]);
    expect(deviceIdentity(fake.handle('/dev/sg1', 'char', '21:1')).wwids).to.deep.equal([
      'naa.6001405eeff0011',
      '36001405eeff0011',
    ]);
  });

  it('an emulated LU file has only its path, and a device missing from sysfs has no WWID', () => {
    expect(deviceIdentity(fileHandle('/srv/lu0.img'), fake.tree)).to.deep.equal({ paths: ['/srv/lu0.img'], wwids: [] });
    expect(deviceIdentity(fake.handle('/dev/sdz', 'block', '65:160')).wwids).to.deep.equal([]);
  });

  it('matches path globs, /dev/mapper names, symlinked literals and WWID patterns; nothing else', () => {
    const mpath = { paths: ['/dev/dm-3', '/dev/mapper/mpatha'], wwids: ['36001405aabbccdd'] };
    const realpath = (p: string) => (p === '/dev/disk/by-id/dm-uuid-mpath-36001405aabbccdd' ? '/dev/dm-3' : undefined);
    expect(deviceAllowed(mpath, [])).to.deep.equal({ allowed: true });
    expect(deviceAllowed(mpath, ['/dev/mapper/mpath*'], realpath)).to.deep.equal({ allowed: true, matched: '/dev/mapper/mpath*' });
    expect(deviceAllowed(mpath, ['/dev/disk/by-id/dm-uuid-mpath-36001405aabbccdd'], realpath).allowed).to.equal(true);
    expect(deviceAllowed(mpath, ['36001405AABBCCDD'], realpath).allowed).to.equal(true);
    expect(deviceAllowed(mpath, ['36001405*'], realpath).allowed).to.equal(true);
    expect(deviceAllowed(mpath, ['/dev/mapper/other', '36001405ffff*', '/dev/sd*'], realpath)).to.deep.equal({ allowed: false });
    // A glob pattern is never resolved as a literal path.
    expect(deviceAllowed(mpath, ['/dev/disk/by-id/dm-uuid-mpath-3600*'], () => '/dev/dm-3').allowed).to.equal(false);
  });
});

describe('access control: peers', () => {
  it('everyone when no list is given; otherwise the uid list, the gid list, and root', () => {
    expect(peerAllowed(peer(1000), OPEN_ACCESS)).to.equal(true);
    const settings = { allowUids: [107], allowGids: [36] };
    expect(peerAllowed(peer(107, 107), settings)).to.equal(true);
    expect(peerAllowed(peer(500, 36), settings)).to.equal(true);
    expect(peerAllowed(peer(0, 0), settings)).to.equal(true);
    expect(peerAllowed(peer(500, 500), settings)).to.equal(false);
  });
});

describe('access control: FIFO slots', () => {
  it('grants up to the limit, then serves waiters in arrival order', async () => {
    const slots = new FifoSlots(2);
    const order: number[] = [];
    const a = await slots.acquire();
    const b = await slots.acquire();
    const waiting = [3, 4, 5].map((n) => slots.acquire().then((release) => (order.push(n), release)));
    expect(slots.inUse).to.equal(2);
    expect(slots.waiting).to.equal(3);
    a();
    a(); // releasing twice frees one slot only
    const r3 = await waiting[0];
    expect(order).to.deep.equal([3]);
    expect(slots.inUse).to.equal(2);
    b();
    r3();
    await Promise.all(waiting);
    expect(order).to.deep.equal([3, 4, 5]);
  });

  it('a waiter whose signal aborts leaves the queue and never gets a slot', async () => {
    const slots = new FifoSlots(1);
    const held = await slots.acquire();
    const controller = new AbortController();
    const gone = slots.acquire(controller.signal);
    const next = slots.acquire();
    controller.abort(new Error('client left'));
    await gone.catch((error: Error) => expect(error.message).to.equal('client left'));
    expect(slots.waiting).to.equal(1);
    held();
    (await next)();
    expect(slots.inUse).to.equal(0);
    await slots.acquire(AbortSignal.abort(new Error('already'))).then(
      () => expect.fail('an aborted signal must not get a slot'),
      (error: Error) => expect(error.message).to.equal('already'),
    );
  });
});

describe('access control: the policy object', () => {
  const settings = (over: Partial<AccessSettings>): AccessSettings => ({ ...OPEN_ACCESS, ...over });

  it('refuses peers outside the lists and logs pid, uid and gid', () => {
    const { logger, lines } = capturingLogger();
    const acl = new AccessControl(settings({ allowUids: [107] }), logger);
    expect(acl.authorize(peer(107))).to.equal(true);
    expect(acl.authorize(peer(1000, 1000, 777))).to.equal(false);
    expect(acl.stats.peersRefused).to.equal(1);
    const line = lines.find((l) => l.reason === 'not-allowed')!;
    expect(line.peer).to.deep.equal({ pid: 777, uid: 1000, gid: 1000 });
    expect(line.msg).to.match(/refused connection from pid 777 uid 1000 gid 1000/);
  });

  it('counts connections per uid: refuses beyond the limit, admits again after one closes', () => {
    const { logger } = capturingLogger();
    const acl = new AccessControl(settings({ maxConnectionsPerPeer: 2 }), logger);
    expect(acl.authorize(peer(107))).to.equal(true);
    expect(acl.authorize(peer(107))).to.equal(true);
    expect(acl.authorize(peer(107))).to.equal(false);
    expect(acl.authorize(peer(108))).to.equal(true);
    acl.connectionClosed(peer(107));
    expect(acl.authorize(peer(107))).to.equal(true);
    expect(Object.fromEntries(acl.connectionsByUid)).to.deep.equal({ 107: 2, 108: 1 });
  });

  it('answers LOGICAL UNIT NOT SUPPORTED for a device outside --allow-device, and logs the peer', () => {
    const { logger, lines } = capturingLogger();
    const acl = new AccessControl(settings({ allowDevices: ['/srv/allowed/*'] }), logger);
    expect(acl.checkDevice(fileHandle('/srv/allowed/lu0.img'), peer(107))).to.equal(undefined);
    const refusal = acl.checkDevice(fileHandle('/srv/other/lu0.img'), peer(107, 107, 9));
    expect(refusal!.status).to.equal(Status.CHECK_CONDITION);
    expect(senseMatches(refusal!.sense, Sense.LOGICAL_UNIT_NOT_SUPPORTED)).to.equal(true);
    expect(refusal!.dataIn.length).to.equal(0);
    const line = lines.find((l) => l.device === '/srv/other/lu0.img')!;
    expect(line.peer).to.deep.equal({ pid: 9, uid: 107, gid: 107 });
    expect(acl.stats.devicesRefused).to.equal(1);
  });

  it('runs at most N commands of one uid at once, in FIFO order, without limiting other uids', async () => {
    const { logger } = capturingLogger();
    const acl = new AccessControl(settings({ maxInFlightPerPeer: 1 }), logger);
    const started: string[] = [];
    const gates = new Map<string, () => void>();
    const command = (name: string) => () =>
      new Promise<ScsiResult>((resolve) => {
        started.push(name);
        gates.set(name, () => resolve(good()));
      });
    const first = acl.withSlot(peer(107), undefined, command('a1'));
    const second = acl.withSlot(peer(107), undefined, command('a2'));
    const other = acl.withSlot(peer(108), undefined, command('b1'));
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).to.deep.equal(['a1', 'b1']);
    expect(acl.stats.commandsQueued).to.equal(1);
    gates.get('a1')!();
    await first;
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).to.deep.equal(['a1', 'b1', 'a2']);
    gates.get('a2')!();
    gates.get('b1')!();
    expect((await second).status).to.equal(Status.GOOD);
    expect((await other).status).to.equal(Status.GOOD);
  });

  it('a queued command whose client left never runs and is answered LUN COMMUNICATION FAILURE', async () => {
    const { logger } = capturingLogger();
    const acl = new AccessControl(settings({ maxInFlightPerPeer: 1 }), logger);
    let release!: () => void;
    const holder = acl.withSlot(peer(107), undefined, () => new Promise<ScsiResult>((resolve) => (release = () => resolve(good()))));
    const controller = new AbortController();
    let ran = false;
    const queued = acl.withSlot(peer(107), controller.signal, async () => {
      ran = true;
      return good();
    });
    controller.abort(new Error('client left'));
    const result = await queued;
    expect(ran).to.equal(false);
    expect(senseMatches(result.sense, Sense.LUN_COMMUNICATION_FAILURE)).to.equal(true);
    release();
    await holder;
  });
});

describe('access control: configuration', () => {
  it('parses --allow-device, limits and comma lists, refusing what cannot mean anything', () => {
    expect(parseDevicePattern('/dev/mapper/mpath*')).to.equal('/dev/mapper/mpath*');
    expect(parseDevicePattern('36001405*')).to.equal('36001405*');
    expect(() => parseDevicePattern('dev/sda')).to.throw(ConfigError, /must be absolute/);
    expect(() => parseDevicePattern('/dev/a b')).to.throw(ConfigError);
    expect(() => parseDevicePattern('')).to.throw(ConfigError);
    expect(parseLimit('64', '--x')).to.equal(64);
    for (const bad of ['0', '-1', '1.5', 'abc', '', '1000001']) expect(() => parseLimit(bad, '--x'), bad).to.throw(ConfigError, /--x must be an integer/);
    expect(splitList(' a, b,,c ')).to.deep.equal(['a', 'b', 'c']);
    expect(splitList(undefined)).to.deep.equal([]);
  });

  it('mpath-pr-helper reads MPATH_PR_ALLOW_* and MPATH_PR_MAX_* (libvirt passes only -k)', () => {
    expect(accessFromEnvironment({})).to.deep.equal(OPEN_ACCESS);
    expect(
      accessFromEnvironment({
        MPATH_PR_ALLOW_UID: 'nobody, 107',
        MPATH_PR_ALLOW_GID: 'root,36',
        MPATH_PR_ALLOW_DEVICE: '/dev/mapper/mpath*,36001405*',
        MPATH_PR_MAX_CONNECTIONS_PER_PEER: '8',
        MPATH_PR_MAX_IN_FLIGHT_PER_PEER: '2',
      }),
    ).to.deep.equal({ allowUids: [65534, 107], allowGids: [0, 36], allowDevices: ['/dev/mapper/mpath*', '36001405*'], maxConnectionsPerPeer: 8, maxInFlightPerPeer: 2 });
    expect(() => accessFromEnvironment({ MPATH_PR_ALLOW_UID: 'no-such-user-here' })).to.throw(ConfigError, /invalid user/);
    expect(() => accessFromEnvironment({ MPATH_PR_MAX_IN_FLIGHT_PER_PEER: '0' })).to.throw(ConfigError, /MPATH_PR_MAX_IN_FLIGHT_PER_PEER/);
    expect(() => accessFromEnvironment({ MPATH_PR_ALLOW_DEVICE: 'relative/path' })).to.throw(ConfigError);
  });
});
