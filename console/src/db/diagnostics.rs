//! Diagnostics rows and their bundles (the bytes in the row: at most
//! `p6os_protocol::diagnostics::MAX_BYTES` each, a few per appliance, a total cap).

use p6os_protocol::diagnostics::{content_path, DiagnosticsRequest, TTL_SECS};

use super::appliances::add_event;
use super::sql::{hold, Lock, Row as SqlRow, Sql, SqlError};
use super::{Conn, Context, DbError};
use crate::args;
use crate::diagnostics::{evictions, Caps, Row, MAX_ROWS_PER_APPLIANCE};
use crate::page::{Page, PageQuery};

const COLUMNS: &str = "id, appliance_id, max_bytes, requested_at, delivered_at, uploaded_at, \
                       size, sha256, content IS NOT NULL";

fn row(r: &SqlRow) -> Result<Row, SqlError> {
    let opt = |v: Option<i64>| v.map(|n| n.max(0) as u64);
    Ok(Row {
        id: r.get::<i64>(0)?.max(0) as u64,
        appliance_id: r.get(1)?,
        max_bytes: r.get::<i64>(2)?.max(0) as u64,
        requested_at: r.get::<i64>(3)?.max(0) as u64,
        delivered_at: opt(r.get(4)?),
        uploaded_at: opt(r.get(5)?),
        size: opt(r.get(6)?),
        sha256: r.get(7)?,
        held: r.get(8)?,
    })
}

fn one(c: &mut dyn Sql, sql: &str, args: &[super::sql::Arg]) -> Result<Option<Row>, SqlError> {
    c.query_opt(sql, args)?.map(|r| row(&r)).transpose()
}

pub fn get(conn: &mut Conn, id: u64) -> Result<Option<Row>, DbError> {
    conn.auto(|c| get_in(c, id))
}

fn get_in(c: &mut dyn Sql, id: u64) -> Result<Option<Row>, DbError> {
    one(
        c,
        &format!("SELECT {COLUMNS} FROM diagnostics WHERE id = ?1"),
        &args![id],
    )
    .ctx("get diagnostics")
}

/// The appliance's oldest outstanding request (not uploaded, not expired).
fn outstanding(c: &mut dyn Sql, appliance: &str, now: u64) -> Result<Option<Row>, DbError> {
    one(
        c,
        &format!(
            "SELECT {COLUMNS} FROM diagnostics
             WHERE appliance_id = ?1 AND uploaded_at IS NULL AND requested_at > ?2
             ORDER BY id LIMIT 1"
        ),
        &args![appliance, now.saturating_sub(TTL_SECS)],
    )
    .ctx("outstanding diagnostics")
}

/// What [`create`] did.
pub enum Created {
    New(Row),
    /// One request at a time: the outstanding one.
    Existing(Row),
    NoAppliance,
}

/// A new request for `appliance`, unless one is outstanding; forgets the appliance's oldest
/// requests beyond [`MAX_ROWS_PER_APPLIANCE`].
pub fn create(
    conn: &mut Conn,
    appliance: &str,
    max_bytes: u64,
    now: u64,
) -> Result<Created, DbError> {
    conn.write(|tx| {
        hold(tx, Lock::Diagnostics).ctx("diagnostics lock")?;
        if !super::exists_in(tx, "SELECT 1 FROM appliances WHERE id = ?1", appliance)? {
            return Ok(Created::NoAppliance);
        }
        if let Some(existing) = outstanding(tx, appliance, now)? {
            return Ok(Created::Existing(existing));
        }
        let id: i64 = tx
            .query_one(
                "INSERT INTO diagnostics (appliance_id, max_bytes, requested_at)
                 VALUES (?1, ?2, ?3) RETURNING id",
                &args![appliance, max_bytes, now],
            )
            .and_then(|r| r.get(0))
            .ctx("insert diagnostics")?;
        let id = id.max(0) as u64;
        tx.execute(
            "DELETE FROM diagnostics WHERE appliance_id = ?1 AND id NOT IN
                 (SELECT id FROM diagnostics WHERE appliance_id = ?1 ORDER BY id DESC LIMIT ?2)",
            &args![appliance, MAX_ROWS_PER_APPLIANCE],
        )
        .ctx("cap diagnostics rows")?;
        add_event(
            tx,
            appliance,
            now,
            "diagnostics",
            &format!("diagnostics bundle {id} requested (at most {max_bytes} bytes)"),
        )?;
        let created = get_in(tx, id)?.ok_or(DbError::Query {
            what: "read the new diagnostics request",
            source: SqlError::NoRow,
        })?;
        Ok(Created::New(created))
    })
}

/// For a heartbeat of `appliance`: its outstanding request, marked delivered (at its first
/// delivery). Passed on at every heartbeat until the bundle arrives (the agent does one
/// collection per request).
pub fn deliver(
    conn: &mut Conn,
    appliance: &str,
    now: u64,
) -> Result<Option<DiagnosticsRequest>, DbError> {
    conn.auto(|c| {
        let Some(r) = outstanding(c, appliance, now)? else {
            return Ok(None);
        };
        if r.delivered_at.is_none() {
            c.execute(
                "UPDATE diagnostics SET delivered_at = ?2 WHERE id = ?1 AND delivered_at IS NULL",
                &args![r.id, now],
            )
            .ctx("deliver diagnostics")?;
        }
        Ok(Some(DiagnosticsRequest {
            id: r.id,
            max_bytes: r.max_bytes,
            upload_path: content_path(r.id),
        }))
    })
}

/// An uploaded bundle.
pub struct Upload<'a> {
    pub id: u64,
    pub device: &'a str,
    pub bytes: &'a [u8],
    pub sha256: &'a str,
    pub now: u64,
}

/// Stores a bundle if `device` may still upload it (checked again under the lock), then drops
/// held bundles beyond `caps`. The stored row, or why not.
pub fn store(
    conn: &mut Conn,
    up: &Upload,
    caps: Caps,
) -> Result<Result<Row, crate::diagnostics::Refusal>, DbError> {
    conn.write(|tx| {
        hold(tx, Lock::Diagnostics).ctx("diagnostics lock")?;
        let current = get_in(tx, up.id)?;
        if let Err(refusal) = crate::diagnostics::may_upload(current.as_ref(), up.device, up.now) {
            return Ok(Err(refusal));
        }
        tx.execute(
            "UPDATE diagnostics SET uploaded_at = ?2, size = ?3, sha256 = ?4, content = ?5
             WHERE id = ?1",
            &args![up.id, up.now, up.bytes.len(), up.sha256, up.bytes],
        )
        .ctx("store diagnostics")?;
        add_event(
            tx,
            up.device,
            up.now,
            "diagnostics",
            &format!(
                "diagnostics bundle {} uploaded ({} bytes, sha256 {})",
                up.id,
                up.bytes.len(),
                up.sha256
            ),
        )?;
        evict(tx, caps)?;
        let stored = get_in(tx, up.id)?.ok_or(DbError::Query {
            what: "read the stored diagnostics",
            source: SqlError::NoRow,
        })?;
        Ok(Ok(stored))
    })
}

/// Drops the bytes of held bundles beyond `caps` (the rows stay, `evicted`).
fn evict(tx: &mut dyn Sql, caps: Caps) -> Result<(), DbError> {
    let held: Vec<(u64, String, u64)> = tx
        .query(
            "SELECT id, appliance_id, size FROM diagnostics WHERE content IS NOT NULL
             ORDER BY uploaded_at DESC, id DESC",
            &[],
        )
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok((
                        r.get::<i64>(0)?.max(0) as u64,
                        r.get(1)?,
                        r.get::<i64>(2)?.max(0) as u64,
                    ))
                })
                .collect()
        })
        .ctx("held diagnostics")?;
    let refs: Vec<(u64, &str, u64)> = held.iter().map(|(i, a, s)| (*i, a.as_str(), *s)).collect();
    for id in evictions(&refs, caps) {
        tx.execute(
            "UPDATE diagnostics SET content = NULL WHERE id = ?1",
            &args![id],
        )
        .ctx("evict diagnostics")?;
    }
    Ok(())
}

/// The bundle's bytes, if held.
pub fn content(conn: &mut Conn, id: u64) -> Result<Option<Vec<u8>>, DbError> {
    conn.auto(|c| {
        c.query_opt("SELECT content FROM diagnostics WHERE id = ?1", &args![id])
            .and_then(|r| r.map(|r| r.get::<Option<Vec<u8>>>(0)).transpose())
            .map(Option::flatten)
            .ctx("diagnostics content")
    })
}

/// A page of `appliance`'s requests, newest first, after the id `page.after`; `None` when
/// `after` is not one of its requests.
pub fn list(
    conn: &mut Conn,
    appliance: &str,
    after: Option<u64>,
    page: &PageQuery,
) -> Result<Option<Page<Row>>, DbError> {
    conn.read(|c| {
        if let Some(after) = after {
            if get_in(c, after)?.is_none_or(|r| r.appliance_id != appliance) {
                return Ok(None);
            }
        }
        let rows: Vec<Row> = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM diagnostics
                     WHERE appliance_id = ?1 AND (CAST(?2 AS BIGINT) IS NULL OR id < ?2)
                     ORDER BY id DESC LIMIT ?3"
                ),
                &args![appliance, after, page.fetch()],
            )
            .and_then(|rows| rows.iter().map(row).collect())
            .ctx("list diagnostics")?;
        Ok(Some(page.page(rows, |r| r.id.to_string())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Conn) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::open(&dir.path().join("c.db")).unwrap();
        for id in ["a", "b"] {
            conn.sqlite()
                .execute(
                    "INSERT INTO appliances (id, status, created_at) VALUES (?1, 'ready', 1)",
                    [id],
                )
                .unwrap();
        }
        (dir, conn)
    }

    fn upload(conn: &mut Conn, appliance: &str, size: usize, now: u64, caps: Caps) -> u64 {
        let Created::New(r) = create(conn, appliance, 1 << 20, now).unwrap() else {
            panic!("not new")
        };
        let bytes = vec![1u8; size];
        let up = Upload {
            id: r.id,
            device: appliance,
            bytes: &bytes,
            sha256: "x",
            now,
        };
        store(conn, &up, caps).unwrap().unwrap();
        r.id
    }

    /// The total cap drops the oldest bundles across the fleet; the rows stay, evicted.
    #[test]
    fn total_cap_evicts_the_oldest_across_appliances() {
        let (_dir, mut conn) = db();
        let caps = Caps {
            per_appliance: 10,
            total_bytes: 250,
        };
        let first = upload(&mut conn, "a", 100, 10, caps);
        let second = upload(&mut conn, "b", 100, 11, caps);
        let third = upload(&mut conn, "a", 100, 12, caps);
        assert!(content(&mut conn, first).unwrap().is_none());
        assert_eq!(content(&mut conn, second).unwrap().unwrap().len(), 100);
        assert_eq!(content(&mut conn, third).unwrap().unwrap().len(), 100);
        let r = get(&mut conn, first).unwrap().unwrap();
        assert_eq!(
            r.status(13),
            p6os_protocol::diagnostics::DiagnosticsStatus::Evicted
        );
        assert_eq!(r.size, Some(100));
    }

    /// Deleting an appliance deletes its requests and bundles.
    #[test]
    fn rows_go_with_their_appliance() {
        let (_dir, mut conn) = db();
        let id = upload(&mut conn, "a", 10, 10, crate::diagnostics::CAPS);
        conn.sqlite()
            .execute("DELETE FROM appliances WHERE id = 'a'", [])
            .unwrap();
        assert!(get(&mut conn, id).unwrap().is_none());
    }
}
