//! The recipe's `upgrades` section: which keys the image trusts for update bundles, and the
//! health checks that gate blessing a new slot. Both are baked into the slot.

use std::path::{Path, PathBuf};

use p6os_bundle::keys::PublicKey;
use p6os_config::health::Health;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diag::Diagnostics;
use crate::yamlcheck::{diagnostic_at, Seg};

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upgrades {
    /// Public key files (`p6os keygen`) whose bundles this image installs, relative to the recipe.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    #[serde(default)]
    pub health: Health,
}

/// The checked section: keys loaded.
#[derive(Debug, Clone, Default)]
pub struct CheckedUpgrades {
    pub trusted_keys: Vec<PublicKey>,
    pub health: Health,
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

pub fn check(
    recipe: &Path,
    tree: &marked_yaml::Node,
    dir: &Path,
    u: &Upgrades,
    diags: &mut Diagnostics,
) -> CheckedUpgrades {
    let mut keys = Vec::new();
    for (i, reference) in u.trusted_keys.iter().enumerate() {
        let field = [key("upgrades"), key("trusted_keys"), Seg::Index(i)];
        let file: PathBuf = dir.join(reference);
        let loaded = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|text| PublicKey::from_file(&text).map_err(|e| e.to_string()));
        match loaded {
            Ok(k) if keys.contains(&k) => diags.push(diagnostic_at(
                recipe,
                tree,
                &field,
                format!("key {} is listed twice", k.id()),
                None,
            )),
            Ok(k) => keys.push(k),
            Err(e) => diags.push(diagnostic_at(
                recipe,
                tree,
                &field,
                format!("cannot use `{}` as a public key: {e}", file.display()),
                Some("make one with `p6os keygen --out DIR` and name DIR/p6os.pub".into()),
            )),
        }
    }
    let h = &u.health;
    if !(1..=3600).contains(&h.timeout_secs) {
        diags.push(diagnostic_at(
            recipe,
            tree,
            &[key("upgrades"), key("health"), key("timeout_secs")],
            format!("{} s is not between 1 and 3600", h.timeout_secs),
            None,
        ));
    }
    for (i, c) in h.checks.iter().enumerate() {
        if let Some(problem) = c.problem() {
            diags.push(diagnostic_at(
                recipe,
                tree,
                &[key("upgrades"), key("health"), key("checks"), Seg::Index(i)],
                problem,
                None,
            ));
        }
    }
    CheckedUpgrades {
        trusted_keys: keys,
        health: h.clone(),
    }
}
