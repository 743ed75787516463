//! `p6os-console`: the server (`serve`), its token files (`init`), and the operator client.
//! Exit status: 0 success, 1 the console refused or could not be reached, 2 usage.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use p6os_bundle::keys::PublicKey;
use p6os_console::cli::{Cli, Command, ServeArgs};
use p6os_console::client::{self, Client, Failure};
use p6os_console::{read_token, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let admin_file = cli.admin_token_file.clone();
    let remote = Remote {
        url: cli.url.clone(),
        admin_file: cli.admin_token_file.clone(),
        ca: cli.ca.clone(),
    };
    let result = match cli.command {
        Command::Serve(args) => serve(args, admin_file.as_deref()),
        Command::Init { dir, tls_names } => init(&dir, &tls_names),
        Command::MigrateDb { from, to } => migrate_db(&from, &to),
        Command::Appliances(c) => operator(&remote, |cl| client::appliances(cl, c)),
        Command::Bundles(c) => operator(&remote, |cl| client::bundles(cl, c)),
        Command::Desire(args) => operator(&remote, |cl| client::desire(cl, args)),
        Command::Rollouts(c) => operator(&remote, |cl| client::rollouts::rollouts(cl, c)),
        Command::Config(c) => operator(&remote, |cl| client::siteconfig::run(cl, c)),
        Command::Diagnostics(c) => operator(&remote, |cl| client::diagnostics(cl, c)),
        Command::Users(c) => operator(&remote, |cl| client::users::users(cl, c)),
        Command::Tokens(c) => operator(&remote, |cl| client::users::tokens(cl, c)),
        Command::Audit(c) => operator(&remote, |cl| client::users::audit(cl, c)),
        Command::Whoami { json } => operator(&remote, |cl| client::users::whoami(cl, json)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code, message)) => {
            eprintln!("p6os-console: {message}");
            ExitCode::from(code)
        }
    }
}

/// `migrate-db`: the copy, then what was copied.
fn migrate_db(
    from: &p6os_console::db::DbLocation,
    to: &p6os_console::db::DbLocation,
) -> Result<(), Exit> {
    use p6os_console::db;
    if from == to {
        return Err(Exit(2, "--from and --to name the same database".into()));
    }
    if let db::DbLocation::Sqlite(path) = from {
        if !path.is_file() {
            return Err(Exit(1, format!("no database {}", path.display())));
        }
    }
    let mut source = db::connect(from).with_context(|| format!("opening {from}"))?;
    let mut target = db::connect(to).with_context(|| format!("opening {to}"))?;
    let copied = db::copy::copy(&mut source, &mut target)
        .with_context(|| format!("copying {from} into {to}"))?;
    for (table, n) in copied {
        println!("{table}: {n} rows");
    }
    println!("copied {from} into {to}: start the consoles with --db on the new database");
    Ok(())
}

/// A failure: exit status and message.
struct Exit(u8, String);

impl From<anyhow::Error> for Exit {
    fn from(e: anyhow::Error) -> Exit {
        Exit(1, p6os_console::error::error_chain(e.as_ref()))
    }
}

/// Where the operator commands go.
struct Remote {
    url: String,
    admin_file: Option<std::path::PathBuf>,
    ca: Option<std::path::PathBuf>,
}

fn operator(remote: &Remote, run: impl FnOnce(&Client) -> Result<(), Failure>) -> Result<(), Exit> {
    let go = || -> Result<(), Failure> {
        let token = client::operator_token(remote.admin_file.as_deref())?;
        run(&Client::new(&remote.url, token, remote.ca.as_deref())?)
    };
    go().map_err(|f| Exit(f.exit_code(), f.to_string()))
}

fn init(dir: &std::path::Path, tls_names: &[String]) -> Result<(), Exit> {
    let files = if tls_names.is_empty() {
        p6os_console::init::init(dir)
    } else {
        p6os_console::init::init_with_tls(dir, tls_names)
    };
    let files = files.with_context(|| format!("cannot initialise {}", dir.display()))?;
    for f in files {
        let what = if f.created {
            "created"
        } else {
            "kept existing"
        };
        println!("{what} {}", f.path.display());
    }
    Ok(())
}

fn serve(args: ServeArgs, admin_file: Option<&std::path::Path>) -> Result<(), Exit> {
    p6os_console::init_logging();
    let usage = |m: String| Exit(2, m);
    let admin_token =
        read_token(admin_file, "P6OS_CONSOLE_ADMIN_TOKEN", "--admin-token-file").map_err(usage)?;
    let pairing_token = read_token(
        args.pairing_token_file.as_deref(),
        "P6OS_CONSOLE_PAIRING_TOKEN",
        "--pairing-token-file",
    )
    .map_err(usage)?;
    let mut trusted_keys = Vec::new();
    for path in &args.trusted_keys {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the trusted key {}", path.display()))?;
        let key = PublicKey::from_file(&text)
            .with_context(|| format!("{} is not a P6OS public key", path.display()))?;
        trusted_keys.push(key);
    }
    let file_limit = p6os_console::serve::raise_file_limit();
    let limits = args.limits(file_limit);
    let config = Config {
        db: args.db,
        bundles: args.bundles,
        admin_token,
        pairing_token,
        trusted_keys,
        heartbeat_secs: args.heartbeat_secs,
        pending_retry_secs: args.pending_retry_secs,
        max_pending: args.max_pending,
        pairing_rate: args.pairing_rate,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(p6os_console::tls::server_config(cert, key).map_err(anyhow::Error::from)?)
        }
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr().context("no local address")?;
        let app = p6os_console::app(config)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            max_connections = limits.max_connections,
            max_per_address = limits.max_per_address,
            client_timeout_secs = limits.client_timeout.as_secs(),
            open_files = ?file_limit,
            "connection limits"
        );
        println!("p6os-console: listening on {scheme}://{addr}");
        p6os_console::run(app, listener, tls, limits, shutdown_signal())
            .await
            .context("the console stopped")?;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot catch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
