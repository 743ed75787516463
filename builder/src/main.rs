//! `p6os`: build, validate and inspect P6OS images.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use p6os_builder::{bundle, fetch::Cache, image, inspect, recipe};

/// Where `cargo xtask agent` puts the static agent.
const DEFAULT_AGENT: &str = "target/x86_64-unknown-linux-gnu/release-agent/p6os-agent";

#[derive(Parser)]
#[command(
    name = "p6os",
    version,
    about = "Build, validate and inspect P6OS appliance images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a file and report every problem at once (exit 1 when there is one).
    Validate { kind: FileKind, file: PathBuf },
    /// Print the JSON Schema of a file format.
    Schema { kind: SchemaKind },
    /// Build `<name>-<version>.img` and its manifest from a recipe.
    Build {
        recipe: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "target/images")]
        out: PathBuf,
        #[command(flatten)]
        inputs: BuildInputs,
    },
    /// Site configuration on images.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show an image's partitions, boot entries and slots.
    Inspect {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Make an ed25519 key pair for signing bundles: DIR/p6os.key (0600) and DIR/p6os.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a signed update bundle `<name>-<version>.p6b` from a recipe (or `bundle inspect FILE`).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Bundle {
        #[command(subcommand)]
        command: Option<BundleCommand>,
        #[arg(required = true)]
        recipe: Option<PathBuf>,
        /// Secret key file from `p6os keygen`.
        #[arg(long, required = true)]
        key: Option<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "target/bundles")]
        out: PathBuf,
        #[command(flatten)]
        inputs: BuildInputs,
    },
}

/// What building a slot needs besides the recipe (images and bundles alike).
#[derive(clap::Args)]
struct BuildInputs {
    /// The static p6os-agent binary (env P6OS_AGENT; default: where `cargo xtask agent` puts it).
    #[arg(long, env = "P6OS_AGENT", default_value = DEFAULT_AGENT)]
    agent: PathBuf,
    /// Download cache (env P6OS_CACHE; default ~/.cache/p6os). Never required.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Print only errors.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Show a bundle's manifest; with --key, verify its signature and every payload.
    Inspect {
        file: PathBuf,
        /// Public key file to verify against.
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check FILE (as the agent will) and write it to IMAGE's ESP as /p6os/unattended.yaml.
    Inject { image: PathBuf, file: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum FileKind {
    Recipe,
    Layer,
    Unattended,
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaKind {
    Recipe,
    Layer,
    Unattended,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { kind, file } => {
            let result = match kind {
                FileKind::Recipe => recipe::load(&file).map(|_| ()),
                FileKind::Layer => recipe::load_layer(&file).map(|_| ()),
                FileKind::Unattended => std::fs::read_to_string(&file)
                    .map_err(|e| {
                        p6os_builder::diag::Diagnostics::file_error(
                            &file,
                            format!("cannot read: {e}"),
                        )
                    })
                    .and_then(|text| p6os_config::unattended::load(&file, &text))
                    .map(|_| ()),
            };
            match result {
                Ok(()) => {
                    println!("{}: ok", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(diags) => {
                    eprintln!("{diags}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Schema { kind } => {
            let schema = match kind {
                SchemaKind::Recipe => recipe::recipe_schema(),
                SchemaKind::Layer => recipe::layer_schema(),
                SchemaKind::Unattended => p6os_config::unattended::schema(),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Build {
            recipe: file,
            out,
            inputs,
        } => {
            let recipe = match recipe::load(&file) {
                Ok(r) => r,
                Err(diags) => {
                    eprintln!("{diags}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let opts = build_options(out, &inputs);
            let built = image::build(&recipe, &opts)
                .with_context(|| format!("building {}", file.display()))?;
            println!("{}", built.image.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Inject { image, file },
        } => match p6os_builder::inject::inject(&image, &file) {
            Ok(()) => {
                println!(
                    "{}: wrote {} to {}",
                    file.display(),
                    p6os_builder::inject::ESP_CONFIG_PATH,
                    image.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(p6os_builder::inject::InjectError::Invalid(diags)) => {
                eprintln!("{diags}\nnothing was written to {}", image.display());
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        },
        Command::Keygen { out } => {
            let public = bundle::keygen(&out)?;
            println!(
                "key {}: {} (secret, keep it off devices) and {} (name it in the recipe's upgrades.trusted_keys)",
                public.id(),
                out.join(bundle::SECRET_FILE).display(),
                out.join(bundle::PUBLIC_FILE).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle {
            command: Some(BundleCommand::Inspect { file, key, json }),
            ..
        } => {
            let key = key.map(|k| bundle::read_public_key(&k)).transpose()?;
            let info = bundle::inspect(&file, key.as_ref())
                .with_context(|| format!("{} is not a valid bundle", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", info.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle {
            command: None,
            recipe,
            key,
            out,
            inputs,
        } => {
            let (Some(file), Some(key)) = (recipe, key) else {
                anyhow::bail!("p6os bundle needs RECIPE and --key KEY");
            };
            let key = bundle::read_secret_key(&key)?;
            let recipe = match recipe::load(&file) {
                Ok(r) => r,
                Err(diags) => {
                    eprintln!("{diags}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let opts = build_options(out, &inputs);
            let (path, manifest) = bundle::build(&recipe, &opts, &key)
                .with_context(|| format!("bundling {}", file.display()))?;
            if !inputs.quiet {
                eprintln!(
                    "p6os: bundle {} {} signed with key {}",
                    manifest.name, manifest.version, manifest.key_id
                );
            }
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { image, json } => {
            let info = inspect::inspect(&image)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", info.render());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn build_options(out: PathBuf, inputs: &BuildInputs) -> image::BuildOptions {
    let progress: Box<dyn Fn(&str)> = if inputs.quiet {
        Box::new(|_| {})
    } else {
        let start = std::time::Instant::now();
        Box::new(move |s| eprintln!("p6os: [{:5.1}s] {s}", start.elapsed().as_secs_f64()))
    };
    image::BuildOptions {
        out_dir: out,
        agent: inputs.agent.clone(),
        cache: inputs
            .cache
            .clone()
            .map(|root| Cache { root })
            .unwrap_or_else(Cache::default_location),
        progress,
    }
}
