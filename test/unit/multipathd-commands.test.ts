import { expect } from 'chai';
import * as fc from 'fast-check';
import { CommandArgumentError, Commands, formatPrKey, mapName, MAX_COMMAND_BYTES, PATHS_FORMAT, pathName } from '../../src/multipathd/commands';

describe('multipathd command builders', function () {
  it('builds the verb-first commands multipathd 0.9.2+ accepts', function () {
    expect(Commands.showMapsJson()).to.equal('show maps json');
    expect(Commands.showMapJson('mpatha')).to.equal('show map mpatha json');
    expect(Commands.showPaths()).to.equal(`show paths format "${PATHS_FORMAT}"`);
    expect(Commands.showDaemon()).to.equal('show daemon');
    expect(Commands.getPrStatus('mpatha')).to.equal('getprstatus map mpatha');
    expect(Commands.setPrStatus('dm-3')).to.equal('setprstatus map dm-3');
    expect(Commands.unsetPrStatus('mpatha')).to.equal('unsetprstatus map mpatha');
    expect(Commands.getPrKey('36001405abc')).to.equal('getprkey map 36001405abc');
    expect(Commands.unsetPrKey('mpatha')).to.equal('unsetprkey map mpatha');
    expect(Commands.failPath('sdb')).to.equal('fail path sdb');
    expect(Commands.reinstatePath('8:16')).to.equal('reinstate path 8:16');
    expect(Commands.versionProbe()).to.equal('version');
  });

  it('formats keys the way parse_prkey_flags reads them', function () {
    expect(Commands.setPrKey('mpatha', 0x123abcn, false)).to.equal('setprkey map mpatha key 0x123abc');
    expect(Commands.setPrKey('mpatha', 0xffffffffffffffffn, true)).to.equal('setprkey map mpatha key 0xffffffffffffffff:aptpl');
    expect(formatPrKey(0n, false)).to.equal('0x0');
    expect(() => formatPrKey(-1n, false)).to.throw(CommandArgumentError);
    expect(() => formatPrKey(1n << 64n, false)).to.throw(CommandArgumentError);
    expect(() => formatPrKey(5 as unknown as bigint, false)).to.throw(CommandArgumentError);
  });

  it('refuses names the multipathd tokenizer would split, quote, or cut as a comment', function () {
    for (const bad of ['', 'mpath a', 'mpath\ta', 'mpath\na', 'a"b', 'a#b', 'a!b', 'a{b', 'a}b', 'mpath\u00e9', 'a\u0000b', 'a\u007fb']) {
      expect(() => mapName(bad), JSON.stringify(bad)).to.throw(CommandArgumentError);
      expect(() => pathName(bad), JSON.stringify(bad)).to.throw(CommandArgumentError);
      expect(() => Commands.getPrKey(bad), JSON.stringify(bad)).to.throw(CommandArgumentError);
    }
    expect(() => mapName(undefined as unknown as string)).to.throw(CommandArgumentError);
  });

  it('accepts the names multipath uses: aliases, WWIDs, dm-N, sdX and maj:min', function () {
    for (const good of ['mpatha', 'mpath_b-1.x', '3600140512345678', 'dm-12', 'sdaa', '253:4', 'eui.0025385b71b0', 'a$b%c&|~']) {
      expect(mapName(good)).to.equal(good);
    }
  });

  it('accepts only names made of printable ASCII without space, quote, #, !, { and }', function () {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 40 }), (name) => {
        let accepted = true;
        try {
          mapName(name);
        } catch (err) {
          expect(err).to.be.instanceOf(CommandArgumentError);
          accepted = false;
        }
        const safe = [...name].every((ch) => {
          const code = ch.charCodeAt(0);
          return code > 0x20 && code < 0x7f && !'"#!{}'.includes(ch);
        });
        expect(accepted).to.equal(safe);
      }),
    );
  });

  it('refuses commands longer than multipathd accepts (512 bytes with the NUL)', function () {
    const longest = 'm'.repeat(MAX_COMMAND_BYTES - 1 - 'getprstatus map '.length);
    expect(Commands.getPrStatus(longest)).to.have.length(MAX_COMMAND_BYTES - 1);
    expect(() => Commands.getPrStatus(longest + 'm')).to.throw(CommandArgumentError, /512/);
  });
});
