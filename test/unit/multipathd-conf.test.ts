import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  parseReservationKeyValue,
  readHostReservationKeySetting,
  readReservationKeySetting,
  readReservationKeySettingFromFiles,
  reservationKeyWarning,
  tokenizeConfLine,
} from '../../src/multipathd/multipath-conf';

describe('multipath.conf reservation_key', function () {
  it('reads "file" from defaults{}', function () {
    expect(readReservationKeySetting('defaults {\n\tuser_friendly_names yes\n\treservation_key file\n}\n')).to.deep.equal({ source: 'file' });
  });

  it("reads the lab's multipath.conf (reservation_key file in defaults{})", function () {
    const conf = fs.readFileSync(path.resolve(__dirname, '../../../fixtures/lab/multipath.conf'), 'utf8');
    expect(readReservationKeySetting(conf)).to.deep.equal({ source: 'file' });
  });

  it('reads a fixed key, with and without :aptpl, 0x or not', function () {
    expect(readReservationKeySetting('defaults {\n reservation_key 0x1234abcd\n}')).to.deep.equal({ source: 'key', key: 0x1234abcdn, aptpl: false });
    expect(readReservationKeySetting('defaults {\n reservation_key 0xABC:aptpl\n}')).to.deep.equal({ source: 'key', key: 0xabcn, aptpl: true });
    expect(readReservationKeySetting('defaults {\n reservation_key 1f\n}')).to.deep.equal({ source: 'key', key: 0x1fn, aptpl: false });
    expect(readReservationKeySetting('defaults {\n reservation_key "0x55"\n}')).to.deep.equal({ source: 'key', key: 0x55n, aptpl: false });
  });

  it('answers none when there is no reservation_key, or no file at all', function () {
    expect(readReservationKeySetting('')).to.deep.equal({ source: 'none' });
    expect(readReservationKeySetting('defaults {\n polling_interval 5\n}\n')).to.deep.equal({ source: 'none' });
  });

  it('ignores commented lines and trailing comments', function () {
    expect(readReservationKeySetting('defaults {\n# reservation_key file\n ! reservation_key 0x1\n}')).to.deep.equal({ source: 'none' });
    expect(readReservationKeySetting('defaults {\n reservation_key file # prkeys\n}')).to.deep.equal({ source: 'file' });
  });

  it('takes the last defaults value, as multipath does', function () {
    expect(readReservationKeySetting('defaults {\n reservation_key 0x1\n reservation_key file\n}').source).to.equal('file');
    expect(readReservationKeySetting('defaults {\n reservation_key file\n}\ndefaults {\n reservation_key 0x2\n}')).to.deep.equal({ source: 'key', key: 2n, aptpl: false });
  });

  it('keeps the earlier value when a later one is invalid, and reports it', function () {
    const setting = readReservationKeySetting('defaults {\n reservation_key 0x10\n reservation_key 0xnothex\n}');
    expect(setting.source).to.equal('key');
    expect(setting.key).to.equal(0x10n);
    expect(setting.invalid).to.have.length(1);
    expect(setting.invalid![0]).to.include({ value: '0xnothex', line: 3, section: 'defaults' });
    expect(readReservationKeySetting('defaults {\n reservation_key 0x12345678901234567\n}').invalid).to.have.length(1);
  });

  it('treats a zero key as no key, as multipathd does', function () {
    const setting = readReservationKeySetting('defaults {\n reservation_key 0x1\n reservation_key 0x0\n}');
    expect(setting.source).to.equal('none');
    expect(setting.key).to.equal(undefined);
    expect(setting.invalid![0].reason).to.match(/zero/);
  });

  it('reports a key in multipaths{} as ignored by 0.9.4, with its wwid', function () {
    const conf = ['defaults {', '  reservation_key file', '}', 'multipaths {', '  multipath {', '    wwid 36001405abc', '    reservation_key 0x99', '  }', '}'].join('\n');
    const setting = readReservationKeySetting(conf);
    expect(setting.source).to.equal('file');
    expect(setting.whereIgnored).to.have.length(1);
    expect(setting.whereIgnored![0]).to.include({ section: 'multipaths/multipath', value: '0x99', line: 7, wwid: '36001405abc' });
    expect(setting.whereIgnored![0].why).to.match(/0\.9\.4/);
  });

  it('says none (not the multipaths key) when defaults{} has no key', function () {
    const setting = readReservationKeySetting('multipaths {\n multipath {\n  reservation_key 0x5\n  wwid 3600a\n }\n}\n');
    expect(setting.source).to.equal('none');
    expect(setting.key).to.equal(undefined);
    expect(setting.whereIgnored![0].wwid).to.equal('3600a');
  });

  it('reports reservation_key in sections that have no such keyword', function () {
    const setting = readReservationKeySetting('devices {\n device {\n vendor LIO-ORG\n reservation_key file\n }\n}\noverrides {\n reservation_key 0x1\n}\n');
    expect(setting.source).to.equal('none');
    expect(setting.whereIgnored!.map((i) => i.section)).to.deep.equal(['devices/device', 'overrides']);
  });

  it('handles braces on their own line and glued to keywords', function () {
    expect(readReservationKeySetting('defaults\n{\n reservation_key file\n}\n').source).to.equal('file');
    expect(readReservationKeySetting('defaults{\nreservation_key file}\n').source).to.equal('file');
  });

  it('reads config_dir files after multipath.conf', function () {
    const setting = readReservationKeySettingFromFiles(['defaults {\n reservation_key 0x1\n}', 'defaults {\n reservation_key file\n}']);
    expect(setting.source).to.equal('file');
  });

  it('reads the host files: multipath.conf, then the config_dir *.conf files in name order', function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'multipath-conf-test-'));
    try {
      const conf = path.join(dir, 'multipath.conf');
      const confDir = path.join(dir, 'conf.d');
      expect(readHostReservationKeySetting(conf, confDir), 'neither exists').to.deep.equal({ source: 'none' });
      fs.writeFileSync(conf, 'defaults {\n reservation_key 0x1\n}\n');
      fs.mkdirSync(confDir);
      fs.writeFileSync(path.join(confDir, 'b.conf'), 'defaults {\n reservation_key 0x3\n}\n');
      fs.writeFileSync(path.join(confDir, 'a.conf'), 'defaults {\n reservation_key file\n}\n');
      fs.writeFileSync(path.join(confDir, 'c.conf.disabled'), 'defaults {\n reservation_key file\n}\n');
      expect(readHostReservationKeySetting(conf, confDir)).to.deep.equal({ source: 'key', key: 3n, aptpl: false });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('warns about every setting but `reservation_key file`', function () {
    expect(reservationKeyWarning({ source: 'file' })).to.equal(undefined);
    expect(reservationKeyWarning({ source: 'none' })?.message).to.include('no reservation_key').and.include('reservation_key file');
    expect(reservationKeyWarning({ source: 'key', key: 0xabn })).to.deep.include({ fields: { key: '0xab' } });
  });

  it('tokenizes like libmpathutil alloc_strvec', function () {
    const words = (line: string) => tokenizeConfLine(line).map((t) => (typeof t === 'string' ? t : '<q>'));
    expect(words('  reservation_key   0x1  ')).to.deep.equal(['reservation_key', '0x1']);
    expect(words('alias "a b"')).to.deep.equal(['alias', '<q>', 'a b', '<q>']);
    expect(words('alias "say ""hi"""')).to.deep.equal(['alias', '<q>', 'say "hi"', '<q>']);
    expect(words('defaults{')).to.deep.equal(['defaults', '{']);
    expect(words('key val#comment')).to.deep.equal(['key', 'val']);
    expect(words('# all comment')).to.deep.equal([]);
  });

  it('parses keys like parse_prkey_flags', function () {
    expect(parseReservationKeyValue('0x0')).to.deep.equal({ key: 0n, aptpl: false });
    expect(parseReservationKeyValue('ffffffffffffffff')).to.deep.equal({ key: (1n << 64n) - 1n, aptpl: false });
    expect(parseReservationKeyValue('0x1:other')).to.deep.equal({ key: 1n, aptpl: false });
    expect(parseReservationKeyValue('0')).to.equal(null);
    expect(parseReservationKeyValue('0x')).to.equal(null);
    expect(parseReservationKeyValue('file')).to.equal(null);
  });
});
