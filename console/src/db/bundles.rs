//! Bundle rows (the files themselves are `<bundles dir>/<sha256>.p6b`).

use p6os_protocol::Bundle;

use super::sql::{Row, Sql, SqlError};
use super::{Conn, Context, DbError};
use crate::args;
use crate::page::{Page, PageQuery};

const COLUMNS: &str = "sha256, name, version, arch, size, key_id, uploaded_at";

fn row(r: &Row) -> Result<Bundle, SqlError> {
    Ok(Bundle {
        sha256: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        arch: r.get(3)?,
        size: r.get::<i64>(4)?.max(0) as u64,
        key_id: r.get(5)?,
        uploaded_at: r.get::<i64>(6)?.max(0) as u64,
    })
}

pub fn get(conn: &mut Conn, sha256: &str) -> Result<Option<Bundle>, DbError> {
    conn.auto(|c| get_in(c, sha256))
}

pub fn get_in(c: &mut dyn Sql, sha256: &str) -> Result<Option<Bundle>, DbError> {
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM bundles WHERE sha256 = ?1"),
        &args![sha256],
    )
    .and_then(|r| r.map(|r| row(&r)).transpose())
    .ctx("get bundle")
}

/// The bundle of an image name, version and arch.
pub fn find(
    c: &mut dyn Sql,
    name: &str,
    version: &str,
    arch: &str,
) -> Result<Option<Bundle>, DbError> {
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM bundles WHERE name = ?1 AND version = ?2 AND arch = ?3"),
        &args![name, version, arch],
    )
    .and_then(|r| r.map(|r| row(&r)).transpose())
    .ctx("find bundle")
}

/// A page of the bundles, by name, arch, upload time and version, after the bundle whose
/// sha256 is `page.after`; `None` if no bundle has that sha256.
pub fn list(conn: &mut Conn, page: &PageQuery) -> Result<Option<Page<Bundle>>, DbError> {
    conn.read(|c| {
        if let Some(after) = &page.after {
            if get_in(c, after)?.is_none() {
                return Ok(None);
            }
        }
        let rows: Vec<Bundle> = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM bundles
                     WHERE CAST(?1 AS TEXT) IS NULL OR (name, arch, uploaded_at, version) >
                         (SELECT name, arch, uploaded_at, version FROM bundles WHERE sha256 = ?1)
                     ORDER BY name, arch, uploaded_at, version LIMIT ?2"
                ),
                &args![page.after.as_deref(), page.fetch()],
            )
            .and_then(|rows| rows.iter().map(row).collect())
            .ctx("list bundles")?;
        Ok(Some(page.page(rows, |b| b.sha256.clone())))
    })
}

pub fn insert(c: &mut dyn Sql, b: &Bundle) -> Result<(), DbError> {
    c.execute(
        &format!("INSERT INTO bundles ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        &args![
            &b.sha256,
            &b.name,
            &b.version,
            &b.arch,
            b.size,
            &b.key_id,
            b.uploaded_at
        ],
    )
    .ctx("insert bundle")?;
    Ok(())
}
