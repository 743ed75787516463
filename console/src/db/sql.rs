//! The console's SQL, on either backend: SQLite (rusqlite) or PostgreSQL (the `postgres`
//! crate). The storage modules write one SQL text for both, in the common dialect below, and
//! run it through [`Sql`]: arguments as [`Arg`]s, rows read back as [`Row`]s of plain values.
//!
//! The common dialect (what every statement of `db/` keeps to):
//! - parameters are numbered, `?1`, `?2`, ... with no gaps (PostgreSQL must infer each
//!   parameter's type from its use; rewritten to `$1`, ... for it); a parameter whose first
//!   use says nothing of its type (`?1 IS NULL`, a `SELECT` list) is `CAST(?1 AS ...)`;
//! - integers are 64-bit (`BIGINT` columns on PostgreSQL): aggregates and `length()` that
//!   PostgreSQL types otherwise are `CAST(... AS BIGINT)`;
//! - `TRUE`/`FALSE`, `IS DISTINCT FROM`, `ON CONFLICT`, `RETURNING` (SQLite has them all);
//! - JSON only through [`Dialect::json_text`] and [`Dialect::label_match`];
//! - no `INSERT OR ...`, `last_insert_rowid()`, `rowid` or pragmas.

use std::collections::HashMap;

use postgres::types::{ToSql, Type};

/// Which SQL the connection speaks, for the few places where the dialects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The text of the top-level JSON member `key` of the JSON text column `column`.
    pub fn json_text(self, column: &str, key: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{key}')"),
            Dialect::Postgres => format!("(({column})::jsonb ->> '{key}')"),
        }
    }

    /// "The JSON object in `column` maps parameter `?k` to parameter `?v`" (both strings).
    pub fn label_match(self, column: &str, k: usize, v: usize) -> String {
        match self {
            Dialect::Sqlite => format!(
                "EXISTS (SELECT 1 FROM json_each({column}) WHERE key = ?{k} AND value = ?{v})"
            ),
            Dialect::Postgres => format!("((({column})::jsonb ->> CAST(?{k} AS TEXT)) = ?{v})"),
        }
    }

    /// ` FOR UPDATE` on PostgreSQL (a row lock for the transaction); nothing on SQLite, whose
    /// write transactions already exclude every other writer.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

/// What a transaction may need to hold alone across several statements (a count, then an
/// insert that depends on it): PostgreSQL's transaction-level advisory locks. On SQLite a
/// write transaction already excludes every other writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// The pending ids' cap.
    Pending,
    /// The diagnostics bundles' caps, and one outstanding request per appliance.
    Diagnostics,
    /// Operator changes that check rollouts, then set versions (and rollout creation).
    Operator,
    /// Bundle uploads (one row per sha256 and per name, version and arch).
    Bundles,
}

impl Lock {
    fn key(self) -> i64 {
        // "p6os" in the high half; the lock in the low half.
        0x7036_6f73_0000_0000
            + match self {
                Lock::Pending => 1,
                Lock::Diagnostics => 2,
                Lock::Operator => 3,
                Lock::Bundles => 4,
            }
    }
}

/// Holds `lock` until the transaction ends (PostgreSQL); nothing on SQLite.
pub fn hold(c: &mut dyn Sql, lock: Lock) -> Result<(), SqlError> {
    match c.dialect() {
        Dialect::Sqlite => Ok(()),
        Dialect::Postgres => c
            .execute(
                "SELECT pg_advisory_xact_lock(?1)",
                &[Arg::I64(Some(lock.key()))],
            )
            .map(|_| ()),
    }
}

/// A statement's argument. `None`s keep their type: PostgreSQL checks it.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    I64(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Bool(Option<bool>),
}

macro_rules! arg_from {
    ($variant:ident: $($t:ty => $conv:expr),* $(,)?) => {$(
        impl From<$t> for Arg {
            fn from(v: $t) -> Arg {
                #[allow(clippy::redundant_closure_call)]
                Arg::$variant(Some(($conv)(v)))
            }
        }
        impl From<Option<$t>> for Arg {
            fn from(v: Option<$t>) -> Arg {
                #[allow(clippy::redundant_closure_call)]
                Arg::$variant(v.map($conv))
            }
        }
    )*};
}

arg_from!(I64: i64 => |v| v, u32 => i64::from, i32 => i64::from,
    // Times, counts and sizes: far below i64::MAX.
    u64 => |v: u64| v as i64, usize => |v: usize| v as i64);
arg_from!(Text: String => |v| v, &str => str::to_string, &String => |v: &String| v.clone());
arg_from!(Bytes: Vec<u8> => |v| v, &[u8] => <[u8]>::to_vec, &Vec<u8> => |v: &Vec<u8>| v.clone());
arg_from!(Bool: bool => |v| v);

/// `args![a, b, ...]`: an array of [`Arg`]s from values convertible into them.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => { [$($crate::db::sql::Arg::from($v)),*] };
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Arg::I64(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Arg::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Arg::Bytes(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Arg::Bool(Some(v)) => ToSqlOutput::Owned(Value::Integer(i64::from(*v))),
            Arg::I64(None) | Arg::Text(None) | Arg::Bytes(None) | Arg::Bool(None) => {
                ToSqlOutput::Borrowed(ValueRef::Null)
            }
        })
    }
}

impl Arg {
    fn pg(&self) -> &(dyn ToSql + Sync) {
        match self {
            Arg::I64(v) => v,
            Arg::Text(v) => v,
            Arg::Bytes(v) => v,
            Arg::Bool(v) => v,
        }
    }
}

/// A column's value as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    I64(i64),
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

/// One row, read out of the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(Vec<Val>);

/// A Rust value a column reads into.
pub trait FromVal: Sized {
    fn from_val(v: &Val) -> Option<Self>;
}

impl FromVal for i64 {
    fn from_val(v: &Val) -> Option<i64> {
        match v {
            Val::I64(i) => Some(*i),
            Val::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
}

impl FromVal for bool {
    fn from_val(v: &Val) -> Option<bool> {
        match v {
            Val::Bool(b) => Some(*b),
            Val::I64(i) => Some(*i != 0),
            _ => None,
        }
    }
}

impl FromVal for String {
    fn from_val(v: &Val) -> Option<String> {
        match v {
            Val::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromVal for Vec<u8> {
    fn from_val(v: &Val) -> Option<Vec<u8>> {
        match v {
            Val::Bytes(b) => Some(b.clone()),
            Val::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
}

impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: &Val) -> Option<Option<T>> {
        match v {
            Val::Null => Some(None),
            v => T::from_val(v).map(Some),
        }
    }
}

impl Row {
    /// Column `i` as a `T`; a NULL or another type where `T` does not take it is an error.
    pub fn get<T: FromVal>(&self, i: usize) -> Result<T, SqlError> {
        let v = self.0.get(i).ok_or(SqlError::Column {
            index: i,
            found: "no such column".into(),
        })?;
        T::from_val(v).ok_or_else(|| SqlError::Column {
            index: i,
            found: format!("{v:?}"),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    #[error("column {index} holds {found}, not what the console expects")]
    Column { index: usize, found: String },
    #[error("no row")]
    NoRow,
}

impl SqlError {
    /// A conflict between concurrent transactions that a retry resolves (PostgreSQL:
    /// serialization failure, deadlock).
    pub fn is_retryable(&self) -> bool {
        match self {
            SqlError::Postgres(e) => e.code().is_some_and(|c| {
                *c == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            }),
            _ => false,
        }
    }

    /// A unique or primary key already taken.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            SqlError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            }
            SqlError::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// What a statement runs on: a connection outside a transaction, or a transaction.
pub trait Sql {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, SqlError>;
    /// Every row of a query.
    fn query(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, SqlError>;
    /// Statements without arguments, separated by `;` (migrations).
    fn batch(&mut self, sql: &str) -> Result<(), SqlError>;

    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, args: &[Arg]) -> Result<Option<Row>, SqlError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The first row; none is an error.
    fn query_one(&mut self, sql: &str, args: &[Arg]) -> Result<Row, SqlError> {
        self.query_opt(sql, args)?.ok_or(SqlError::NoRow)
    }
}

// --- SQLite -------------------------------------------------------------------------------

/// A SQLite connection or transaction (a `rusqlite::Transaction` derefs to its connection).
pub struct Lite<'a>(pub &'a rusqlite::Connection);

fn lite_val(v: rusqlite::types::ValueRef<'_>) -> Val {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::I64(i),
        // The schema has no REAL column; a float where one is read is a type error later.
        ValueRef::Real(f) => Val::Text(f.to_string()),
        ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Val::Bytes(b.to_vec()),
    }
}

impl Sql for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, SqlError> {
        let mut st = self.0.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(args))? as u64)
    }

    fn query(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, SqlError> {
        let mut st = self.0.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(lite_val(r.get_ref(i)?));
            }
            out.push(Row(vals));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        Ok(self.0.execute_batch(sql)?)
    }
}

// --- PostgreSQL ---------------------------------------------------------------------------

/// `?N` -> `$N`, outside quoted text.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (Some(q), c) if c == q => {
                quoted = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quoted = Some(c);
                out.push(c);
            }
            (None, '?') if chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            (None, c) => out.push(c),
        }
    }
    out
}

/// Prepared statements of one PostgreSQL connection, by their text in the common dialect.
#[derive(Default)]
pub struct StatementCache(HashMap<String, postgres::Statement>);

/// A PostgreSQL connection or transaction with its connection's statement cache.
pub struct Pg<'a, C: postgres::GenericClient> {
    pub client: &'a mut C,
    pub cache: &'a mut StatementCache,
}

impl<C: postgres::GenericClient> Pg<'_, C> {
    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, SqlError> {
        if let Some(st) = self.cache.0.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(&to_postgres(sql))?;
        self.cache.0.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

fn pg_val(row: &postgres::Row, i: usize) -> Result<Val, SqlError> {
    let ty = row.columns()[i].type_();
    let bad = |what: &str| SqlError::Column {
        index: i,
        found: what.to_string(),
    };
    Ok(match *ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Val::Null, Val::I64),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Val::Null, |v| Val::I64(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map_or(Val::Null, |v| Val::I64(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Val::Null, Val::Bool),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Val::Null, Val::Text),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Val::Null, Val::Bytes),
        ref other => return Err(bad(&format!("a value of type {other}"))),
    })
}

impl<C: postgres::GenericClient> Sql for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, SqlError> {
        let st = self.prepare(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(Arg::pg).collect();
        Ok(self.client.execute(&st, &params)?)
    }

    fn query(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, SqlError> {
        let st = self.prepare(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(Arg::pg).collect();
        self.client
            .query(&st, &params)?
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| pg_val(r, i))
                    .collect::<Result<_, _>>()
                    .map(Row)
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        Ok(self.client.batch_execute(sql)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?10 AND e = \"?3\""),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $10 AND e = \"?3\""
        );
        assert_eq!(
            to_postgres("SELECT 'it''s ?1', ?2"),
            "SELECT 'it''s ?1', $2"
        );
    }

    #[test]
    fn sqlite_round_trip_of_every_argument_kind() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let mut s = Lite(&c);
        s.batch("CREATE TABLE t (i INTEGER, s TEXT, b BLOB, f INTEGER)")
            .unwrap();
        let n = s
            .execute(
                "INSERT INTO t (i, s, b, f) VALUES (?1, ?2, ?3, ?4), (?5, ?6, ?7, ?8)",
                &crate::args![
                    7i64,
                    "x",
                    &b"\x00\x01"[..],
                    true,
                    None::<i64>,
                    None::<String>,
                    None::<Vec<u8>>,
                    None::<bool>
                ],
            )
            .unwrap();
        assert_eq!(n, 2);
        let rows = s
            .query("SELECT i, s, b, f FROM t ORDER BY i IS NULL", &[])
            .unwrap();
        assert_eq!(rows[0].get::<i64>(0).unwrap(), 7);
        assert_eq!(rows[0].get::<String>(1).unwrap(), "x");
        assert_eq!(rows[0].get::<Vec<u8>>(2).unwrap(), vec![0, 1]);
        assert!(rows[0].get::<bool>(3).unwrap());
        assert_eq!(rows[1].get::<Option<i64>>(0).unwrap(), None);
        assert_eq!(rows[1].get::<Option<String>>(1).unwrap(), None);
        assert!(rows[1].get::<i64>(0).is_err(), "a NULL is not an i64");
        assert!(rows[0].get::<String>(0).is_err(), "an integer is not text");
        assert!(matches!(
            s.query_one("SELECT i FROM t WHERE i = 99", &[]),
            Err(SqlError::NoRow)
        ));
    }
}
