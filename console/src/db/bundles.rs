//! Bundle rows (the files themselves are `<bundles dir>/<sha256>.p6b`).

use p6os_protocol::Bundle;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{Context, DbError};
use crate::page::{Page, PageQuery};

const COLUMNS: &str = "sha256, name, version, arch, size, key_id, uploaded_at";

fn row(r: &Row) -> rusqlite::Result<Bundle> {
    Ok(Bundle {
        sha256: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        arch: r.get(3)?,
        size: r.get::<_, i64>(4)?.max(0) as u64,
        key_id: r.get(5)?,
        uploaded_at: r.get::<_, i64>(6)?.max(0) as u64,
    })
}

pub fn get(conn: &Connection, sha256: &str) -> Result<Option<Bundle>, DbError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM bundles WHERE sha256 = ?1"))
        .and_then(|mut s| s.query_row([sha256], row).optional())
        .ctx("get bundle")
}

/// The bundle of an image name, version and arch.
pub fn find(
    conn: &Connection,
    name: &str,
    version: &str,
    arch: &str,
) -> Result<Option<Bundle>, DbError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM bundles WHERE name = ?1 AND version = ?2 AND arch = ?3"
    ))
    .and_then(|mut s| s.query_row([name, version, arch], row).optional())
    .ctx("find bundle")
}

/// A page of the bundles, by name, arch, upload time and version, after the bundle whose
/// sha256 is `page.after`; `None` if no bundle has that sha256.
pub fn list(conn: &mut Connection, page: &PageQuery) -> Result<Option<Page<Bundle>>, DbError> {
    if let Some(after) = &page.after {
        if get(conn, after)?.is_none() {
            return Ok(None);
        }
    }
    let rows: Vec<Bundle> = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM bundles
             WHERE ?1 IS NULL OR (name, arch, uploaded_at, version) >
                 (SELECT name, arch, uploaded_at, version FROM bundles WHERE sha256 = ?1)
             ORDER BY name, arch, uploaded_at, version LIMIT ?2"
        ))
        .and_then(|mut s| {
            s.query_map(params![page.after, page.fetch()], row)?
                .collect()
        })
        .ctx("list bundles")?;
    Ok(Some(page.page(rows, |b| b.sha256.clone())))
}

pub fn insert(conn: &Connection, b: &Bundle) -> Result<(), DbError> {
    conn.prepare_cached(&format!(
        "INSERT INTO bundles ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            b.sha256,
            b.name,
            b.version,
            b.arch,
            b.size as i64,
            b.key_id,
            b.uploaded_at as i64
        ])
    })
    .ctx("insert bundle")?;
    Ok(())
}
