//! `p6os-console migrate-db`: a fleet's whole state from one database into another (SQLite
//! to PostgreSQL, or back), keeping every id, token hash, secret and event number, so devices
//! and operators notice nothing but the new address of the database.
//!
//! The source is read in one read transaction (a consistent snapshot: stop the consoles
//! first, or their last writes are not in the copy); the target must be empty (migrated, no
//! rows) and is written in one transaction: a failure leaves it as it was. Bundle files stay
//! in the bundles directory, which the consoles on the new database use as before.

use super::sql::{Arg, Row, Sql};
use super::{Conn, Context, DbError};

/// A column's type in both schemas.
#[derive(Debug, Clone, Copy)]
enum Kind {
    I64,
    Text,
    Bytes,
    Bool,
}

use Kind::{Bool, Bytes, Text, I64};

/// A table: its name, its key (`ORDER BY`), its columns.
type Table = (&'static str, &'static str, &'static [(&'static str, Kind)]);

/// Every table in foreign-key order, with its key (the copy is read in key order, a page at a
/// time) and columns. The schema test below fails when a migration adds a column not named
/// here.
const TABLES: &[Table] = &[
    ("secrets", "name", &[("name", Text), ("value", Bytes)]),
    (
        "appliances",
        "id",
        &[
            ("id", Text),
            ("status", Text),
            ("name", Text),
            ("labels_json", Text),
            ("facts_json", Text),
            ("desired_version", Text),
            ("reported_json", Text),
            ("token_hash", Text),
            ("missing_bundle", Text),
            ("created_at", I64),
            ("paired_at", I64),
            ("last_seen", I64),
            ("pairing", Text),
            ("key_fingerprint", Text),
            ("device_key", Text),
            ("requested_fingerprint", Text),
            ("image_name", Text),
            ("arch", Text),
            ("allow_downgrade", Bool),
            ("last_challenge_ms", I64),
        ],
    ),
    (
        "events",
        "seq",
        &[
            ("seq", I64),
            ("appliance_id", Text),
            ("at", I64),
            ("kind", Text),
            ("message", Text),
        ],
    ),
    (
        "bundles",
        "sha256",
        &[
            ("sha256", Text),
            ("name", Text),
            ("version", Text),
            ("arch", Text),
            ("size", I64),
            ("key_id", Text),
            ("uploaded_at", I64),
        ],
    ),
    (
        "rollouts",
        "id",
        &[
            ("id", I64),
            ("version", Text),
            ("request_json", Text),
            ("state", Text),
            ("reason", Text),
            ("wave", I64),
            ("acknowledged_failures", I64),
            ("created_at", I64),
            ("updated_at", I64),
        ],
    ),
    (
        "rollout_devices",
        "rollout_id, appliance_id",
        &[
            ("rollout_id", I64),
            ("appliance_id", Text),
            ("wave", I64),
            ("state", Text),
            ("reason", Text),
            ("handed", Bool),
            ("updated_at", I64),
        ],
    ),
    (
        "site_configs",
        "id",
        &[
            ("id", I64),
            ("digest", Text),
            ("document", Bytes),
            ("signature", Text),
            ("serial", I64),
            ("redacted_json", Text),
            ("created_at", I64),
        ],
    ),
    (
        "appliance_configs",
        "seq",
        &[
            ("seq", I64),
            ("appliance_id", Text),
            ("config_id", I64),
            ("set_at", I64),
            ("outcome", Text),
            ("reported_at", I64),
            ("problems_json", Text),
        ],
    ),
    (
        "diagnostics",
        "id",
        &[
            ("id", I64),
            ("appliance_id", Text),
            ("max_bytes", I64),
            ("requested_at", I64),
            ("delivered_at", I64),
            ("uploaded_at", I64),
            ("size", I64),
            ("sha256", Text),
            ("content", Bytes),
        ],
    ),
    (
        "users",
        "id",
        &[
            ("id", I64),
            ("name", Text),
            ("role", Text),
            ("scope_json", Text),
            ("password_hash", Text),
            ("disabled", Bool),
            ("failed_logins", I64),
            ("refused_until", I64),
            ("created_at", I64),
        ],
    ),
    (
        "api_tokens",
        "id",
        &[
            ("id", I64),
            ("user_id", I64),
            ("name", Text),
            ("token_hash", Text),
            ("created_at", I64),
            ("expires_at", I64),
            ("last_used", I64),
        ],
    ),
    (
        "sessions",
        "id_hash",
        &[
            ("id_hash", Text),
            ("user_id", I64),
            ("csrf", Text),
            ("created_at", I64),
            ("last_seen", I64),
        ],
    ),
    (
        "audit",
        "seq",
        &[
            ("seq", I64),
            ("at_ms", I64),
            ("actor", Text),
            ("via", Text),
            ("source", Text),
            ("action", Text),
            ("target", Text),
            ("status", I64),
        ],
    ),
];

/// Identity columns whose next value must follow the copied rows (PostgreSQL).
const IDENTITIES: &[(&str, &str)] = &[
    ("events", "seq"),
    ("rollouts", "id"),
    ("site_configs", "id"),
    ("appliance_configs", "seq"),
    ("diagnostics", "id"),
    ("users", "id"),
    ("api_tokens", "id"),
    ("audit", "seq"),
];

/// Rows read and written at a time.
const PAGE: i64 = 500;

/// Rows copied per table.
pub type Copied = Vec<(&'static str, u64)>;

fn arg(row: &Row, i: usize, kind: Kind) -> Result<Arg, super::sql::SqlError> {
    Ok(match kind {
        I64 => Arg::I64(row.get(i)?),
        Text => Arg::Text(row.get(i)?),
        Bytes => Arg::Bytes(row.get(i)?),
        Bool => Arg::Bool(Some(row.get(i)?)),
    })
}

/// Why the copy did not start.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the target database is not empty ({table} has rows): copy into a new database")]
    TargetNotEmpty { table: &'static str },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Copies every row of `from` into the empty `to` (both migrated to this console's schema).
pub fn copy(from: &mut Conn, to: &mut Conn) -> Result<Copied, CopyError> {
    to.write(|dst| {
        for (table, _, _) in TABLES {
            if dst
                .query_opt(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])
                .ctx("target rows")?
                .is_some()
            {
                return Err(CopyError::TargetNotEmpty { table });
            }
        }
        let copied = from.read(|src| copy_tables(src, dst))?;
        if dst.dialect() == super::sql::Dialect::Postgres {
            for (table, column) in IDENTITIES {
                dst.query_one(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                             COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
                    ),
                    &[],
                )
                .ctx("identity")?;
            }
        }
        Ok(copied)
    })
}

fn copy_tables(src: &mut dyn Sql, dst: &mut dyn Sql) -> Result<Copied, CopyError> {
    let mut copied = Vec::new();
    for (table, key, columns) in TABLES {
        let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
        let list = names.join(", ");
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let insert = format!(
            "INSERT INTO {table} ({list}) VALUES ({})",
            placeholders.join(", ")
        );
        let mut offset = 0i64;
        let mut n = 0u64;
        loop {
            let rows = src
                .query(
                    &format!("SELECT {list} FROM {table} ORDER BY {key} LIMIT ?1 OFFSET ?2"),
                    &[Arg::I64(Some(PAGE)), Arg::I64(Some(offset))],
                )
                .ctx("read rows")?;
            for row in &rows {
                let args = columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| arg(row, i, *kind))
                    .collect::<Result<Vec<_>, _>>()
                    .ctx("read a row")?;
                dst.execute(&insert, &args).ctx("write rows")?;
                n += 1;
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
            offset += PAGE;
        }
        copied.push((*table, n));
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column of every table of the schema is copied: a migration that adds a column
    /// must add it here.
    #[test]
    fn every_column_of_the_schema_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::open(&dir.path().join("c.db")).unwrap();
        let c = conn.sqlite();
        let tables: Vec<String> = c
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut listed: Vec<&str> = TABLES.iter().map(|(t, _, _)| *t).collect();
        listed.sort_unstable();
        assert_eq!(tables, listed);
        for (table, _, columns) in TABLES {
            let schema: Vec<String> = c
                .prepare(&format!(
                    "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
                ))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let named: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
            assert_eq!(schema, named, "{table}");
        }
    }
}
