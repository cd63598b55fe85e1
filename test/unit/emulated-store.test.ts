import { expect } from 'chai';
import Database from 'better-sqlite3';
import { EmulatedStore } from '../../src/backends/emulated/store';
import { stateFilePerTest } from '../support/state-file';

describe('emulated store: opening the state file', () => {
  const fixture = stateFilePerTest('mpath-pr-store-');

  it('opens a file already set up while another process holds its write lock: it takes no write lock itself', () => {
    new EmulatedStore(fixture.statePath).close();
    const other = new Database(fixture.statePath);
    try {
      other.exec('BEGIN IMMEDIATE');
      // A zero busy timeout: any lock this open had to wait for would fail it at once.
      const store = new EmulatedStore(fixture.statePath, { busyTimeoutMs: 0 });
      expect(store.listLogicalUnits()).to.deep.equal([]);
      store.close();
    } finally {
      other.close();
    }
  });

  it('gives up with a clear error when a reader keeps a new file locked through the switch to WAL mode', () => {
    const reader = new Database(fixture.statePath);
    try {
      reader.exec('CREATE TABLE other (x)');
      reader.exec('BEGIN');
      reader.prepare('SELECT * FROM other').all(); // holds a read lock on the rollback-journal file until COMMIT
      expect(() => new EmulatedStore(fixture.statePath, { busyTimeoutMs: 20 })).to.throw(/stayed locked by another process for 20 ms while it was being switched to WAL mode/);
    } finally {
      reader.close();
    }
  });

  it('refuses a file whose schema is newer than this mpath-pr understands', () => {
    new EmulatedStore(fixture.statePath).close();
    const newer = new Database(fixture.statePath);
    newer.pragma('user_version = 2');
    newer.close();
    expect(() => new EmulatedStore(fixture.statePath)).to.throw(/schema version 2; this mpath-pr understands up to 1/);
  });
});
