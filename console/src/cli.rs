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
    /// File holding the admin token (else the environment variable P6OS_CONSOLE_ADMIN_TOKEN).
    #[arg(long, global = true, value_name = "FILE")]
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
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    #[arg(long, default_value = "./p6os-console.db", value_name = "PATH")]
    pub db: PathBuf,
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
    /// Serve https with this PEM certificate chain (the server's certificate first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AppliancesCommand {
    /// Register an id (a pending device becomes unpaired and pairs at its next try).
    Register {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// k=v, repeatable.
        #[arg(long = "label", value_name = "K=V")]
        labels: Vec<String>,
    },
    /// List appliances.
    List {
        #[arg(long)]
        status: Option<String>,
        /// k=v, repeatable: every label must match.
        #[arg(long = "label", value_name = "K=V")]
        labels: Vec<String>,
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
    /// An appliance's events.
    Events { id: String },
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
