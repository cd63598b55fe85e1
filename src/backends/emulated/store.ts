// The emulated SAN's state file. One SQLite database is one SAN: every LU's PR state,
// every simulated host's paths, and the keys each host's "multipathd" remembers.
// Several processes (several simulated hosts) may share one file; each command runs in
// one BEGIN IMMEDIATE transaction, so commands from different processes serialise and
// no update is lost. synchronous=FULL makes a commit durable before we reply GOOD.

import Database from 'better-sqlite3';

export type PathState = 'active' | 'failed';

export interface HostPath {
  readonly initiator: string;
  /** 0-based path index; the path reaches the LU through relative target port index+1. */
  readonly index: number;
  readonly state: PathState;
}

export interface StoreOptions {
  /** How long a command waits for another process's transaction, in ms. */
  readonly busyTimeoutMs?: number;
  /** Trade durability for speed; only for benchmarks and throwaway state. */
  readonly durable?: boolean;
}

const SCHEMA_VERSION = 1;
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS logical_unit (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    delay_ms INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS host_path (
    initiator TEXT NOT NULL,
    path_index INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'failed')),
    PRIMARY KEY (initiator, path_index)
  );
  CREATE TABLE IF NOT EXISTS host_key (
    initiator TEXT NOT NULL,
    lu TEXT NOT NULL,
    key TEXT NOT NULL,
    aptpl INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (initiator, lu)
  );
`;

/** SQLITE_BUSY and its extended codes: another connection held a lock this one needed. */
function isBusy(error: unknown): boolean {
  return error instanceof Database.SqliteError && error.code.startsWith('SQLITE_BUSY');
}

export class EmulatedStore {
  readonly db: Database.Database;
  readonly path: string;
  /**
   * Statements are compiled once per SQL text: preparing one costs more than running it,
   * and every command runs several (profiled: 40% of an in-memory command was prepare).
   */
  private readonly statements = new Map<string, Database.Statement>();
  /** One reusable wrapper: db.transaction() builds a new closure set on every call. */
  private readonly transaction: Database.Transaction<(fn: () => unknown) => unknown>;

  constructor(path: string, options: StoreOptions = {}) {
    this.path = path;
    // better-sqlite3's timeout is SQLite's busy handler: how long a statement waits for
    // another connection's lock before it fails with SQLITE_BUSY.
    const busyTimeoutMs = options.busyTimeoutMs ?? 10_000;
    this.db = new Database(path, { timeout: busyTimeoutMs });
    if (path !== ':memory:') this.enterWalMode(busyTimeoutMs);
    this.db.pragma(`synchronous = ${options.durable === false ? 'OFF' : 'FULL'}`);
    this.transaction = this.db.transaction((fn: () => unknown) => fn());
    this.migrate();
  }

  /**
   * Puts the file in WAL mode, which the file keeps: only the first open of a new file
   * changes it. SQLite refuses the change inside a transaction, and makes it by upgrading
   * a read lock to an exclusive one; when another connection holds a lock at that moment
   * it answers SQLITE_BUSY at once, without calling its busy handler. So when processes
   * open a new file together, all but one can fail here. A loser waits for the winner's
   * write lock to go and looks again; by then the file is in WAL mode and it changes
   * nothing. Every wait is bounded by the busy timeout, like any statement's.
   */
  private enterWalMode(busyTimeoutMs: number): void {
    const deadline = Date.now() + busyTimeoutMs;
    for (;;) {
      try {
        if (this.db.pragma('journal_mode', { simple: true }) !== 'wal') this.db.pragma('journal_mode = WAL');
        return;
      } catch (error) {
        if (!isBusy(error)) throw error;
        if (Date.now() > deadline) {
          throw new Error(`state file ${this.path} stayed locked by another process for ${busyTimeoutMs} ms while it was being switched to WAL mode`, {
            cause: error,
          });
        }
      }
      this.waitForWriteLock();
    }
  }

  /** Returns once no other connection holds the write lock, or after the busy timeout. */
  private waitForWriteLock(): void {
    try {
      // Unlike the journal mode change, taking the write lock waits through the busy handler.
      this.db.exec('BEGIN IMMEDIATE');
      this.db.exec('ROLLBACK');
    } catch (error) {
      if (!isBusy(error)) throw error;
    }
  }

  /**
   * Creates or upgrades the schema. The check and the change happen under one write
   * lock, so when several processes open a new file only the first one creates it; an
   * open that finds the schema current takes no write lock at all.
   */
  private migrate(): void {
    if (this.schemaVersion() === SCHEMA_VERSION) return;
    this.immediate(() => {
      if (this.schemaVersion() === SCHEMA_VERSION) return;
      this.db.exec(SCHEMA);
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    });
  }

  private schemaVersion(): number {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new Error(`state file ${this.path} has schema version ${version}; this mpath-pr understands up to ${SCHEMA_VERSION}`);
    }
    return version;
  }

  /** Runs fn inside BEGIN IMMEDIATE ... COMMIT; an exception rolls everything back. */
  immediate<T>(fn: () => T): T {
    return this.transaction.immediate(fn) as T;
  }

  /**
   * Runs fn inside the current transaction as a SAVEPOINT: an exception undoes only fn's
   * changes. Used to commit a batch of commands with one fsync (group commit).
   */
  savepoint<T>(fn: () => T): T {
    if (!this.db.inTransaction) throw new Error('EmulatedStore.savepoint outside a transaction');
    return this.transaction(fn) as T;
  }

  private statement(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  readLuState(id: string): string | undefined {
    const row = this.statement('SELECT state FROM logical_unit WHERE id = ?').get(id) as { state: string } | undefined;
    return row?.state;
  }

  writeLuState(id: string, state: string): void {
    this.statement(
      `INSERT INTO logical_unit (id, state, updated_at) VALUES (?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`,
    ).run(id, state, new Date().toISOString());
  }

  listLogicalUnits(): string[] {
    return (this.statement('SELECT id FROM logical_unit ORDER BY id').all() as { id: string }[]).map((r) => r.id);
  }

  luDelayMs(id: string): number {
    const row = this.statement('SELECT delay_ms FROM logical_unit WHERE id = ?').get(id) as { delay_ms: number } | undefined;
    return row?.delay_ms ?? 0;
  }

  setLuDelayMs(id: string, initialState: string, delayMs: number): void {
    this.statement(
      `INSERT INTO logical_unit (id, state, delay_ms, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET delay_ms = excluded.delay_ms`,
    ).run(id, initialState, delayMs, new Date().toISOString());
  }

  /** Makes sure the host has paths 0..count-1; existing paths keep their state. */
  ensureHostPaths(initiator: string, count: number): void {
    const insert = this.statement(`INSERT OR IGNORE INTO host_path (initiator, path_index, state) VALUES (?, ?, 'active')`);
    for (let index = 0; index < count; index++) insert.run(initiator, index);
  }

  hostPaths(initiator: string): HostPath[] {
    const rows = this.statement('SELECT initiator, path_index, state FROM host_path WHERE initiator = ? ORDER BY path_index')
      .all(initiator) as { initiator: string; path_index: number; state: PathState }[];
    return rows.map((r) => ({ initiator: r.initiator, index: r.path_index, state: r.state }));
  }

  hosts(): string[] {
    return (this.statement('SELECT DISTINCT initiator FROM host_path ORDER BY initiator').all() as { initiator: string }[]).map(
      (r) => r.initiator,
    );
  }

  /** The number of target ports the SAN exposes: enough for the host with the most paths. */
  targetPortCount(): number {
    const row = this.statement('SELECT MAX(path_index) + 1 AS n FROM host_path').get() as { n: number | null };
    return Math.max(1, row.n ?? 1);
  }

  /**
   * SQLite's PRAGMA data_version: on this connection it changes exactly when another
   * connection (another process, the writer thread) committed to the file since it was
   * last read.
   */
  dataVersion(): number {
    return Number(this.db.pragma('data_version', { simple: true }));
  }

  setPathState(initiator: string, index: number, state: PathState): boolean {
    return this.statement('UPDATE host_path SET state = ? WHERE initiator = ? AND path_index = ?').run(state, initiator, index).changes === 1;
  }

  hostKey(initiator: string, lu: string): { key: bigint; aptpl: boolean } | undefined {
    const row = this.statement('SELECT key, aptpl FROM host_key WHERE initiator = ? AND lu = ?').get(initiator, lu) as
      | { key: string; aptpl: number }
      | undefined;
    return row ? { key: BigInt(row.key), aptpl: row.aptpl !== 0 } : undefined;
  }

  setHostKey(initiator: string, lu: string, key: bigint, aptpl: boolean): void {
    this.statement(
      `INSERT INTO host_key (initiator, lu, key, aptpl) VALUES (?, ?, ?, ?)
       ON CONFLICT (initiator, lu) DO UPDATE SET key = excluded.key, aptpl = excluded.aptpl`,
    ).run(initiator, lu, `0x${key.toString(16)}`, aptpl ? 1 : 0);
  }

  clearHostKey(initiator: string, lu: string): void {
    this.statement('DELETE FROM host_key WHERE initiator = ? AND lu = ?').run(initiator, lu);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
