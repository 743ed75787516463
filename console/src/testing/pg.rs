//! A throwaway PostgreSQL server for tests and benchmarks: Debian's `postgresql-15` binaries, a
//! cluster made by `initdb` in a temporary directory, listening only on a Unix socket in that
//! directory (no TCP port at all), with durability off (`fsync=off`: a test database dies
//! with the test). When the tests run as root the server runs as the `postgres` system user
//! the package made (PostgreSQL refuses to run as root).
//!
//! The server runs under a small `sh` that holds a pipe from this process: whenever this
//! process ends (normally, by a panic, or killed), the pipe closes and the shell stops the
//! server and removes the directory. Dropping a [`Cluster`] does the same at once.
//!
//! Where the package is absent, [`Cluster::start`] says so ([`Unavailable`]); with
//! `P6OS_TEST_DB_REQUIRED` set (as `cargo xtask test` sets it) callers must fail instead of
//! skipping: see [`required`].

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where Debian puts the server's programs (`P6OS_PG_BIN` overrides it).
pub const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Why no server could be started.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("no PostgreSQL server programs in {0} (install the Debian package postgresql-15)")]
    NotInstalled(PathBuf),
    #[error("cannot start a PostgreSQL server for the tests: {0}")]
    Failed(String),
}

/// How much the server writes to disk before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Nothing synced (`fsync=off`): a test's database dies with the test.
    Off,
    /// Commits answered before the WAL is flushed (`synchronous_commit=off`) but the WAL and
    /// checkpoints synced: what SQLite's WAL with `synchronous=NORMAL` promises (a crash of
    /// the machine may lose the last commits, never the database). For benchmarks.
    LikeSqliteNormal,
}

/// Whether the caller must not skip when PostgreSQL is missing (`P6OS_TEST_DB_REQUIRED` set).
pub fn required() -> bool {
    std::env::var_os("P6OS_TEST_DB_REQUIRED").is_some_and(|v| !v.is_empty())
}

/// For a test: `started` (a [`Cluster::start`] or [`Cluster::start_tls`] result) when it
/// worked; `None` after printing `SKIPPED` when PostgreSQL is unavailable and not
/// [`required`]; a panic when it is required.
pub fn or_skip(started: Result<Cluster, Unavailable>) -> Option<Cluster> {
    match started {
        Ok(c) => Some(c),
        Err(e) if !required() => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("{e} (P6OS_TEST_DB_REQUIRED is set)"),
    }
}

/// A running server on a Unix socket (and with [`Cluster::start_tls`] on a loopback port
/// with TLS); stopped and removed when dropped.
pub struct Cluster {
    dir: PathBuf,
    /// The loopback TLS port, and the CA (PEM) of the server's certificate.
    tls: Option<(u16, PathBuf)>,
    /// The shell that owns the server; its stdin is the lifeline.
    guard: Child,
    lifeline: Option<ChildStdin>,
    /// The superuser the cluster was made with (trust authentication on the socket only).
    pub user: String,
}

/// The system account to run the server as when this process is root: (uid, gid).
fn server_account() -> Result<Option<(u32, u32)>, Unavailable> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| Unavailable::Failed(format!("/etc/passwd: {e}")))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .map(Some)
        .ok_or_else(|| {
            Unavailable::Failed(
                "running as root and no `postgres` account (the postgresql-15 package makes it)"
                    .into(),
            )
        })
}

fn as_account(cmd: &mut Command, account: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = account {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl Cluster {
    /// Makes a cluster in a new temporary directory and starts its server; returns when it
    /// accepts connections.
    pub fn start() -> Result<Cluster, Unavailable> {
        Cluster::start_with(Durability::Off)
    }

    /// [`Cluster::start`] with the durability asked.
    pub fn start_with(durability: Durability) -> Result<Cluster, Unavailable> {
        Cluster::start_inner(durability, false)
    }

    /// Also listening on a free port of 127.0.0.1 with TLS only there (a certificate for
    /// 127.0.0.1 from a CA made for the test: [`Cluster::tls_url`]).
    pub fn start_tls() -> Result<Cluster, Unavailable> {
        Cluster::start_inner(Durability::Off, true)
    }

    fn start_inner(durability: Durability, tls: bool) -> Result<Cluster, Unavailable> {
        let bin = std::env::var_os("P6OS_PG_BIN")
            .map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from);
        if !bin.join("initdb").is_file() || !bin.join("postgres").is_file() {
            return Err(Unavailable::NotInstalled(bin));
        }
        let account = server_account()?;
        let failed =
            |what: &str, e: &dyn std::fmt::Display| Unavailable::Failed(format!("{what}: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("p6os-pg-")
            .tempdir()
            .map_err(|e| failed("temporary directory", &e))?
            .keep();
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| failed("chown", &e))?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| failed("chmod", &e))?;
        let user = "p6os".to_string();
        let out = as_account(&mut Command::new(bin.join("initdb")), account)
            .current_dir(&dir)
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                &user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| failed("initdb", &e))?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&dir);
            return Err(Unavailable::Failed(format!(
                "initdb: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // The lifeline: when stdin closes (this process ended, or `Drop`), stop the server
        // (fast shutdown) and remove everything.
        let mut flags = match durability {
            Durability::Off => "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            Durability::LikeSqliteNormal => "-c synchronous_commit=off",
        }
        .to_string();
        let mut tls_at = None;
        if tls {
            let (ca, chain, key) = crate::tls::make_certificates(&["127.0.0.1".to_string()])
                .map_err(|e| failed("test certificates", &e))?;
            let write = |name: &str, text: &str, mode: u32| -> Result<PathBuf, Unavailable> {
                let path = dir.join(name);
                fs::write(&path, text).map_err(|e| failed(name, &e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| failed(name, &e))?;
                if let Some((uid, gid)) = account {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                        .map_err(|e| failed(name, &e))?;
                }
                Ok(path)
            };
            let ca = write("ca.pem", &ca, 0o644)?;
            write("server.crt", &chain, 0o644)?;
            write("server.key", &key, 0o600)?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| failed("a free port", &e))?
                .port();
            flags.push_str(&format!(
                " -c listen_addresses=127.0.0.1 -p {port} -c ssl=on \
                 -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                dir.display()
            ));
            tls_at = Some((port, ca));
        } else {
            flags.push_str(" -c listen_addresses=");
        }
        let durability_flags = flags;
        let script = r#"
            "$1/postgres" -D "$2/data" -k "$2" $3 \
                -c max_connections=200 >"$2/log" 2>&1 &
            pid=$!
            read _ignored
            kill -INT "$pid" 2>/dev/null
            wait "$pid"
            rm -rf "$2"
        "#;
        let mut guard = as_account(&mut Command::new("sh"), account)
            .current_dir(&dir)
            .arg("-c")
            .arg(script)
            .arg("p6os-pg")
            .arg(&bin)
            .arg(&dir)
            .arg(durability_flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed("starting postgres", &e))?;
        let lifeline = guard.stdin.take();
        let cluster = Cluster {
            dir,
            tls: tls_at,
            guard,
            lifeline,
            user,
        };
        cluster.wait_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), Unavailable> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            match postgres::Client::connect(&self.url("postgres"), postgres::NoTls) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            // A server that stopped at start-up says why in its log: no need to wait.
            let log = fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            if log.contains("FATAL") || log.contains("database system is shut down") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        Err(Unavailable::Failed(format!(
            "the server did not accept connections within {timeout:?} ({last}); its log:\n{log}"
        )))
    }

    /// The directory holding the socket (and the cluster).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A connection URL for database `db` over the Unix socket.
    pub fn url(&self, db: &str) -> String {
        // The socket's name carries the port (`.s.PGSQL.<port>`).
        let port = self.tls.as_ref().map_or(5432, |(p, _)| *p);
        format!(
            "postgresql://{}@localhost:{port}/{db}?host={}",
            self.user,
            self.dir.display()
        )
    }

    /// A URL for database `db` over TLS on the loopback port, the certificate checked
    /// against the test CA (`sslmode=require&sslrootcert=...`); `None` without
    /// [`Cluster::start_tls`].
    pub fn tls_url(&self, db: &str) -> Option<String> {
        let (port, ca) = self.tls.as_ref()?;
        Some(format!(
            "postgresql://{}@127.0.0.1:{port}/{db}?sslmode=require&sslrootcert={}",
            self.user,
            ca.display()
        ))
    }

    /// Creates a new, empty database (C collation) and returns its URL. Names are unique in
    /// this process.
    pub fn create_database(&self) -> Result<String, postgres::Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)?;
        admin.batch_execute(&format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        ))?;
        Ok(self.url(&name))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut l) = self.lifeline.take() {
            let _ = l.write_all(b"stop\n");
        }
        let _ = self.guard.wait();
    }
}

/// The database a console test runs on: a SQLite file in `dir`, or with
/// `P6OS_TEST_DB=postgres` a new database on this process's one test cluster (started at
/// the first use, removed when the process ends).
pub fn test_db(dir: &Path) -> crate::db::DbLocation {
    if !on_postgres() {
        return crate::db::DbLocation::Sqlite(dir.join("console.db"));
    }
    static CLUSTER: std::sync::OnceLock<Cluster> = std::sync::OnceLock::new();
    let cluster = CLUSTER
        .get_or_init(|| Cluster::start().unwrap_or_else(|e| panic!("P6OS_TEST_DB=postgres: {e}")));
    let url = cluster
        .create_database()
        .unwrap_or_else(|e| panic!("P6OS_TEST_DB=postgres: a database for the test: {e}"));
    crate::db::DbLocation::Postgres(url)
}

/// A connection of its own to a test's database (either backend), for what a test sets up
/// or looks at outside the console's API: `probe(db).auto(|c| c.execute(...))`.
pub fn probe(db: &crate::db::DbLocation) -> crate::db::Conn {
    match db {
        crate::db::DbLocation::Sqlite(path) => {
            let c = rusqlite::Connection::open(path).expect("open the test database");
            c.busy_timeout(Duration::from_secs(5))
                .expect("busy timeout");
            crate::db::Conn::Sqlite(c)
        }
        crate::db::DbLocation::Postgres(url) => crate::db::Conn::Postgres(Box::new(
            crate::db::postgres::connect(url).expect("connect to the test database"),
        )),
    }
}

/// Whether the console tests run on PostgreSQL (`P6OS_TEST_DB=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("P6OS_TEST_DB").is_ok_and(|v| v == "postgres")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_reaches_the_database_over_tls_and_checks_its_certificate() {
        let Some(cluster) = or_skip(Cluster::start_tls()) else {
            return;
        };
        let url = cluster.tls_url("postgres").unwrap();
        let mut conn = crate::db::connect(&crate::db::DbLocation::Postgres(url.clone()))
            .unwrap_or_else(|e| panic!("{}", crate::error::error_chain(&e)));
        let ssl: bool = conn
            .auto(|c| {
                c.query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )?
                .get(0)
            })
            .unwrap();
        assert!(ssl, "the connection is not encrypted");
        // Another CA: the server's certificate is refused.
        let other = cluster.socket_dir().join("other-ca.pem");
        let (ca, _, _) = crate::tls::make_certificates(&["127.0.0.1".to_string()]).unwrap();
        fs::write(&other, ca).unwrap();
        let (port, _) = cluster.tls.clone().unwrap();
        let wrong = format!(
            "postgresql://p6os@127.0.0.1:{port}/postgres?sslmode=require&sslrootcert={}",
            other.display()
        );
        let e = crate::db::postgres::connect(&wrong).unwrap_err();
        let chain = crate::error::error_chain(&e);
        assert!(chain.contains("certificate"), "{chain}");
        // Plain text to the TLS port works only where the operator asked for it: the
        // console never downgrades `require`.
        let e = crate::db::postgres::target(&url.replace("sslmode=require", "sslmode=prefer"))
            .unwrap_err();
        assert!(e.to_string().contains("require"), "{e}");
    }

    #[test]
    fn a_cluster_serves_on_its_socket_and_is_removed_when_dropped() {
        let Some(cluster) = or_skip(Cluster::start()) else {
            return;
        };
        let dir = cluster.socket_dir().to_path_buf();
        let url = cluster.create_database().unwrap();
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let row = c
            .query_one("SELECT current_user::text, current_setting('fsync')", &[])
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "p6os");
        assert_eq!(row.get::<_, String>(1), "off");
        // A second database is another one.
        let other = cluster.create_database().unwrap();
        assert_ne!(url, other);
        // No TCP: the server listens on nothing but its socket.
        let row = c
            .query_one("SELECT current_setting('listen_addresses')", &[])
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "");
        drop(c);
        drop(cluster);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
