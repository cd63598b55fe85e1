// Keeping multipathd's prkey and prstatus in step with a registration, against a scripted
// multipathd (MultipathdClient over a transport that answers from a table).

import { expect } from 'chai';
import type { Logger } from 'pino';
import { MultipathdClient } from '../../src/multipathd/client';
import { Commands } from '../../src/multipathd/commands';
import { MultipathdPrSync } from '../../src/multipathd/pr-sync';
import { scriptedMultipathd as scripted } from '../support/scripted-multipathd';

describe('multipathd prkey and prstatus kept in step with a registration', function () {
  const warnings: string[] = [];
  const logger = { info() {}, warn: (_o: unknown, msg: string) => warnings.push(msg) } as unknown as Pick<Logger, 'info' | 'warn'>;
  beforeEach(() => {
    warnings.length = 0;
  });

  it('points the prkey at the new key, and the undo gives multipathd its previous key back', async function () {
    const t = scripted({
      [Commands.getPrKey('mpatha')]: '0xa1\n',
      [Commands.setPrKey('mpatha', 0xa2n, true)]: 'ok\n',
      [Commands.setPrKey('mpatha', 0xa1n, false)]: 'ok\n',
    });
    const sync = new MultipathdPrSync(new MultipathdClient({ transport: t }), { source: 'file' }, logger);
    const undo = await sync.pointPrKeyAt('mpatha', { key: 0xa2n, aptpl: true });
    expect(t.sent).to.deep.equal([Commands.getPrKey('mpatha'), Commands.setPrKey('mpatha', 0xa2n, true)]);
    await undo();
    expect(t.sent.at(-1)).to.equal(Commands.setPrKey('mpatha', 0xa1n, false));
  });

  it('leaves a prkey that already matches alone, and unsets it for an unregistration', async function () {
    const t = scripted({ [Commands.getPrKey('mpatha')]: '0xa1\n', [Commands.unsetPrKey('mpatha')]: 'ok\n' });
    const sync = new MultipathdPrSync(new MultipathdClient({ transport: t }), { source: 'file' }, logger);
    await sync.pointPrKeyAt('mpatha', { key: 0xa1n, aptpl: false });
    expect(t.sent).to.deep.equal([Commands.getPrKey('mpatha')]);
    await sync.pointPrKeyAt('mpatha', null);
    expect(t.sent.at(-1)).to.equal(Commands.unsetPrKey('mpatha'));
  });

  it('does not touch the prkey unless multipath.conf says `reservation_key file`', async function () {
    const t = scripted({});
    for (const setting of [{ source: 'none' }, { source: 'key', key: 0xa1n }] as const) {
      const sync = new MultipathdPrSync(new MultipathdClient({ transport: t }), setting, logger);
      await (await sync.pointPrKeyAt('mpatha', { key: 0xa1n, aptpl: false }))();
    }
    expect(t.sent).to.deep.equal([]);
  });

  it('sets and unsets prstatus, and a multipathd that fails is a warning, not an error', async function () {
    const t = scripted({ [Commands.setPrStatus('mpatha')]: 'ok\n', [Commands.unsetPrStatus('mpatha')]: 'fail\n' });
    const sync = new MultipathdPrSync(new MultipathdClient({ transport: t }), { source: 'none' }, logger);
    await sync.setPrStatus('mpatha', true);
    await sync.setPrStatus('mpatha', false);
    expect(t.sent).to.deep.equal([Commands.setPrStatus('mpatha'), Commands.unsetPrStatus('mpatha')]);
    expect(warnings).to.deep.equal(["mpath: could not bring multipathd's prstatus in step; reinstated paths may stay unregistered"]);
  });

  it('does nothing without multipathd', async function () {
    const sync = new MultipathdPrSync(null, { source: 'file' }, logger);
    await (await sync.pointPrKeyAt('mpatha', { key: 0xa1n, aptpl: false }))();
    await sync.setPrStatus('mpatha', true);
    expect(warnings).to.deep.equal([]);
  });
});
