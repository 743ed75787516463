//! Site configurations (remote reconfiguration): the documents as uploaded (secrets
//! included: they leave the console only towards the devices they were set for) and, per
//! appliance, the history of what was set and what the device reported. Each public function
//! is one transaction.

use std::collections::BTreeMap;

use super::appliances::{add_event, selector_sql};
use super::sql::{Arg, Row, Sql, SqlError};
use super::{from_json, to_json, Conn, Context, DbError};
use crate::args;
use crate::page::{Page, PageQuery};
use p6os_protocol::siteconfig::{ConfigAssignment, ConfigOutcome, ConfigReport};

/// The schema migration of this part (appended to `MIGRATIONS`).
pub const MIGRATION: &str = "
    CREATE TABLE site_configs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        digest TEXT NOT NULL,
        -- the exact bytes, secrets included: sent only to the appliances it was set for.
        document BLOB NOT NULL,
        signature TEXT,
        serial INTEGER,
        -- the document as JSON with its secrets replaced: what operators are shown.
        redacted_json TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE appliance_configs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        appliance_id TEXT NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
        config_id INTEGER NOT NULL REFERENCES site_configs(id),
        set_at INTEGER NOT NULL,
        outcome TEXT CHECK (outcome IN ('applied', 'unchanged', 'refused')),
        reported_at INTEGER,
        problems_json TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX appliance_configs_by_appliance ON appliance_configs(appliance_id, seq);";

/// Configurations kept per appliance: setting one deletes the oldest beyond this many (and
/// the documents no appliance refers to any more).
pub const MAX_HISTORY: usize = 100;

/// A checked document, ready to store.
pub struct NewConfig<'a> {
    pub digest: &'a str,
    pub document: &'a [u8],
    pub signature: Option<&'a str>,
    pub serial: Option<u64>,
    pub redacted_json: &'a str,
}

/// Whom a configuration is for.
pub enum Target<'a> {
    Id(&'a str),
    Selector(&'a BTreeMap<String, String>),
}

/// Stores `config` and sets it for `target` (registered appliances only: never a pending id).
/// `None` when `target` is an id that is not registered; otherwise the configuration's number
/// and the ids it was set for (sorted; nothing is stored when none matched).
pub fn set(
    conn: &mut Conn,
    config: &NewConfig,
    target: &Target,
    now: u64,
) -> Result<Option<(u64, Vec<String>)>, DbError> {
    conn.write(|tx| set_in(tx, config, target, now))
}

fn set_in(
    tx: &mut dyn Sql,
    config: &NewConfig,
    target: &Target,
    now: u64,
) -> Result<Option<(u64, Vec<String>)>, DbError> {
    let mut sql = String::from("SELECT id FROM appliances WHERE status != 'pending'");
    let mut args: Vec<Arg> = Vec::new();
    match target {
        Target::Id(id) => {
            args.push((*id).into());
            sql.push_str(" AND id = ?1");
        }
        Target::Selector(selector) => selector_sql(tx.dialect(), selector, &mut sql, &mut args),
    }
    sql.push_str(" ORDER BY id");
    let ids: Vec<String> = tx
        .query(&sql, &args)
        .and_then(|rows| rows.iter().map(|r| r.get(0)).collect())
        .ctx("match config target")?;
    if ids.is_empty() {
        return Ok(match target {
            Target::Id(_) => None,
            Target::Selector(_) => Some((0, ids)),
        });
    }
    let number: i64 = tx
        .query_one(
            "INSERT INTO site_configs (digest, document, signature, serial, redacted_json,
                 created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            &args![
                config.digest,
                config.document,
                config.signature,
                config.serial,
                config.redacted_json,
                now
            ],
        )
        .and_then(|r| r.get(0))
        .ctx("store config")?;
    let number = number.max(0) as u64;
    let message = format!("site configuration {number} set ({})", config.digest);
    for id in &ids {
        tx.execute(
            "INSERT INTO appliance_configs (appliance_id, config_id, set_at) VALUES (?1, ?2, ?3)",
            &args![id, number, now],
        )
        .ctx("set config")?;
        tx.execute(
            "DELETE FROM appliance_configs WHERE appliance_id = ?1 AND seq <= (
                 SELECT seq FROM appliance_configs WHERE appliance_id = ?1
                 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            &args![id, MAX_HISTORY],
        )
        .ctx("cap config history")?;
        add_event(tx, id, now, "config-set", &message)?;
    }
    tx.execute(
        "DELETE FROM site_configs WHERE id NOT IN (SELECT config_id FROM appliance_configs)",
        &[],
    )
    .ctx("drop unused configs")?;
    Ok(Some((number, ids)))
}

const ASSIGNMENT: &str = "SELECT ac.seq, ac.config_id, sc.digest, sc.serial, ac.set_at, ac.outcome,
        ac.reported_at, ac.problems_json
    FROM appliance_configs ac JOIN site_configs sc ON sc.id = ac.config_id";

type RawAssignment = (ConfigAssignment, Option<String>, String);

fn raw(r: &Row) -> Result<RawAssignment, SqlError> {
    Ok((
        ConfigAssignment {
            seq: r.get::<i64>(0)? as u64,
            config: r.get::<i64>(1)? as u64,
            digest: r.get(2)?,
            serial: r.get::<Option<i64>>(3)?.map(|n| n as u64),
            set_at: r.get::<i64>(4)?.max(0) as u64,
            outcome: None,
            reported_at: r.get::<Option<i64>>(6)?.map(|n| n.max(0) as u64),
            problems: Vec::new(),
        },
        r.get(5)?,
        r.get(7)?,
    ))
}

fn finish((mut a, outcome, problems): RawAssignment) -> Result<ConfigAssignment, DbError> {
    a.outcome = match outcome.as_deref() {
        Some("applied") => Some(ConfigOutcome::Applied),
        Some("unchanged") => Some(ConfigOutcome::Unchanged),
        Some("refused") => Some(ConfigOutcome::Refused),
        _ => None,
    };
    a.problems = from_json(&problems, "config problems")?;
    Ok(a)
}

/// The configuration set last for `id`, if any.
pub fn current(c: &mut dyn Sql, id: &str) -> Result<Option<ConfigAssignment>, DbError> {
    c.query_opt(
        &format!("{ASSIGNMENT} WHERE ac.appliance_id = ?1 ORDER BY ac.seq DESC LIMIT 1"),
        &args![id],
    )
    .and_then(|r| r.map(|r| raw(&r)).transpose())
    .ctx("current config")?
    .map(finish)
    .transpose()
}

/// The current configuration of `id` and its redacted document.
pub fn show(
    c: &mut dyn Sql,
    id: &str,
) -> Result<Option<(ConfigAssignment, serde_json::Value)>, DbError> {
    let Some(current) = current(c, id)? else {
        return Ok(None);
    };
    let redacted: String = c
        .query_one(
            "SELECT redacted_json FROM site_configs WHERE id = ?1",
            &args![current.config],
        )
        .and_then(|r| r.get(0))
        .ctx("redacted config")?;
    Ok(Some((current, from_json(&redacted, "redacted config")?)))
}

/// A page of `id`'s history, newest first, below the seq `before` (`None`: from the newest).
pub fn history(
    c: &mut dyn Sql,
    id: &str,
    before: Option<u64>,
    page: &PageQuery,
) -> Result<Page<ConfigAssignment>, DbError> {
    let rows = c
        .query(
            &format!(
                "{ASSIGNMENT} WHERE ac.appliance_id = ?1 AND ac.seq < ?2
                 ORDER BY ac.seq DESC LIMIT ?3"
            ),
            &args![id, before.map_or(i64::MAX, |b| b as i64), page.fetch()],
        )
        .and_then(|rows| rows.iter().map(raw).collect::<Result<Vec<_>, _>>())
        .ctx("config history")?
        .into_iter()
        .map(finish)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.page(rows, |a| a.seq.to_string()))
}

/// A document's bytes and its signature.
pub type Stored = (Vec<u8>, Option<String>);

/// The document `config` for the device `id`: only when it is the one set last for `id`.
pub fn document_for(c: &mut dyn Sql, id: &str, config: u64) -> Result<Option<Stored>, DbError> {
    match current(c, id)? {
        Some(a) if a.config == config => {}
        _ => return Ok(None),
    }
    c.query_opt(
        "SELECT document, signature FROM site_configs WHERE id = ?1",
        &args![config],
    )
    .and_then(|r| r.map(|r| Ok((r.get(0)?, r.get(1)?))).transpose())
    .ctx("config document")
}

/// What a heartbeat's answer announces: the current configuration, while not reported on.
pub fn pending(c: &mut dyn Sql, id: &str) -> Result<Option<(u64, String, u64)>, DbError> {
    c.query_opt(
        "SELECT ac.config_id, sc.digest, CAST(length(sc.document) AS BIGINT)
         FROM appliance_configs ac JOIN site_configs sc ON sc.id = ac.config_id
         WHERE ac.appliance_id = ?1 AND ac.outcome IS NULL
           AND ac.seq = (SELECT max(seq) FROM appliance_configs WHERE appliance_id = ?1)",
        &args![id],
    )
    .and_then(|r| {
        r.map(|r| Ok((r.get::<i64>(0)? as u64, r.get(1)?, r.get::<i64>(2)? as u64)))
            .transpose()
    })
    .ctx("pending config")
}

pub enum Reported {
    Stored,
    /// Not the configuration set last for this appliance (a newer one was set since).
    NotCurrent,
}

/// Records the device's report on its current configuration (an event when the outcome is
/// new).
pub fn report(
    conn: &mut Conn,
    id: &str,
    report: &ConfigReport,
    now: u64,
) -> Result<Reported, DbError> {
    conn.write(|tx| report_in(tx, id, report, now))
}

fn report_in(
    tx: &mut dyn Sql,
    id: &str,
    report: &ConfigReport,
    now: u64,
) -> Result<Reported, DbError> {
    let current = match current(tx, id)? {
        Some(c) if c.config == report.config => c,
        _ => return Ok(Reported::NotCurrent),
    };
    tx.execute(
        "UPDATE appliance_configs SET outcome = ?2, reported_at = ?3, problems_json = ?4
         WHERE seq = ?1",
        &args![
            current.seq,
            report.outcome.as_str(),
            now,
            to_json(&report.problems)
        ],
    )
    .ctx("store config report")?;
    if current.outcome != Some(report.outcome) {
        let mut message = format!(
            "site configuration {} {}",
            report.config,
            report.outcome.as_str()
        );
        if let Some(first) = report.problems.first() {
            message.push_str(&format!(
                ": {first}{}",
                match report.problems.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            ));
        }
        add_event(tx, id, now, "config-report", &message)?;
    }
    Ok(Reported::Stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This part's migration on a database made by every migration before it: rows stay, and
    /// a configuration can be set, shown, reported and capped.
    #[test]
    fn migration_keeps_rows_and_history_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mine = super::super::MIGRATIONS
            .iter()
            .position(|m| *m == MIGRATION)
            .unwrap();
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &super::super::MIGRATIONS[..mine] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", mine as i64).unwrap();
            tx.execute(
                "INSERT INTO appliances (id, status, created_at) VALUES ('dev', 'unpaired', 1)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let mut conn = super::super::open(&path).unwrap();
        let new = |digest: &'static str| NewConfig {
            digest,
            document: b"hostname: a\n",
            signature: None,
            serial: None,
            redacted_json: "{\"hostname\":\"a\"}",
        };
        for i in 0..MAX_HISTORY + 5 {
            let (n, ids) = set(&mut conn, &new("sha256:d"), &Target::Id("dev"), i as u64)
                .unwrap()
                .unwrap();
            assert_eq!(ids, ["dev"]);
            assert_eq!(n, i as u64 + 1);
        }
        let page = PageQuery {
            limit: 500,
            after: None,
        };
        let (all, next) = conn.auto(|c| history(c, "dev", None, &page)).unwrap();
        assert_eq!((all.len(), next), (MAX_HISTORY, None));
        let documents: i64 = conn
            .sqlite()
            .query_row("SELECT count(*) FROM site_configs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            documents, MAX_HISTORY as i64,
            "unused documents are dropped"
        );
        assert!(set(&mut conn, &new("sha256:e"), &Target::Id("nobody"), 1)
            .unwrap()
            .is_none());
    }
}
