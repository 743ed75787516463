//! The audit log: one row per operator action (and per login attempt), newest kept.

use p6os_protocol::users::{AuditEntry, Via};

use super::sql::{Row, SqlError};
use super::{Conn, Context, DbError};
use crate::args;
use crate::page::{Page, PageQuery};

/// Rows kept; older ones are dropped (every [`PRUNE_EVERY`] entries).
pub const MAX_ROWS: i64 = 1_000_000;
const PRUNE_EVERY: i64 = 1000;

/// An entry to record.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub at_ms: u64,
    pub actor: String,
    pub via: Option<Via>,
    pub source: String,
    pub action: String,
    pub target: String,
    pub status: u16,
}

pub fn via_str(via: Via) -> &'static str {
    match via {
        Via::BootstrapToken => "bootstrap_token",
        Via::Token => "token",
        Via::Session => "session",
    }
}

fn parse_via(s: &str) -> Option<Via> {
    match s {
        "bootstrap_token" => Some(Via::BootstrapToken),
        "token" => Some(Via::Token),
        "session" => Some(Via::Session),
        _ => None,
    }
}

pub fn record(conn: &mut Conn, e: &NewEntry) -> Result<(), DbError> {
    conn.auto(|c| {
        let seq: i64 = c
            .query_one(
                "INSERT INTO audit (at_ms, actor, via, source, action, target, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING seq",
                &args![
                    e.at_ms,
                    e.actor.as_str(),
                    e.via.map(via_str),
                    e.source.as_str(),
                    e.action.as_str(),
                    e.target.as_str(),
                    u32::from(e.status)
                ],
            )
            .and_then(|r| r.get(0))
            .ctx("record audit entry")?;
        if seq % PRUNE_EVERY == 0 {
            c.execute("DELETE FROM audit WHERE seq <= ?1", &args![seq - MAX_ROWS])
                .ctx("prune audit log")?;
        }
        Ok(())
    })
}

fn from_row(r: &Row) -> Result<AuditEntry, SqlError> {
    let via: Option<String> = r.get(3)?;
    Ok(AuditEntry {
        seq: r.get::<i64>(0)?.max(0) as u64,
        at_ms: r.get::<i64>(1)?.max(0) as u64,
        actor: r.get(2)?,
        via: via.as_deref().and_then(parse_via),
        source: r.get(4)?,
        action: r.get(5)?,
        target: r.get(6)?,
        status: r.get::<i64>(7)?.clamp(0, 999) as u16,
    })
}

/// Entries newest first, optionally of one actor.
pub fn list(
    conn: &mut Conn,
    actor: Option<&str>,
    page: &PageQuery,
) -> Result<Page<AuditEntry>, DbError> {
    let after = page.below().unwrap_or(0);
    conn.auto(|c| {
        let rows = c
            .query(
                "SELECT seq, at_ms, actor, via, source, action, target, status FROM audit
                 WHERE seq < ?1 AND (CAST(?2 AS TEXT) IS NULL OR actor = ?2) ORDER BY seq DESC LIMIT ?3",
                &args![after, actor, page.fetch()],
            )
            .ctx("list audit log")?;
        let entries = rows
            .iter()
            .map(from_row)
            .collect::<Result<Vec<_>, _>>()
            .ctx("read audit entry")?;
        Ok(page.page(entries, |e| e.seq.to_string()))
    })
}
