// Which paths of a map miss a key (pure), the VPD page 83h target port parser, and which
// results mean a path is gone.

import { expect } from 'chai';
import type { MapPath } from '../../src/device';
import { isTransportFailure, pathsMissingKey, registrationsWithKey, type AnsweringPath, type SeenRegistration } from '../../src/backends/mpath/path-io';
import { Status } from '../../src/scsi/constants';
import { checkCondition, good, Sense, statusOnly } from '../../src/scsi/sense';
import { relativeTargetPortOf } from '../../src/scsi/vpd';

const path = (name: string): MapPath => ({ name, rdev: { major: 8, minor: name.charCodeAt(2) } });
const seen = (key: bigint, relativeTargetPort?: number, allTgPt = false): SeenRegistration => ({ key, relativeTargetPort, allTgPt });
const K = 0xa1n;

describe('paths missing a key (per target port when READ FULL STATUS and VPD 83h name them, else by count)', function () {
  it('names the path whose target port has no registration with the key, though the LU-wide count looks right', function () {
    // Another host registered under K through port 1: two registrations for two paths.
    const lu = [seen(K, 1), seen(K, 1), seen(0xb1n, 2)];
    const answering: AnsweringPath[] = [
      { path: path('sda'), relativeTargetPort: 1, registrations: lu },
      { path: path('sdb'), relativeTargetPort: 2, registrations: lu },
    ];
    expect(pathsMissingKey(answering, K)).to.deep.equal({ missing: ['sdb'], byTargetPort: true });
    expect(registrationsWithKey(answering, K)).to.equal(2);
  });

  it('counts an ALL_TG_PT registration on every port, and wants as many registrations per port as paths through it', function () {
    const allPorts = [seen(K, 1, true)];
    expect(pathsMissingKey([{ path: path('sda'), relativeTargetPort: 1, registrations: allPorts }, { path: path('sdb'), relativeTargetPort: 2, registrations: allPorts }], K).missing).to.deep.equal([]);
    const onePort = [seen(K, 3)];
    const twoPaths: AnsweringPath[] = [
      { path: path('sdc'), relativeTargetPort: 3, registrations: onePort },
      { path: path('sdd'), relativeTargetPort: 3, registrations: onePort },
    ];
    expect(pathsMissingKey(twoPaths, K).missing, 'two initiator ports on one target port need two registrations').to.deep.equal(['sdc', 'sdd']);
  });

  it('falls back to the LU-wide count when a path or a registration has no target port (READ KEYS only)', function () {
    const keysOnly = [seen(K), seen(0xb1n)];
    const answering: AnsweringPath[] = [
      { path: path('sda'), relativeTargetPort: 1, registrations: keysOnly },
      { path: path('sdb'), relativeTargetPort: 2, registrations: keysOnly },
    ];
    expect(pathsMissingKey(answering, K)).to.deep.equal({ missing: ['sda', 'sdb'], byTargetPort: false });
    const both = [seen(K), seen(K)];
    expect(pathsMissingKey([{ path: path('sda'), registrations: both }, { path: path('sdb'), registrations: both }], K).missing).to.deep.equal([]);
  });
});

describe('VPD page 83h: relative target port identifier', function () {
  it('finds the target-port designator of type 4h among others', function () {
    const naa = [0x01, 0x03, 0x00, 0x08, 0x60, 0x01, 0x40, 0x5a, 0xab, 0x00, 0x01, 0x00];
    const rtpi = [0x61, 0x14, 0x00, 0x04, 0x00, 0x00, 0x00, 0x02];
    const body = [...naa, ...rtpi];
    expect(relativeTargetPortOf(Uint8Array.from([0x00, 0x83, 0x00, body.length, ...body]))).to.equal(2);
  });

  it('answers undefined for another page, a page without the designator, a truncated designator or port 0', function () {
    expect(relativeTargetPortOf(Uint8Array.from([0x00, 0x80, 0x00, 0x08, 0x61, 0x14, 0x00, 0x04, 0, 0, 0, 2]))).to.equal(undefined);
    expect(relativeTargetPortOf(Uint8Array.from([0x00, 0x83, 0x00, 0x08, 0x01, 0x03, 0x00, 0x04, 1, 2, 3, 4]))).to.equal(undefined);
    expect(relativeTargetPortOf(Uint8Array.from([0x00, 0x83, 0x00, 0x08, 0x61, 0x14, 0x00, 0x08, 0, 0, 0, 2]))).to.equal(undefined);
    expect(relativeTargetPortOf(Uint8Array.from([0x00, 0x83, 0x00, 0x08, 0x61, 0x14, 0x00, 0x04, 0, 0, 0, 0]))).to.equal(undefined);
    expect(relativeTargetPortOf(Uint8Array.from([0x00, 0x83]))).to.equal(undefined);
    // Association 00b (the logical unit) with type 4h is not the target port's identifier.
    expect(relativeTargetPortOf(Uint8Array.from([0x00, 0x83, 0x00, 0x08, 0x61, 0x04, 0x00, 0x04, 0, 0, 0, 2]))).to.equal(undefined);
  });
});

describe('a path that is gone, told from a device that refused', function () {
  it('counts BUSY, TASK SET FULL, ABORTED COMMAND and sense that does not decode as the path being gone', function () {
    expect(isTransportFailure(statusOnly(Status.BUSY))).to.equal(true);
    expect(isTransportFailure(statusOnly(Status.TASK_SET_FULL))).to.equal(true);
    expect(isTransportFailure(checkCondition(Sense.LUN_COMMUNICATION_FAILURE))).to.equal(true);
    expect(isTransportFailure({ status: Status.CHECK_CONDITION, sense: Buffer.alloc(0), dataIn: Buffer.alloc(0) })).to.equal(true);
  });

  it('counts the device\'s own refusals as answers', function () {
    expect(isTransportFailure(statusOnly(Status.RESERVATION_CONFLICT))).to.equal(false);
    expect(isTransportFailure(checkCondition(Sense.INVALID_FIELD_IN_CDB))).to.equal(false);
    expect(isTransportFailure(checkCondition(Sense.REGISTRATIONS_PREEMPTED))).to.equal(false);
    expect(isTransportFailure(good())).to.equal(false);
  });
});
