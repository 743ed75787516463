//! The fleet at a glance (the web console's overview): appliances counted by status, running
//! version and health, and those not heard from lately, within a label selector. Counted in
//! SQL: nothing but the counts leaves the database, whatever the fleet's size.

use std::collections::BTreeMap;

use super::appliances::selector_sql;
use super::sql::Arg;
use super::{Conn, Context, DbError};

/// Counts, each list largest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub total: u64,
    pub by_status: Vec<(String, u64)>,
    /// The reported (running) version; paired appliances that have not reported are `-`.
    pub by_version: Vec<(String, u64)>,
    pub by_health: Vec<(String, u64)>,
    /// Paired appliances not heard from since `silent_since` (or never).
    pub silent: u64,
}

/// Most distinct versions listed; the rest are summed as `other`.
pub const MAX_VERSIONS: usize = 20;

pub fn summary(
    conn: &mut Conn,
    selector: &BTreeMap<String, String>,
    silent_since: u64,
) -> Result<Summary, DbError> {
    let dialect = conn.dialect();
    let mut filter = String::from(" WHERE 1 = 1");
    let mut args: Vec<Arg> = Vec::new();
    selector_sql(dialect, selector, &mut filter, &mut args);
    let version = dialect.json_text("reported_json", "version");
    let health = dialect.json_text("reported_json", "health");
    let grouped = |expr: &str, extra: &str| {
        format!(
            "SELECT COALESCE({expr}, '-') AS k, COUNT(*) FROM appliances{filter}{extra}
             GROUP BY k ORDER BY COUNT(*) DESC, k"
        )
    };
    let ready = " AND status = 'ready'";
    conn.read(|c| {
        let mut counts = |sql: String| -> Result<Vec<(String, u64)>, DbError> {
            c.query(&sql, &args)
                .ctx("count appliances")?
                .iter()
                .map(|r| {
                    Ok((
                        r.get::<String>(0).ctx("count key")?,
                        r.get::<i64>(1).ctx("count")?.max(0) as u64,
                    ))
                })
                .collect()
        };
        let by_status = counts(grouped("status", ""))?;
        let mut by_version = counts(grouped(&version, ready))?;
        let by_health = counts(grouped(&health, ready))?;
        if by_version.len() > MAX_VERSIONS {
            let rest: u64 = by_version[MAX_VERSIONS..].iter().map(|(_, n)| n).sum();
            by_version.truncate(MAX_VERSIONS);
            by_version.push(("other".into(), rest));
        }
        let mut silent_args = args.clone();
        silent_args.push(Arg::from(silent_since));
        let silent = c
            .query_one(
                &format!(
                    "SELECT COUNT(*) FROM appliances{filter}{ready}
                     AND (last_seen IS NULL OR last_seen < ?{})",
                    silent_args.len()
                ),
                &silent_args,
            )
            .and_then(|r| r.get::<i64>(0))
            .ctx("count silent appliances")?
            .max(0) as u64;
        Ok(Summary {
            total: by_status.iter().map(|(_, n)| n).sum(),
            by_status,
            by_version,
            by_health,
            silent,
        })
    })
}

/// The newest `n` events of appliance `id`, newest first.
pub fn recent_events(
    conn: &mut Conn,
    id: &str,
    n: usize,
) -> Result<Vec<p6os_protocol::Event>, DbError> {
    conn.auto(|c| {
        c.query(
            "SELECT seq, at, kind, message FROM events WHERE appliance_id = ?1
             ORDER BY seq DESC LIMIT ?2",
            &crate::args![id, n],
        )
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok(p6os_protocol::Event {
                        seq: r.get(0)?,
                        at: r.get::<i64>(1)?.max(0) as u64,
                        kind: r.get(2)?,
                        message: r.get(3)?,
                    })
                })
                .collect()
        })
        .ctx("recent events")
    })
}
