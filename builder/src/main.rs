//! `p6os`: build, validate and inspect P6OS images.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use p6os_builder::flash::check::Confirm;
use p6os_builder::flash::target::Force;
use p6os_builder::outputs::OutputFormat;
use p6os_builder::progress::{self, ProgressMode};
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
    /// Set up a site's unattended.yaml on screens, without writing YAML: opens FILE (default
    /// unattended.yaml; a new document when it does not exist), checks every setting as it is
    /// typed, saves FILE (0600: it holds secrets).
    Site {
        file: Option<PathBuf>,
        /// After leaving, also write the saved document into this image's ESP (as `config inject`).
        #[arg(long, value_name = "IMAGE")]
        inject: Option<PathBuf>,
        /// After leaving, flash IMAGE (see --image) onto this disk with the saved document on
        /// its ESP (as `flash --config`, with its checks and confirmation).
        #[arg(long, value_name = "DISK", requires = "image")]
        flash: Option<PathBuf>,
        /// The image for --flash.
        #[arg(long, value_name = "IMAGE")]
        image: Option<PathBuf>,
        /// After leaving, make this USB stick a configuration drive with the saved document
        /// (as `config drive`, with its checks and confirmation).
        #[arg(long, value_name = "STICK")]
        drive: Option<PathBuf>,
    },
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
        /// Output formats, comma-separated: raw, zst, qcow2, bmap (default: all).
        #[arg(long, value_delimiter = ',', default_value = "raw,zst,qcow2,bmap")]
        format: Vec<OutputFormat>,
    },
    /// Resolve a recipe's packages and downloads into `<recipe>.lock` (like Cargo.lock).
    Lock {
        recipe: PathBuf,
        /// Resolve afresh from the archive even when a lock exists, and rewrite it.
        #[arg(long)]
        update: bool,
        #[command(flatten)]
        inputs: FetchInputs,
    },
    /// The download and layer cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
        /// Cache directory (env P6OS_CACHE; default ~/.cache/p6os).
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
    },
    /// Write an image (.img or .img.zst) to a disk or a file: mapped ranges only, verified.
    Flash {
        image: PathBuf,
        /// A whole block device (/dev/sdX, /dev/disk/by-id/...) or a regular file.
        target: PathBuf,
        /// A site unattended.yaml to check and write to the target's ESP afterwards.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The block map (default: `<name>.bmap` beside the image, if there).
        #[arg(long)]
        bmap: Option<PathBuf>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Also write to a disk that is not removable (a fixed disk).
        #[arg(long)]
        force: bool,
        /// Progress as JSON lines on stderr (for CI).
        #[arg(long)]
        json_progress: bool,
        /// Print only errors.
        #[arg(long, short, conflicts_with = "json_progress")]
        quiet: bool,
    },
    /// List candidate disks for `p6os flash` (removable or USB): model, size, transport.
    Devices {
        /// Every whole disk, fixed ones too.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
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
    /// Make an ed25519 key pair for signing bundles or configuration: DIR/p6os.key (0600) and
    /// DIR/p6os.pub; with --secure-boot, the Secure Boot keys PK, KEK and db.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// Make Secure Boot keys instead: PK, KEK and db (RSA-2048, PKCS#8 `.key` 0600 and
        /// self-signed `.crt`); db signs the boot loader and kernels, the certificates are what a
        /// machine enrolls (docs/verified-boot.md). Name the directory in the recipe's
        /// `boot.secure_boot.keys`.
        #[arg(long)]
        secure_boot: bool,
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
    #[command(flatten)]
    fetch: FetchInputs,
}

/// What resolving layers needs (`p6os lock`: no agent).
#[derive(Args)]
struct FetchInputs {
    /// Download cache (env P6OS_CACHE; default ~/.cache/p6os). Never required.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// A local copy of a layer's `file` source, by its name (checked against its sha256);
    /// repeatable. For artifacts that cannot be downloaded here.
    #[arg(long = "layer-source", value_name = "NAME=PATH", value_parser = parse_layer_source)]
    layer_sources: Vec<(String, PathBuf)>,
    /// Print only errors.
    #[arg(long, short, conflicts_with = "json_progress")]
    quiet: bool,
    /// Progress as JSON lines on stderr (for CI).
    #[arg(long)]
    json_progress: bool,
}

fn parse_layer_source(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=PATH"))?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!("`{}` is not a file", path.display()));
    }
    Ok((name.to_string(), path))
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
enum CacheCommand {
    /// List cache entries: kind, size, last use.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove entries not used for DAYS days (default 30); --all empties the cache.
    Gc {
        #[arg(long, default_value_t = 30, conflicts_with = "all")]
        older_than_days: u64,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check FILE (as the agent will) and write it to IMAGE's ESP as /p6os/unattended.yaml
    /// (with FILE.sig as /p6os/unattended.yaml.sig when it exists).
    Inject { image: PathBuf, file: PathBuf },
    /// Check FILE and make TARGET (a USB stick, or an image file) a configuration drive: one
    /// FAT32 filesystem labelled P6OS-CONFIG over all of it, holding FILE as /unattended.yaml
    /// (and FILE.sig as /unattended.yaml.sig when it exists). Everything on TARGET is lost.
    Drive {
        /// A whole disk (/dev/sdX, /dev/disk/by-id/...) or an existing regular file (one under
        /// 64 MiB is made 64 MiB).
        target: PathBuf,
        file: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Also write to a disk that is not removable (a fixed disk).
        #[arg(long)]
        force: bool,
    },
    /// Check FILE and sign its exact bytes: FILE.sig, which a provisioned device needs beside
    /// the document (on the drive or the ESP) to accept it.
    Sign {
        file: PathBuf,
        /// Secret key file from `p6os keygen`; the image names its public key in
        /// `upgrades.config_keys`.
        #[arg(long)]
        key: PathBuf,
        /// Higher than the serial of every document signed before for these devices: a device
        /// refuses a serial at or below the one it applied (no replay of old documents).
        #[arg(long)]
        serial: u64,
        /// Where to write the signature (default: FILE.sig).
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
            eprintln!("error: {}", p6os_config::diag::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Site {
            file,
            inject,
            flash: flash_target,
            image,
            drive,
        } => {
            use std::io::IsTerminal;
            let file = file.unwrap_or_else(|| PathBuf::from("unattended.yaml"));
            if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
                anyhow::bail!(
                    "p6os site needs a terminal; in scripts, check a file with `p6os validate unattended` and write it with `p6os config inject`"
                );
            }
            let mut also: Vec<String> = Vec::new();
            if let Some(i) = &inject {
                also.push(format!("into {}", i.display()));
            }
            if let Some(t) = &flash_target {
                also.push(format!("onto {} with the image", t.display()));
            }
            if let Some(d) = &drive {
                also.push(format!("onto the stick {}", d.display()));
            }
            let also = (!also.is_empty()).then(|| also.join(" and "));
            let session = p6os_builder::site::run(&file, also)?;
            let Some(saved) = session.saved else {
                println!("nothing saved");
                return Ok(ExitCode::SUCCESS);
            };
            println!("saved {}", saved.display());
            if let Some(image) = inject {
                match p6os_builder::inject::inject(&image, &saved) {
                    Ok(()) => println!(
                        "wrote {} into {}",
                        p6os_builder::inject::ESP_CONFIG_PATH,
                        image.display()
                    ),
                    Err(e) => {
                        eprintln!("error: {}", p6os_builder::diag::error_chain(&e));
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            if let Some(stick) = drive {
                let report =
                    p6os_builder::configdrive::from_file(&stick, &saved, Confirm::Ask, Force::No)
                        .with_context(|| {
                        format!("writing a configuration drive to {}", stick.display())
                    })?;
                match report {
                    Some(report) => println!("{}: {report}", stick.display()),
                    None => return Ok(ExitCode::FAILURE),
                }
            }
            if let (Some(target), Some(image)) = (flash_target, image) {
                return flash(FlashArgs {
                    image,
                    target,
                    config: Some(saved),
                    bmap: None,
                    confirm: Confirm::Ask,
                    force: Force::No,
                    mode: ProgressMode::Human,
                });
            }
            Ok(ExitCode::SUCCESS)
        }
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
            format,
        } => {
            let recipe = match recipe::load(&file) {
                Ok(r) => r,
                Err(diags) => {
                    eprintln!("{diags}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let mut opts = build_options(out, &inputs);
            opts.formats = format;
            let built = image::build(&recipe, &opts)
                .with_context(|| format!("building {}", file.display()))?;
            println!("{}", built.image.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Lock {
            recipe: file,
            update,
            inputs,
        } => {
            let recipe = match recipe::load(&file) {
                Ok(r) => r,
                Err(diags) => {
                    eprintln!("{diags}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            // No image, no agent: only the layers are resolved.
            let mut opts = fetch_options(PathBuf::new(), &inputs, PathBuf::new());
            opts.lock = if update {
                image::LockPolicy::Update
            } else {
                image::LockPolicy::Respect
            };
            let path = p6os_builder::lock::path_for(&file);
            let existed = path.exists();
            let new_lock = image::resolve_lock(&recipe, &opts)
                .with_context(|| format!("resolving {}", file.display()))?;
            image::save_lock(&recipe, new_lock.as_ref(), &|s| opts.progress.say(s));
            println!(
                "{}: {}",
                path.display(),
                match (existed, update) {
                    (true, false) =>
                        "up to date (every locked package and artifact is still there)",
                    (true, true) => "updated",
                    (false, _) => "written",
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Flash {
            image,
            target,
            config,
            bmap,
            yes,
            force,
            json_progress,
            quiet,
        } => flash(FlashArgs {
            image,
            target,
            config,
            bmap,
            confirm: if yes { Confirm::Yes } else { Confirm::Ask },
            force: if force { Force::Yes } else { Force::No },
            mode: if quiet {
                ProgressMode::Quiet
            } else if json_progress {
                ProgressMode::Json
            } else {
                ProgressMode::Human
            },
        }),
        Command::Devices { all, json } => {
            let devices = p6os_builder::flash::target::list_devices(all)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else if devices.is_empty() {
                println!(
                    "no removable disks found{}",
                    if all {
                        ""
                    } else {
                        " (--all lists fixed ones too)"
                    }
                );
            } else {
                for d in &devices {
                    println!("{}", p6os_builder::flash::target::describe(d));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { command, dir } => {
            let cache = dir
                .map(|root| Cache { root })
                .unwrap_or_else(Cache::default_location);
            match command {
                CacheCommand::Ls { json } => {
                    let entries = p6os_builder::cache::list(&cache)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&entries)?);
                    } else {
                        print!("{}", p6os_builder::cache::render(&cache, &entries));
                    }
                }
                CacheCommand::Gc {
                    older_than_days,
                    all,
                } => {
                    let age = if all {
                        std::time::Duration::ZERO
                    } else {
                        std::time::Duration::from_secs(older_than_days * 86_400)
                    };
                    let (n, bytes) = p6os_builder::cache::gc(&cache, age)?;
                    println!(
                        "removed {n} entries ({} MiB) from {}",
                        bytes >> 20,
                        cache.root.display()
                    );
                }
            }
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
        Command::Config {
            command:
                ConfigCommand::Drive {
                    target,
                    file,
                    yes,
                    force,
                },
        } => {
            let confirm = if yes { Confirm::Yes } else { Confirm::Ask };
            let force = if force { Force::Yes } else { Force::No };
            let report = p6os_builder::configdrive::from_file(&target, &file, confirm, force)
                .with_context(|| {
                    format!("writing a configuration drive to {}", target.display())
                })?;
            let Some(report) = report else {
                return Ok(ExitCode::FAILURE);
            };
            println!("{}: {report}", target.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command:
                ConfigCommand::Sign {
                    file,
                    key,
                    serial,
                    out,
                },
        } => {
            let secret = bundle::read_secret_key(&key)?;
            match p6os_builder::inject::sign(&file, &secret, serial) {
                Ok(text) => {
                    let out = out.unwrap_or_else(|| p6os_builder::inject::signature_path(&file));
                    std::fs::write(&out, text)
                        .with_context(|| format!("cannot write {}", out.display()))?;
                    println!(
                        "{}: signed with configuration key {}, serial {serial}: {}",
                        file.display(),
                        secret.id(),
                        out.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(p6os_builder::inject::InjectError::Invalid(diags)) => {
                    eprintln!("{diags}\nnothing was signed");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Keygen {
            out,
            secure_boot: true,
        } => {
            p6os_builder::secureboot::generate(&out, "made by p6os keygen")?;
            for k in p6os_builder::secureboot::KEYS {
                println!(
                    "{k}: {} (secret, keep it off devices) and {}",
                    out.join(format!("{k}.key")).display(),
                    out.join(format!("{k}.crt")).display()
                );
            }
            println!(
                "name {} in the recipe's boot.secure_boot.keys",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen {
            out,
            secure_boot: false,
        } => {
            let public = bundle::keygen(&out)?;
            println!(
                "key {}: {} (secret, keep it off devices) and {} (name it in the recipe's upgrades.trusted_keys, or upgrades.config_keys for `p6os config sign`)",
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
            if !inputs.fetch.quiet {
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

struct FlashArgs {
    image: PathBuf,
    target: PathBuf,
    config: Option<PathBuf>,
    bmap: Option<PathBuf>,
    confirm: Confirm,
    force: Force,
    mode: ProgressMode,
}

/// `p6os flash`: every refusal at once, the confirmation, then the write.
fn flash(a: FlashArgs) -> anyhow::Result<ExitCode> {
    use p6os_builder::flash::{self, check};
    let (plan, _) = flash::plan_for(&a.image, a.bmap.as_deref())
        .with_context(|| format!("reading {}", a.image.display()))?;
    let image = a.image.display().to_string();
    let confirmed =
        check::check_and_confirm(&a.target, plan.image_size, a.force, a.confirm, &image)
            .with_context(|| format!("inspecting {}", a.target.display()))?;
    let Some(confirmed) = confirmed else {
        return Ok(ExitCode::FAILURE);
    };
    let progress = progress::new(a.mode);
    let report = flash::write_image(
        &a.image,
        &a.target,
        &confirmed,
        a.bmap.as_deref(),
        a.config.as_deref(),
        &progress,
    )
    .with_context(|| format!("flashing {} to {}", a.image.display(), a.target.display()))?;
    progress.say(&format!(
        "done: {} MiB written and verified on {}",
        report.written >> 20,
        a.target.display()
    ));
    Ok(ExitCode::SUCCESS)
}

fn build_options(out: PathBuf, inputs: &BuildInputs) -> image::BuildOptions {
    fetch_options(out, &inputs.fetch, inputs.agent.clone())
}

/// Options for resolving layers; `agent` is not read unless an image or bundle is made.
fn fetch_options(out: PathBuf, inputs: &FetchInputs, agent: PathBuf) -> image::BuildOptions {
    let mode = if inputs.quiet {
        ProgressMode::Quiet
    } else if inputs.json_progress {
        ProgressMode::Json
    } else {
        ProgressMode::Human
    };
    let cache = inputs
        .cache
        .clone()
        .map(|root| Cache { root })
        .unwrap_or_else(Cache::default_location);
    let mut opts = image::BuildOptions::new(out, agent, cache);
    opts.progress = progress::new(mode);
    opts.local_sources = inputs.layer_sources.iter().cloned().collect();
    opts
}
