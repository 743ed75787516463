//! Layers and the lock: every layer's sources fetched (the lock's versions when there is one)
//! and merged into one tree per layer. Needs no agent and writes nothing but the cache, so
//! `p6os lock` runs only this.

use std::path::Path;

use super::{BuildError, BuildOptions, LockPolicy};
use crate::fetch::{self, Resolved};
use crate::lock::{self, LayerLock, LockFile, LockedSource};
use crate::manifest::LayerRecord;
use crate::recipe::{Layer, Recipe};
use crate::tree::Tree;

/// The recipe's layers, loaded.
pub(super) struct Layers<'a> {
    /// The recipe's layers, in order.
    pub loaded: Vec<LoadedLayer<'a>>,
    /// The boot loader's layer.
    pub boot: LoadedLayer<'a>,
    /// The lock to write once the build succeeds (none was there, or `--update`).
    pub new_lock: Option<LockFile>,
}

/// Fetches and merges every layer, with the lock's versions when the recipe has a lock.
pub(super) fn resolve<'a>(
    recipe: &'a Recipe,
    opts: &BuildOptions,
) -> Result<Layers<'a>, BuildError> {
    let say = |s: &str| opts.progress.say(s);
    let specs: Vec<&str> = recipe
        .layers
        .iter()
        .chain(std::iter::once(&recipe.bootloader))
        .flat_map(|l| &l.def.sources)
        .flat_map(|s| match s {
            crate::recipe::Source::Debian { packages } => {
                packages.iter().map(String::as_str).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    let lockfile = lock::to_use(recipe, opts.lock)?;
    // With a lock, the exact versions are what apt is asked for.
    let locked_specs: Vec<String> = lockfile
        .iter()
        .flat_map(|l| l.layers.values())
        .flat_map(|l| &l.sources)
        .flat_map(|s| match s {
            LockedSource::Debian { packages } => packages
                .iter()
                .map(|p| format!("{}={}", p.name, p.version))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let specs: Vec<&str> = specs
        .into_iter()
        .chain(locked_specs.iter().map(String::as_str))
        .collect();
    let apt = fetch::AptIndex::resolve_cached(&opts.cache, &specs);
    let ctx = fetch::SourceContext {
        cache: &opts.cache,
        apt: &apt,
        local: &opts.local_sources,
        say: &say,
        meter: &|task, done, total| opts.progress.meter(task, done, total),
    };
    let locked = |l: &Layer| lockfile.as_ref().and_then(|f| f.layers.get(&l.reference));
    let mut loaded = Vec::new();
    for layer in &recipe.layers {
        say(&format!("layer {} ({})", layer.def.name, layer.reference));
        loaded.push(load_layer(layer, &ctx, locked(layer))?);
    }
    say(&format!(
        "layer {} ({})",
        recipe.bootloader.def.name, recipe.bootloader.reference
    ));
    let boot = load_layer(&recipe.bootloader, &ctx, locked(&recipe.bootloader))?;
    // Written by the caller once the build succeeded: a failed build leaves no lock behind.
    let new_lock = (lockfile.is_none() && opts.lock != LockPolicy::Ignore).then(|| LockFile {
        version: lock::LOCK_VERSION,
        layers: loaded
            .iter()
            .chain(std::iter::once(&boot))
            .map(|l| (l.layer.reference.clone(), layer_lock(l)))
            .collect(),
    });
    Ok(Layers {
        loaded,
        boot,
        new_lock,
    })
}

/// A layer read and merged from its sources.
pub(super) struct LoadedLayer<'a> {
    pub layer: &'a Layer,
    pub tree: Tree,
    pub sources: Vec<Resolved>,
}

fn load_layer<'a>(
    layer: &'a Layer,
    ctx: &fetch::SourceContext,
    locked: Option<&LayerLock>,
) -> Result<LoadedLayer<'a>, BuildError> {
    let dir = layer.file.parent().unwrap_or(Path::new("."));
    let mut tree = Tree::new();
    let mut sources = Vec::new();
    for (i, s) in layer.def.sources.iter().enumerate() {
        let lock = locked.and_then(|l| l.sources.get(i));
        let (t, r) = fetch::load_source(ctx, dir, s, lock).map_err(|source| BuildError::Fetch {
            layer: layer.def.name.clone(),
            file: layer.file.display().to_string(),
            source: Box::new(source),
        })?;
        tree.merge(&t);
        sources.push(r);
    }
    Ok(LoadedLayer {
        layer,
        tree,
        sources,
    })
}

fn layer_lock(l: &LoadedLayer) -> LayerLock {
    LayerLock {
        definition: lock::definition_digest(l.layer),
        sources: l
            .layer
            .def
            .sources
            .iter()
            .zip(&l.sources)
            .map(|(s, r)| fetch::locked_form(s, r))
            .collect(),
    }
}

pub(super) fn record(l: &LoadedLayer) -> LayerRecord {
    LayerRecord {
        role: l.layer.role,
        name: l.layer.def.name.clone(),
        file: l.layer.reference.clone(),
        sources: l.sources.clone(),
        sha256: fetch::tree_digest(&l.tree),
    }
}
