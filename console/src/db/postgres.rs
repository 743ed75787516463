//! PostgreSQL (`--db postgres://...`): connecting, migrating, and the pool of connection
//! threads the requests' closures run on.
//!
//! The `postgres` crate's client is synchronous: it runs its own small runtime and blocks on
//! it, which must not happen on a thread of the console's async runtime. Each connection is
//! therefore owned by a plain OS thread of the pool for its whole life; [`Pool::run`] hands a
//! closure to whichever thread is free and awaits its answer. A thread whose connection broke
//! connects again before its next job.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::sql::{Pg, StatementCache};
use super::{Conn, Context, DbError, MIGRATIONS};

/// Advisory lock key held while migrating (two consoles starting at once take turns).
const MIGRATE_LOCK: i64 = 0x7036_6f73_6d69_6772; // "p6osmigr"

/// A connection and its prepared statements.
pub struct PgConn {
    pub client: postgres::Client,
    pub cache: StatementCache,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgConn")
    }
}

impl PgConn {
    pub fn sql(&mut self) -> Pg<'_, postgres::Client> {
        Pg {
            client: &mut self.client,
            cache: &mut self.cache,
        }
    }
}

/// `url` with its password replaced, for messages and logs.
pub fn redacted_url(url: &str) -> String {
    // postgres://user:password@host/db -> postgres://user:***@host/db
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// How to reach the server: the URL for the `postgres` crate and the TLS to use. Our own
/// parameters are taken out of the URL (the crate refuses what it does not know):
/// `sslrootcert=FILE` (the PEM CA the server's certificate must chain to; default: the public
/// web roots) and `sslmode=verify-full`/`verify-ca` (both mean `require` here: the
/// certificate and the host name are always checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca: Option<std::path::PathBuf>,
}

pub fn target(url: &str) -> Result<Target, DbError> {
    let bad = |why: String| DbError::Unavailable(format!("{}: {why}", redacted_url(url)));
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    let mut mode = "disable".to_string();
    let mut ca = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => ca = Some(std::path::PathBuf::from(v)),
            Some(("sslmode", v)) => mode = v.to_string(),
            _ => kept.push(pair),
        }
    }
    if mode == "disable" && ca.is_some() {
        return Err(bad("sslrootcert without sslmode=require".into()));
    }
    let tls = match mode.as_str() {
        "disable" => None,
        "require" | "verify-ca" | "verify-full" => Some(Tls { ca }),
        "prefer" | "allow" => {
            return Err(bad(format!(
                "sslmode={mode} falls back to plain text when the server offers no TLS: use \
                 sslmode=require (or disable, on a Unix socket or a trusted network)"
            )))
        }
        other => return Err(bad(format!("unknown sslmode {other:?}"))),
    };
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Target { url, tls })
}

fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(path) => {
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
                let _ = roots.add(cert.clone());
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Connects: in plain text, or over TLS with the server's certificate checked (see [`target`]).
pub fn connect(url: &str) -> Result<PgConn, DbError> {
    let t = target(url)?;
    let failed = |source: postgres::Error| DbError::Connect {
        url: redacted_url(url),
        source: source.into(),
    };
    let client = match &t.tls {
        None => postgres::Client::connect(&t.url, postgres::NoTls).map_err(failed)?,
        Some(tls) => {
            let config = client_config(tls)
                .map_err(|e| DbError::Unavailable(format!("{}: {e}", redacted_url(url))))?;
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(config);
            postgres::Client::connect(&t.url, connector).map_err(failed)?
        }
    };
    Ok(PgConn {
        client,
        cache: StatementCache::default(),
    })
}

/// Applies the migrations not applied yet, in one transaction under an advisory lock.
pub fn migrate(c: &mut PgConn, url: &str) -> Result<(), DbError> {
    let mut tx = c.client.transaction().ctx_pg("begin migration")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .ctx_pg("migration lock")?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS p6os_schema (version BIGINT NOT NULL)")
        .ctx_pg("schema table")?;
    let version: i64 = match tx
        .query_opt("SELECT version FROM p6os_schema", &[])
        .ctx_pg("read schema version")?
    {
        Some(r) => r.get(0),
        None => {
            tx.execute("INSERT INTO p6os_schema (version) VALUES (0)", &[])
                .ctx_pg("schema version")?;
            0
        }
    };
    if version > MIGRATIONS.len() as i64 {
        return Err(DbError::TooNew {
            path: redacted_url(url).into(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let number = i + 1;
        tx.batch_execute(m.postgres)
            .and_then(|()| {
                tx.execute("UPDATE p6os_schema SET version = $1", &[&(number as i64)])
                    .map(|_| ())
            })
            .map_err(|source| DbError::Migration {
                number,
                source: source.into(),
            })?;
    }
    tx.commit().ctx_pg("commit migration")
}

trait PgContext<T> {
    fn ctx_pg(self, what: &'static str) -> Result<T, DbError>;
}

impl<T> PgContext<T> for Result<T, postgres::Error> {
    fn ctx_pg(self, what: &'static str) -> Result<T, DbError> {
        self.map_err(super::sql::SqlError::from).ctx(what)
    }
}

type Job = Box<dyn FnOnce(Result<&mut Conn, &DbError>) + Send>;

/// Threads that each own one connection.
pub struct Pool {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Pool {
    /// Connects `size` threads to `url` (the first one migrates first). Fails when the
    /// database cannot be reached or migrated.
    pub fn open(url: &str, size: usize) -> Result<Pool, DbError> {
        // On a thread of its own: the caller may be inside the async runtime.
        let first = {
            let url = url.to_string();
            std::thread::spawn(move || {
                let mut c = connect(&url)?;
                migrate(&mut c, &url)?;
                Ok::<_, DbError>(c)
            })
            .join()
            .map_err(|_| DbError::Thread)??
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut first = Some(first);
        for n in 0..size.max(1) {
            let rx = Arc::clone(&rx);
            let url = url.to_string();
            let mine = first.take();
            std::thread::Builder::new()
                .name(format!("p6os-pg-{n}"))
                .spawn(move || worker(&url, mine, &rx))
                .map_err(|_| DbError::Thread)?;
        }
        Ok(Pool {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on a free connection thread.
    pub async fn run<T, E>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (answer, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let out = match conn {
                Ok(c) => f(c),
                Err(e) => Err(E::from(DbError::Unavailable(e.to_string()))),
            };
            let _ = answer.send(out);
        });
        self.jobs
            .lock()
            .map_err(|_| E::from(DbError::Thread))?
            .send(job)
            .map_err(|_| E::from(DbError::Thread))?;
        result.await.map_err(|_| E::from(DbError::Thread))?
    }
}

fn worker(url: &str, first: Option<PgConn>, jobs: &Mutex<mpsc::Receiver<Job>>) {
    let mut conn: Option<Conn> = first.map(|c| Conn::Postgres(Box::new(c)));
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let broken = matches!(&conn, Some(Conn::Postgres(c)) if c.client.is_closed());
        if conn.is_none() || broken {
            conn = None;
            match connect(url) {
                Ok(c) => conn = Some(Conn::Postgres(Box::new(c))),
                Err(e) => {
                    tracing::warn!(error = %crate::error::error_chain(&e), "database connection");
                    job(Err(&e));
                    continue;
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            job(Ok(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_tls_parameters_are_taken_out_of_the_url() {
        let t = target("postgres://u@db.example/c?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x").unwrap();
        assert_eq!(t.url, "postgres://u@db.example/c?application_name=x");
        assert_eq!(
            t.tls,
            Some(Tls {
                ca: Some("/etc/ca.pem".into())
            })
        );
        let t = target("postgres://u@localhost/c?host=/run/pg").unwrap();
        assert_eq!(
            (t.url.as_str(), t.tls),
            ("postgres://u@localhost/c?host=/run/pg", None)
        );
        for bad in [
            "postgres://u@h/c?sslmode=prefer",
            "postgres://u@h/c?sslmode=maybe",
            "postgres://u:pw@h/c?sslrootcert=/ca.pem",
        ] {
            let e = target(bad).unwrap_err().to_string();
            assert!(!e.contains(":pw@"), "{e}");
            assert!(e.contains("ssl"), "{e}");
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redacted_url("postgres://p6os:s3cret@db.example/console"),
            "postgres://p6os:***@db.example/console"
        );
        assert_eq!(
            redacted_url("postgresql://p6os@localhost/c?host=/run/pg"),
            "postgresql://p6os@localhost/c?host=/run/pg"
        );
    }
}
