//! The console's state in one SQLite file: schema, migrations, and the connection handle the
//! async handlers use (`Db::run`: one short transaction on a blocking thread).
//!
//! Durability: WAL with `synchronous=NORMAL`. A committed transaction survives a crash or
//! `kill -9` of the process (it is in the WAL, which the OS holds); a power loss may lose the
//! last transactions (the WAL is synced only at checkpoints) but never corrupts the database.

pub mod appliances;
pub mod bundles;
pub mod diagnostics;
pub mod pairing;
pub mod rollouts;
pub mod siteconfig;
pub mod sql;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

/// Ordered schema migrations: `user_version` is the number applied. Append, never edit.
const MIGRATIONS: &[&str] = &[
    // 1: appliances, their events, bundles.
    "CREATE TABLE appliances (
        id TEXT PRIMARY KEY NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'unpaired', 'ready')),
        name TEXT,
        labels_json TEXT NOT NULL DEFAULT '{}',
        facts_json TEXT,
        desired_version TEXT,
        reported_json TEXT,
        -- sha256 hex of the device token; set while paired.
        token_hash TEXT UNIQUE,
        -- the desired version whose missing bundle was already reported (one event, not one
        -- per heartbeat).
        missing_bundle TEXT,
        created_at INTEGER NOT NULL,
        paired_at INTEGER,
        last_seen INTEGER
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        appliance_id TEXT NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX events_by_appliance ON events(appliance_id, seq);
    CREATE TABLE bundles (
        sha256 TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        arch TEXT NOT NULL,
        size INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        uploaded_at INTEGER NOT NULL,
        UNIQUE (name, version, arch)
    );",
    // 2: device identity keys, the image recorded at pairing, the console's own secrets.
    "ALTER TABLE appliances ADD COLUMN pairing TEXT NOT NULL DEFAULT 'approve'
        CHECK (pairing IN ('approve', 'first-key'));
    -- The fingerprint the id is bound to, and the key itself once a device proved it.
    ALTER TABLE appliances ADD COLUMN key_fingerprint TEXT;
    ALTER TABLE appliances ADD COLUMN device_key TEXT;
    -- A key that asked to pair and waits for an operator's approval.
    ALTER TABLE appliances ADD COLUMN requested_fingerprint TEXT;
    ALTER TABLE appliances ADD COLUMN image_name TEXT;
    ALTER TABLE appliances ADD COLUMN arch TEXT;
    CREATE INDEX appliances_by_status ON appliances(status);
    UPDATE appliances SET image_name = json_extract(facts_json, '$.image_name'),
        arch = json_extract(facts_json, '$.arch')
        WHERE status = 'ready' AND facts_json IS NOT NULL;
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL
    );",
    // 3: the operator allowed the desired version to be a downgrade (`--allow-downgrade`).
    "ALTER TABLE appliances ADD COLUMN allow_downgrade INTEGER NOT NULL DEFAULT 0;",
    // 4: the issue time (Unix ms) of the challenge whose proof last got a device token: a
    // proof is not replayed.
    "ALTER TABLE appliances ADD COLUMN last_challenge_ms INTEGER;",
    // Staged rollouts (`rollouts.rs`): the request as JSON, where the rollout stands, and its
    // members (fixed at creation) with their wave and the state derived from their heartbeats.
    "CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        version TEXT NOT NULL,
        request_json TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('running', 'paused', 'completed', 'aborted')),
        reason TEXT,
        wave INTEGER NOT NULL DEFAULT 0,
        -- failures at the last resume: not counted against the threshold again.
        acknowledged_failures INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX rollouts_by_state ON rollouts(state);
    CREATE TABLE rollout_devices (
        rollout_id INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
        appliance_id TEXT NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
        wave INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        -- the console handed it the rollout's version (its desired version was set).
        handed INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (rollout_id, appliance_id)
    );
    CREATE INDEX rollout_devices_by_appliance ON rollout_devices(appliance_id);
    -- the totals per wave and state (a covering index: counted without reading rows).
    CREATE INDEX rollout_devices_by_state ON rollout_devices(rollout_id, wave, state);",
    siteconfig::MIGRATION,
    // diagnostics: operators' requests for a device's diagnostics bundle, and the bundles
    // (bytes in the row; NULL once dropped to keep within the caps).
    "CREATE TABLE diagnostics (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        appliance_id TEXT NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
        max_bytes INTEGER NOT NULL,
        requested_at INTEGER NOT NULL,
        delivered_at INTEGER,
        uploaded_at INTEGER,
        size INTEGER,
        sha256 TEXT,
        content BLOB
    );
    CREATE INDEX diagnostics_by_appliance ON diagnostics(appliance_id, id);",
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, newer than this console knows ({known}): \
         use a newer p6os-console"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("cannot apply schema migration {number}")]
    Migration {
        number: usize,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database query failed ({what})")]
    Query {
        what: &'static str,
        #[source]
        source: sql::SqlError,
    },
    #[error("stored {what} is not valid JSON")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the database thread stopped")]
    Thread,
    #[error("the operating system gave no random bytes")]
    Random,
}

/// Adds "which query" context to rusqlite errors.
pub(crate) trait Context<T> {
    fn ctx(self, what: &'static str) -> Result<T, DbError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn ctx(self, what: &'static str) -> Result<T, DbError> {
        self.map_err(|source| DbError::Query {
            what,
            source: source.into(),
        })
    }
}

impl<T> Context<T> for Result<T, sql::SqlError> {
    fn ctx(self, what: &'static str) -> Result<T, DbError> {
        self.map_err(|source| DbError::Query { what, source })
    }
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &'static str,
) -> Result<T, DbError> {
    serde_json::from_str(text).map_err(|source| DbError::Json { what, source })
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing the protocol's plain structs and maps cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// An open database, as a request's closure gets it ([`Db::run`]).
#[derive(Debug)]
pub enum Conn {
    Sqlite(Connection),
}

impl Conn {
    pub fn dialect(&self) -> sql::Dialect {
        match self {
            Conn::Sqlite(_) => sql::Dialect::Sqlite,
        }
    }

    /// The SQLite connection, for tests that look at the file directly.
    #[cfg(test)]
    pub(crate) fn sqlite(&mut self) -> &mut Connection {
        match self {
            Conn::Sqlite(c) => c,
        }
    }

    /// Runs `f` on the connection outside a transaction (each statement on its own).
    pub fn auto<T>(&mut self, f: impl FnOnce(&mut dyn sql::Sql) -> T) -> T {
        match self {
            Conn::Sqlite(c) => f(&mut sql::Lite(c)),
        }
    }

    /// Runs `f` in one write transaction: committed when `f` returns `Ok`, rolled back
    /// otherwise. On SQLite the transaction takes the write lock at once (`BEGIN IMMEDIATE`),
    /// so what it reads stays true until it commits.
    pub fn write<T, E: From<DbError>>(
        &mut self,
        f: impl FnOnce(&mut dyn sql::Sql) -> Result<T, E>,
    ) -> Result<T, E> {
        match self {
            Conn::Sqlite(c) => {
                let tx = c
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .ctx("begin")?;
                let out = f(&mut sql::Lite(&tx))?;
                tx.commit().ctx("commit")?;
                Ok(out)
            }
        }
    }

    /// Runs `f` in one read transaction: every query sees the same state.
    pub fn read<T, E: From<DbError>>(
        &mut self,
        f: impl FnOnce(&mut dyn sql::Sql) -> Result<T, E>,
    ) -> Result<T, E> {
        match self {
            Conn::Sqlite(c) => {
                let tx = c.transaction().ctx("begin")?;
                let out = f(&mut sql::Lite(&tx))?;
                tx.commit().ctx("commit")?;
                Ok(out)
            }
        }
    }
}

/// Opens (creating if needed) and migrates the database.
pub fn open(path: &Path) -> Result<Conn, DbError> {
    let open_err = |source| DbError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn, path)?;
    Ok(Conn::Sqlite(conn))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .ctx("begin migration")?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .ctx("read user_version")?;
    if version > MIGRATIONS.len() as i64 {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let number = i + 1;
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", number as i64))
            .map_err(|source| DbError::Migration { number, source })?;
    }
    tx.commit().ctx("commit migration")
}

/// The shared connection. One writer at a time is what SQLite does anyway; a request waits
/// for its turn as a cheap async task (a fair queue), then runs one short transaction on a
/// blocking thread, so under load the blocking pool holds one busy thread, not hundreds
/// blocked on a lock.
#[derive(Clone)]
pub struct Db(Arc<tokio::sync::Mutex<Conn>>);

impl Db {
    pub fn new(conn: Conn) -> Db {
        Db(Arc::new(tokio::sync::Mutex::new(conn)))
    }

    /// Runs `f` with the connection on tokio's blocking pool.
    pub async fn run<T, E>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let mut guard = self.0.clone().lock_owned().await;
        // A panic in `f` drops the guard while unwinding; rusqlite rolls back an unfinished
        // transaction on drop, so the connection stays usable.
        tokio::task::spawn_blocking(move || f(&mut guard))
            .await
            .map_err(|_| E::from(DbError::Thread))?
    }
}

/// The console's secret called `name` (32 bytes), made on first use. Kept in the database so
/// every console on it shares it (pairing challenges made by one are checked by another): the
/// first console to store it wins, the others read it.
pub fn secret(conn: &mut Conn, name: &str) -> Result<[u8; 32], DbError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| DbError::Random)?;
    let stored: Vec<u8> = conn.write(|tx| {
        tx.execute(
            "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            &crate::args![name, &bytes[..]],
        )
        .ctx("store secret")?;
        tx.query_one(
            "SELECT value FROM secrets WHERE name = ?1",
            &crate::args![name],
        )
        .and_then(|r| r.get(0))
        .ctx("read secret")
    })?;
    <[u8; 32]>::try_from(stored).map_err(|_| DbError::Query {
        what: "read secret",
        source: sql::SqlError::Column {
            index: 0,
            found: "a secret that is not 32 bytes".into(),
        },
    })
}

/// Whether a row exists (`SELECT 1 ... WHERE id = ?1`).
pub(crate) fn exists_in(c: &mut dyn sql::Sql, sql: &str, id: &str) -> Result<bool, DbError> {
    c.query_opt(sql, &crate::args![id])
        .map(|r| r.is_some())
        .ctx("exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        drop(open(&path).unwrap());
        let mut conn = open(&path).unwrap();
        let v: i64 = conn
            .sqlite()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let mode: String = conn
            .sqlite()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.sqlite()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        drop(conn);
        let e = open(&path).unwrap_err();
        assert!(matches!(e, DbError::TooNew { found: 99, .. }), "{e}");
        assert!(e.to_string().contains("newer"), "{e}");
    }

    /// Migration 4 on a database of version 3: rows stay, `last_challenge_ms` is NULL.
    #[test]
    fn migration_4_keeps_rows_and_adds_last_challenge_ms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute(
                "INSERT INTO appliances (id, status, created_at, key_fingerprint)
                 VALUES ('dev', 'ready', 1, 'SHA256:x')",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let mut conn = open(&path).unwrap();
        let v: i64 = conn
            .sqlite()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let (fp, last): (String, Option<i64>) = conn
            .sqlite()
            .query_row(
                "SELECT key_fingerprint, last_challenge_ms FROM appliances WHERE id = 'dev'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((fp.as_str(), last), ("SHA256:x", None));
    }

    /// The rollouts migration on a database of the version before it: rows stay, the tables
    /// come, and deleting an appliance removes its rollout memberships.
    #[test]
    fn rollouts_migration_keeps_rows_and_cascades() {
        let mine = MIGRATIONS
            .iter()
            .position(|m| m.contains("CREATE TABLE rollouts"))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..mine] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", mine as i64).unwrap();
            tx.execute(
                "INSERT INTO appliances (id, status, created_at) VALUES ('dev', 'ready', 1)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let mut conn = open(&path).unwrap();
        conn.sqlite()
            .execute(
                "INSERT INTO rollouts (version, request_json, state, created_at, updated_at)
             VALUES ('2.0', '{}', 'running', 1, 1)",
                [],
            )
            .unwrap();
        conn.sqlite()
            .execute(
                "INSERT INTO rollout_devices (rollout_id, appliance_id, wave, state, updated_at)
             VALUES (1, 'dev', 0, 'waiting', 1)",
                [],
            )
            .unwrap();
        assert!(conn
            .sqlite()
            .execute(
                "INSERT INTO rollouts (version, request_json, state, created_at, updated_at)
                 VALUES ('2.0', '{}', 'sleeping', 1, 1)",
                [],
            )
            .is_err());
        conn.sqlite()
            .execute("DELETE FROM appliances WHERE id = 'dev'", [])
            .unwrap();
        let n: i64 = conn
            .sqlite()
            .query_row("SELECT COUNT(*) FROM rollout_devices", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    /// The diagnostics migration on a database with appliances: they stay, the table is
    /// empty and usable.
    #[test]
    fn diagnostics_migration_keeps_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let at = MIGRATIONS
            .iter()
            .position(|m| m.contains("CREATE TABLE diagnostics"))
            .unwrap();
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..at] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", at as i64).unwrap();
            tx.execute(
                "INSERT INTO appliances (id, status, created_at) VALUES ('dev', 'ready', 1)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let mut conn = open(&path).unwrap();
        let n: i64 = conn
            .sqlite()
            .query_row("SELECT count(*) FROM appliances", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        conn.sqlite().execute(
            "INSERT INTO diagnostics (appliance_id, max_bytes, requested_at) VALUES ('dev', 1, 2)",
            [],
        )
        .unwrap();
    }
}
