// The engine against LIO without a VM: the scenarios of test/differential/scenarios.ts
// run on the engine with the nexuses LIO had, and each step is compared with the LIO
// results the lab captured (fixtures/differential/lio-<fabric>.json, refreshed by
// `npm run test:lab -- --update-fixtures test/lab/differential.lab.ts`). Every
// difference must be recorded in fixtures/differential (a LIO deviation or a pending
// engine fix); a recorded difference that no longer occurs fails too.
//
// The engine's own per-step results are kept in fixtures/differential/engine-<fabric>.json;
// MPATH_PR_UPDATE_FIXTURES=1 rewrites it, otherwise it must match.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  compareScenario,
  contextFromJson,
  formatDifference,
  judge,
  runEngineScenarios,
  scenariosFor,
  type Capture,
  type StepOutcome,
} from '../differential/scenarios';
import { loadExplanations } from '../differential/explanations';

const repoRoot = path.resolve(__dirname, '..', '..', '..');
const FABRIC = 'iscsi';
const capturePath = path.join(repoRoot, 'fixtures', 'differential', `lio-${FABRIC}.json`);
const enginePath = path.join(repoRoot, 'fixtures', 'differential', `engine-${FABRIC}.json`);

describe(`differential: the SPC-4 engine against captured LIO results (${FABRIC})`, function () {
  const capture: Capture | undefined = fs.existsSync(capturePath) ? (JSON.parse(fs.readFileSync(capturePath, 'utf8')) as Capture) : undefined;
  if (!capture) {
    it(`compares with LIO — NO CAPTURE at ${path.relative(repoRoot, capturePath)}: run npm run test:lab -- --update-fixtures test/lab/differential.lab.ts`);
    return;
  }
  const explanations = loadExplanations(repoRoot);
  const scenarios = scenariosFor(FABRIC);
  let engine: Record<string, StepOutcome[]>;

  before(async function () {
    engine = await runEngineScenarios(contextFromJson(capture.context), FABRIC);
  });

  it(`the engine's results match ${path.relative(repoRoot, enginePath)} (MPATH_PR_UPDATE_FIXTURES=1 rewrites it)`, function () {
    const text = JSON.stringify({ fabric: FABRIC, context: capture.context, scenarios: engine }, null, 1) + '\n';
    if (process.env.MPATH_PR_UPDATE_FIXTURES === '1') fs.writeFileSync(enginePath, text);
    expect(fs.existsSync(enginePath), `${enginePath} is missing; run with MPATH_PR_UPDATE_FIXTURES=1`).to.equal(true);
    expect(JSON.parse(text)).to.deep.equal(JSON.parse(fs.readFileSync(enginePath, 'utf8')));
  });

  for (const scenario of scenarios) {
    const lio = capture.scenarios[scenario.name];
    if (!lio) {
      it(`${scenario.name} — NOT CAPTURED from LIO yet: run npm run test:lab -- --update-fixtures test/lab/differential.lab.ts`);
      continue;
    }
    it(`${scenario.name}: the engine agrees with LIO, or the difference is recorded`, function () {
      expect(engine[scenario.name].map((s) => s.label), 'the capture was made from these same steps').to.deep.equal(lio.map((s) => s.label));
      const judgement = judge(compareScenario(scenario.name, lio, engine[scenario.name]), explanations.lists, FABRIC, [scenario.name]);
      expect(judgement.unexplained.map(formatDifference), 'unexplained differences').to.deep.equal([]);
      expect(judgement.stale.map((s) => `${s.kind}: step ${s.entry.step} ${s.entry.field}`), 'recorded differences that did not occur').to.deep.equal([]);
    });
  }

  it('every recorded difference names a scenario that exists', function () {
    const names = new Set(scenarios.map((s) => s.name));
    const unknown = Object.values(explanations.lists)
      .flat()
      .filter((e) => !names.has(e.scenario))
      .map((e) => e.scenario);
    expect([...new Set(unknown)]).to.deep.equal([]);
  });

  it('READ FULL STATUS after REGISTER with ALL_TG_PT=1 is one ALL_TG_PT descriptor, as LIO answers (SPC-4 full status descriptor, ALL_TG_PT)', function () {
    const name = 'ALL_TG_PT: register on every target port, then re-register without it';
    const lioSteps = capture.scenarios[name];
    expect(lioSteps, `${name} is in the capture`).to.be.an('array');
    const [lioStatus, engineStatus] = [lioSteps[1], engine[name][1]];
    expect(engineStatus.label).to.equal('READ FULL STATUS');
    expect(engineStatus.data?.descriptors).to.deep.equal([{ initiator: 'A', relativeTargetPort: 0, key: 'a1', allTgPt: true, holder: false, scope: 0, type: 0 }]);
    expect(engineStatus).to.deep.equal(lioStatus);
  });

  for (const fix of explanations.pendingFixes(FABRIC)) it(`ENGINE FIX PENDING (${fix.occurrences} differing fields) — ${fix.clause} — to do: ${fix.fix}`);
});

describe('differential: comparison and judgement', function () {
  const step = (status: string, data?: Record<string, unknown>, sense?: string): StepOutcome => ({ initiator: 'A', label: 'X', status, ...(sense ? { sense } : {}), ...(data ? { data } : {}) });

  it('reports each differing field of each step, and nothing for equal steps', function () {
    const lio = [step('GOOD'), step('RESERVATION_CONFLICT'), step('GOOD', { generation: 1, keys: ['a1'] })];
    const engine = [step('GOOD'), step('CHECK_CONDITION', undefined, '05/26/04'), step('GOOD', { generation: 2, keys: ['a1'] })];
    expect(compareScenario('s', lio, engine).map((d) => `${d.step} ${d.field} ${JSON.stringify(d.lio)} ${JSON.stringify(d.engine)}`)).to.deep.equal([
      '2 status "RESERVATION_CONFLICT" "CHECK_CONDITION"',
      '2 sense null "05/26/04"',
      '3 data.generation 1 2',
    ]);
  });

  it('a step missing on one side is a difference', function () {
    expect(compareScenario('s', [step('GOOD')], [step('GOOD'), step('GOOD')]).map((d) => d.field)).to.include('missing');
  });

  it('explains only exact matches, and flags unexplained differences and stale records', function () {
    const differences = compareScenario('s', [step('GOOD', { generation: 1 }), step('GOOD')], [step('GOOD', { generation: 2 }), step('BUSY')]);
    const record = { scenario: 's', step: 1, field: 'data.generation', lio: 1, engine: 2, clause: 'c', explanation: 'e' };
    const wrongValue = { ...record, step: 2, field: 'status', lio: 'GOOD', engine: 'CHECK_CONDITION' };
    const stale = { ...record, step: 9 };
    const otherFabric = { ...record, step: 7, fabrics: ['tcm_loop'] };
    const judgement = judge(differences, { deviation: [record, wrongValue, stale, otherFabric] }, 'iscsi', ['s']);
    expect(judgement.explained.map((e) => e.difference.field)).to.deep.equal(['data.generation']);
    expect(judgement.unexplained.map((d) => `${d.step} ${d.field}`)).to.deep.equal(['2 status']);
    expect(judgement.stale.map((s) => s.entry.step)).to.deep.equal([2, 9]);
  });
});
