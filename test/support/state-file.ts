// A fresh state file for each test of a suite, in its own temporary directory.

import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './daemon';

export interface StateFileFixture {
  /** The directory of the current test; removed after it. */
  readonly dir: string;
  /** `san.db` in it, not created yet. */
  readonly statePath: string;
}

/** Registers beforeEach/afterEach hooks; read the fields inside a test. */
export function stateFilePerTest(prefix: string): StateFileFixture {
  const fixture = { dir: '', statePath: '' };
  beforeEach(() => {
    fixture.dir = tempDir(prefix);
    fixture.statePath = path.join(fixture.dir, 'san.db');
  });
  afterEach(() => fs.rmSync(fixture.dir, { recursive: true, force: true }));
  return fixture;
}
