//! The versioned schema. SQLite: `PRAGMA user_version` holds how many of [`MIGRATIONS`] have been
//! applied. PostgreSQL: the `schema_version` table holds one row per applied migration of
//! [`PG_MIGRATIONS`] (see `pg.rs`); the version is its largest `version`.
//!
//! To change the schema, APPEND a migration to BOTH lists (never edit an applied one): migration `i`
//! (1-based) moves the database from version `i - 1` to `i`, in one transaction together with the
//! version bump. Both lists must describe the same tables, columns and unique keys (the readers and the
//! tests compare what the two backends give back); a compile-time check keeps their lengths equal.

use std::path::Path;

use rusqlite::Connection;

use super::{sql_err, RecordsError};

/// Ordered migrations; index 0 is migration 1.
pub const MIGRATIONS: &[&str] = &[
    // 1: the calls table, one column per CallRecord field.
    "CREATE TABLE calls (
        call_id      TEXT    PRIMARY KEY NOT NULL,
        sip_call_id  TEXT    NOT NULL,
        tenant       TEXT,
        trunk        TEXT,
        service      TEXT,
        caller       TEXT    NOT NULL,
        number       TEXT    NOT NULL,
        source       TEXT    NOT NULL,
        transport    TEXT    NOT NULL,
        arrived_ms   INTEGER NOT NULL,
        answered_ms  INTEGER,
        ended_ms     INTEGER NOT NULL,
        outcome      TEXT    NOT NULL,
        sip_status   INTEGER NOT NULL,
        reason       TEXT    NOT NULL
    );
    CREATE INDEX calls_arrived_ms ON calls(arrived_ms);
    CREATE INDEX calls_tenant ON calls(tenant, arrived_ms);",
    // 2: the DTMF digits the caller pressed during the call, in order.
    "ALTER TABLE calls ADD COLUMN digits TEXT NOT NULL DEFAULT '';",
    // 3: the ACD's queue log, one row per QueueEvent (see log.rs for `data` and `seq`). The unique key
    //    makes a replay write nothing; it also serves range scans by time (at_ms leads).
    "CREATE TABLE queue_log (
        id      INTEGER PRIMARY KEY,
        at_ms   INTEGER NOT NULL,
        tenant  TEXT    NOT NULL,
        queue   TEXT    NOT NULL,
        call    TEXT    NOT NULL,
        agent   TEXT    NOT NULL,
        event   TEXT    NOT NULL,
        data    TEXT    NOT NULL,
        seq     INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX queue_log_key ON queue_log(at_ms, tenant, queue, call, agent, event, seq);
    CREATE INDEX queue_log_tenant ON queue_log(tenant, at_ms);",
    // 4: callbacks waiting for their turn (survive a restart); id = the ACD's callback id.
    "CREATE TABLE callbacks (
        id           INTEGER PRIMARY KEY NOT NULL,
        tenant       TEXT    NOT NULL,
        queue        TEXT    NOT NULL,
        number       TEXT    NOT NULL,
        requested_ms INTEGER NOT NULL,
        due_ms       INTEGER NOT NULL,
        enqueued_ms  INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        info         TEXT    NOT NULL
    );",
    // 5: what the ACD and the media path add to a call's record; NULL for calls that never had them
    //    (and for every row written before this version). The covering index serves repeat-caller
    //    look-ups (first-call resolution) without reading the table.
    "CREATE INDEX calls_contacts ON calls(tenant, arrived_ms, caller, call_id, outcome);
    ALTER TABLE calls ADD COLUMN queue TEXT;
    ALTER TABLE calls ADD COLUMN agent TEXT;
    ALTER TABLE calls ADD COLUMN menu_choice TEXT;
    ALTER TABLE calls ADD COLUMN recording TEXT;
    ALTER TABLE calls ADD COLUMN wait_ms INTEGER;
    ALTER TABLE calls ADD COLUMN talk_ms INTEGER;
    ALTER TABLE calls ADD COLUMN end_reason TEXT;",
];

/// [`MIGRATIONS`] for PostgreSQL, the same versions. Differences, all invisible to the readers: every
/// integer column is BIGINT (SQLite's INTEGER is 64-bit too); `queue_log.id` is an identity column
/// (SQLite's rowid: the commit order); the covering index of migration 5 keeps the extra columns in
/// `INCLUDE`; text compares byte-wise where the readers sort (`COLLATE "C"` in their ORDER BY), as
/// SQLite does.
pub const PG_MIGRATIONS: &[&str] = &[
    // 1
    "CREATE TABLE calls (
        call_id      TEXT    PRIMARY KEY NOT NULL,
        sip_call_id  TEXT    NOT NULL,
        tenant       TEXT,
        trunk        TEXT,
        service      TEXT,
        caller       TEXT    NOT NULL,
        number       TEXT    NOT NULL,
        source       TEXT    NOT NULL,
        transport    TEXT    NOT NULL,
        arrived_ms   BIGINT  NOT NULL,
        answered_ms  BIGINT,
        ended_ms     BIGINT  NOT NULL,
        outcome      TEXT    NOT NULL,
        sip_status   BIGINT  NOT NULL,
        reason       TEXT    NOT NULL
    );
    CREATE INDEX calls_arrived_ms ON calls(arrived_ms);
    CREATE INDEX calls_tenant ON calls(tenant, arrived_ms);",
    // 2
    "ALTER TABLE calls ADD COLUMN digits TEXT NOT NULL DEFAULT '';",
    // 3
    "CREATE TABLE queue_log (
        id      BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at_ms   BIGINT  NOT NULL,
        tenant  TEXT    NOT NULL,
        queue   TEXT    NOT NULL,
        call    TEXT    NOT NULL,
        agent   TEXT    NOT NULL,
        event   TEXT    NOT NULL,
        data    TEXT    NOT NULL,
        seq     BIGINT  NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX queue_log_key ON queue_log(at_ms, tenant, queue, call, agent, event, seq);
    CREATE INDEX queue_log_tenant ON queue_log(tenant, at_ms);",
    // 4
    "CREATE TABLE callbacks (
        id           BIGINT  PRIMARY KEY NOT NULL,
        tenant       TEXT    NOT NULL,
        queue        TEXT    NOT NULL,
        number       TEXT    NOT NULL,
        requested_ms BIGINT  NOT NULL,
        due_ms       BIGINT  NOT NULL,
        enqueued_ms  BIGINT  NOT NULL,
        attempts     BIGINT  NOT NULL DEFAULT 0,
        info         TEXT    NOT NULL
    );",
    // 5
    "CREATE INDEX calls_contacts ON calls(tenant, arrived_ms) INCLUDE (caller, call_id, outcome);
    ALTER TABLE calls ADD COLUMN queue TEXT;
    ALTER TABLE calls ADD COLUMN agent TEXT;
    ALTER TABLE calls ADD COLUMN menu_choice TEXT;
    ALTER TABLE calls ADD COLUMN recording TEXT;
    ALTER TABLE calls ADD COLUMN wait_ms BIGINT;
    ALTER TABLE calls ADD COLUMN talk_ms BIGINT;
    ALTER TABLE calls ADD COLUMN end_reason TEXT;",
];

const _: () = assert!(MIGRATIONS.len() == PG_MIGRATIONS.len(), "append every migration for both backends");

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies the migrations the database has not seen yet. Returns how many were applied.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<usize, RecordsError> {
    // IMMEDIATE: take the write lock before reading user_version, so two processes opening the same
    // fresh file cannot both run migration 1.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_err(path, "begin migration transaction"))?;
    let current: i64 =
        tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql_err(path, "read user_version"))?;
    if !(0..=SCHEMA_VERSION).contains(&current) {
        return Err(RecordsError::UnknownSchema { path: path.to_path_buf(), found: current, known: SCHEMA_VERSION });
    }
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        tx.execute_batch(sql).map_err(sql_err(path, "apply a schema migration"))?;
        tx.pragma_update(None, "user_version", version).map_err(sql_err(path, "set user_version"))?;
        tracing::info!(path = %path.display(), version, "records schema migrated");
        applied += 1;
    }
    tx.commit().map_err(sql_err(path, "commit schema migrations"))?;
    Ok(applied)
}
