//! Command line: `serve`, `init`, and the operator commands (an HTTP client of the API).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "p6os-console",
    version,
    about = "P6OS console: the server appliances pair and report to, and its operator client"
)]
pub struct Cli {
    /// The console, for the operator commands.
    #[arg(
        long,
        global = true,
        env = "P6OS_CONSOLE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// File holding the token: for the operator commands a personal token (`tokens create`)
    /// or the console's admin token (else P6OS_CONSOLE_TOKEN, then P6OS_CONSOLE_ADMIN_TOKEN);
    /// for `serve`, the admin token (the bootstrap admin's).
    #[arg(long, global = true, value_name = "FILE", visible_alias = "token-file")]
    pub admin_token_file: Option<PathBuf>,
    /// PEM CA certificate to trust for an https console (instead of Mozilla's roots), e.g. the
    /// `ca.pem` made by `init --tls-name`.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Copy a fleet's whole state into an empty database (SQLite to PostgreSQL, or back),
    /// keeping every id, token and event; stop the consoles on FROM first. Bundle files stay
    /// in the bundles directory.
    MigrateDb {
        /// The database to copy: a file, or postgres://...
        #[arg(long, value_name = "PATH|URL", value_parser = |s: &str| Ok::<_, std::convert::Infallible>(crate::db::DbLocation::parse(s)))]
        from: crate::db::DbLocation,
        /// The new, empty database: postgres://... (or a file)
        #[arg(long, value_name = "URL|PATH", value_parser = |s: &str| Ok::<_, std::convert::Infallible>(crate::db::DbLocation::parse(s)))]
        to: crate::db::DbLocation,
    },
    /// Create DIR/admin.token and DIR/pairing.token (random, mode 0600; never overwritten);
    /// with --tls-name, also a private CA (DIR/ca.pem) and a certificate for those names
    /// (DIR/tls.crt, DIR/tls.key) for `serve --tls-cert --tls-key`.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A DNS name or IP address devices use to reach the console; repeatable.
        #[arg(long = "tls-name", value_name = "NAME")]
        tls_names: Vec<String>,
    },
    /// Register, list, show and delete appliances; their events.
    #[command(subcommand)]
    Appliances(AppliancesCommand),
    /// Upload and list update bundles.
    #[command(subcommand)]
    Bundles(BundlesCommand),
    /// Set or clear the version appliances should run.
    Desire(DesireArgs),
    /// Ask an appliance for a diagnostics bundle, list the requests, download a bundle.
    #[command(subcommand)]
    Diagnostics(DiagnosticsCommand),
    /// Staged rollouts: a version to the appliances a selector matches, in waves.
    #[command(subcommand)]
    Rollouts(crate::client::rollouts::RolloutsCommand),
    /// Set site configurations (unattended.yaml) remotely; show them (secrets redacted) and
    /// their history.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Operator accounts (admins): roles, scopes, passwords, lock-outs.
    #[command(subcommand)]
    Users(crate::client::users::UsersCommand),
    /// Personal API tokens for the CLI and scripts.
    #[command(subcommand)]
    Tokens(crate::client::users::TokensCommand),
    /// The audit log of operator actions and logins (admins).
    #[command(subcommand)]
    Audit(crate::client::users::AuditCommand),
    /// Who the token belongs to: user, role, scope.
    Whoami {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check FILE (every problem with line:column) and set it for one appliance or a
    /// selector; FILE.sig (from `p6os config sign`) goes along when it exists.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "selector"])))]
    Set {
        file: PathBuf,
        /// The signature file (default: FILE.sig when it exists).
        #[arg(long, value_name = "FILE")]
        signature: Option<PathBuf>,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, value_name = "K=V[,K=V]")]
        selector: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The configuration set last for an appliance, its report, the document (secrets
    /// redacted).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// An appliance's configurations and reports, newest first (every page, or the first N).
    History {
        id: String,
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    #[arg(long, default_value = "./p6os-console.db", value_name = "PATH|URL", env = "P6OS_CONSOLE_DB", value_parser = |s: &str| Ok::<_, std::convert::Infallible>(crate::db::DbLocation::parse(s)))]
    pub db: crate::db::DbLocation,
    #[arg(long, default_value = "./p6os-bundles", value_name = "DIR")]
    pub bundles: PathBuf,
    /// File holding the fleet's pairing token (else P6OS_CONSOLE_PAIRING_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub pairing_token_file: Option<PathBuf>,
    /// A public key file (`p6os keygen`) whose bundles may be uploaded; repeatable.
    #[arg(long = "trusted-key", value_name = "PUBFILE")]
    pub trusted_keys: Vec<PathBuf>,
    /// Heartbeat interval given to devices.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub heartbeat_secs: u32,
    /// How soon a pending device asks again.
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub pending_retry_secs: u32,
    /// Most ids kept as pending (devices that asked to pair with an id no operator
    /// registered); past it, pending ids older than a day are dropped, and new ones are
    /// answered like any pending id but not stored (a warning once a minute) until an
    /// operator registers or deletes some.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_pending: usize,
    /// Pairing requests a second from one source address (one IPv6 /64), after a burst of six
    /// seconds' worth. Behind a load balancer every device shares its address: raise it.
    #[arg(long, default_value_t = crate::limit::DEFAULT_PAIRING_RATE, value_name = "N")]
    pub pairing_rate: u32,
    /// Serve https with this PEM certificate chain (the server's certificate first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Most connections served at once; more wait in the kernel's queue. Default: what the
    /// open files limit allows (two files per connection after 64), at most 4096.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Most connections from one address (an IPv6 /64 counts as one); more are closed at
    /// once. Default: a quarter of --max-connections.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_address: Option<u32>,
    /// How long a client may stay silent: during the TLS handshake, before or while sending
    /// a request's headers (an idle kept-alive connection too), and between two pieces of a
    /// request body. Then its connection is closed.
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub client_timeout_secs: u64,
}

impl ServeArgs {
    /// The connection limits: the flags, else the defaults for `file_limit`.
    pub fn limits(&self, file_limit: Option<u64>) -> crate::serve::Limits {
        use crate::serve::Limits;
        let mut limits = Limits::for_file_limit(file_limit);
        if let Some(n) = self.max_connections {
            limits.max_connections = n as usize;
            limits.max_per_address = Limits::per_address_for(n as usize);
        }
        if let Some(n) = self.max_connections_per_address {
            limits.max_per_address = n as usize;
        }
        limits.client_timeout = std::time::Duration::from_secs(self.client_timeout_secs);
        limits
    }
}

#[derive(Debug, Subcommand)]
pub enum AppliancesCommand {
    /// Register an id. With --fingerprint only that device key pairs as this id; otherwise
    /// the key of the device that asks waits for `approve` (or, with --pairing first-key, the
    /// first key that asks is bound).
    Register {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// k=v, repeatable.
        #[arg(long = "label", value_name = "K=V")]
        labels: Vec<String>,
        /// The device key's fingerprint (SHA256:...), as `p6os-agent status` shows it.
        #[arg(long, value_name = "SHA256:...")]
        fingerprint: Option<String>,
        /// Who decides the key when no fingerprint is given: `approve` (an operator) or
        /// `first-key` (the first device that asks; for labs and CI).
        #[arg(long, default_value = "approve", value_parser = ["approve", "first-key"])]
        pairing: String,
    },
    /// Bind an id to the device key with this fingerprint: a pending device or one waiting
    /// for approval pairs at its next try; a paired id moves to the new key (a replaced
    /// device) and the old device's token stops working.
    Approve {
        id: String,
        #[arg(long, value_name = "SHA256:...")]
        fingerprint: String,
    },
    /// Set the image whose bundles an appliance gets (recorded at pairing).
    SetImage {
        id: String,
        #[arg(long = "image")]
        image_name: String,
        #[arg(long)]
        arch: String,
    },
    /// List appliances.
    List {
        #[arg(long)]
        status: Option<String>,
        /// k=v, repeatable: every label must match.
        #[arg(long = "label", value_name = "K=V")]
        labels: Vec<String>,
        /// Only the first N (by id); without it, every page is fetched.
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Show one appliance: facts, reported state, desired version.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Forget an appliance (its token stops working).
    Delete { id: String },
    /// An appliance's events, oldest first (the console keeps the newest 1,000).
    Events {
        id: String,
        /// Only the first (oldest) N; without it, every page is fetched.
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundlesCommand {
    /// Upload signed .p6b files.
    Add {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the bundles the console holds.
    List {
        /// Only the first N; without it, every page is fetched.
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DiagnosticsCommand {
    /// Ask an appliance for a diagnostics bundle: it is passed on in the answer to the
    /// device's next heartbeat, and the device uploads it (one request at a time: an
    /// outstanding one is shown instead).
    Request {
        id: String,
        /// Largest bundle, bytes (64 KiB to 8 MiB; default 8 MiB).
        #[arg(long, value_name = "N")]
        max_bytes: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// An appliance's requests, newest first.
    List {
        id: String,
        /// Only the first (newest) N; without it, every page is fetched.
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Download the bundle of request N to FILE (a .tar.zst), checked against the sha256 the
    /// console recorded; nothing is written when it differs.
    Get {
        n: u64,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["version", "clear"])))]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "selector"])))]
pub struct DesireArgs {
    /// The version to run.
    #[arg(long)]
    pub version: Option<String>,
    /// Clear the desired version (stay on what runs).
    #[arg(long)]
    pub clear: bool,
    /// Let the devices install VERSION even when it is older than what they run (recorded in
    /// their event logs). Never below a device's security floor.
    #[arg(long, conflicts_with = "clear")]
    pub allow_downgrade: bool,
    /// One appliance.
    #[arg(long)]
    pub id: Option<String>,
    /// Every appliance whose labels include these: k=v[,k=v].
    #[arg(long, value_name = "K=V[,K=V]")]
    pub selector: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_limits_come_from_the_flags_or_the_file_limit() {
        let serve =
            |args: &[&str]| match Cli::try_parse_from(["p6os-console", "serve"].iter().chain(args))
            {
                Ok(Cli {
                    command: Command::Serve(s),
                    ..
                }) => Ok(s),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e),
            };
        let l = serve(&[]).unwrap().limits(Some(1024));
        assert_eq!((l.max_connections, l.max_per_address), (480, 32));
        assert_eq!(l.client_timeout.as_secs(), 20);
        let l = serve(&["--max-connections", "100", "--client-timeout-secs", "3"])
            .unwrap()
            .limits(Some(1024));
        assert_eq!((l.max_connections, l.max_per_address), (100, 25));
        assert_eq!(l.client_timeout.as_secs(), 3);
        let l = serve(&["--max-connections", "40"]).unwrap().limits(None);
        assert_eq!((l.max_connections, l.max_per_address), (40, 10));
        // A quarter of a large cap is more than one site needs: at most 32 per address.
        let l = serve(&["--max-connections", "4000"]).unwrap().limits(None);
        assert_eq!((l.max_connections, l.max_per_address), (4000, 32));
        let l = serve(&["--max-connections-per-address", "7"])
            .unwrap()
            .limits(None);
        assert_eq!((l.max_connections, l.max_per_address), (4096, 7));
        assert!(serve(&["--max-connections", "0"]).is_err());
        assert!(serve(&["--client-timeout-secs", "0"]).is_err());
    }

    #[test]
    fn desire_needs_what_and_which() {
        assert!(Cli::try_parse_from(["p6os-console", "desire", "--version", "1"]).is_err());
        assert!(Cli::try_parse_from(["p6os-console", "desire", "--id", "a"]).is_err());
        assert!(Cli::try_parse_from([
            "p6os-console",
            "desire",
            "--clear",
            "--version",
            "1",
            "--id",
            "a"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["p6os-console", "desire", "--clear", "--selector", "a=b"]).is_ok()
        );
    }
}
