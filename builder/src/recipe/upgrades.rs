//! The recipe's `upgrades` section: which keys the image trusts for update bundles and for
//! signed site configuration, the health checks that gate blessing a new slot, and the
//! security floor. All are baked into the slot (the floor also travels in bundles).

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
    /// Public key files (`p6os keygen`) whose signed unattended.yaml (`p6os config sign`) a
    /// provisioned device accepts, relative to the recipe. Without any, a provisioned device
    /// takes no new configuration from drives or the ESP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_keys: Vec<String>,
    /// The oldest version a device may ever go back to once it has blessed this image:
    /// bundles older than this are refused, whoever orders them. Never above `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_floor: Option<String>,
    #[serde(default)]
    pub health: Health,
}

/// The checked section: keys loaded.
#[derive(Debug, Clone, Default)]
pub struct CheckedUpgrades {
    pub trusted_keys: Vec<PublicKey>,
    pub config_keys: Vec<PublicKey>,
    pub security_floor: Option<String>,
    pub health: Health,
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// Loads the public key files named in `upgrades.<name>`.
fn load_keys(
    recipe: &Path,
    tree: &marked_yaml::Node,
    dir: &Path,
    name: &str,
    references: &[String],
    diags: &mut Diagnostics,
) -> Vec<PublicKey> {
    let mut keys = Vec::new();
    for (i, reference) in references.iter().enumerate() {
        let field = [key("upgrades"), key(name), Seg::Index(i)];
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
    keys
}

pub fn check(
    recipe: &Path,
    tree: &marked_yaml::Node,
    dir: &Path,
    u: &Upgrades,
    version: &str,
    diags: &mut Diagnostics,
) -> CheckedUpgrades {
    let keys = load_keys(recipe, tree, dir, "trusted_keys", &u.trusted_keys, diags);
    let config_keys = load_keys(recipe, tree, dir, "config_keys", &u.config_keys, diags);
    if let Some(floor) = &u.security_floor {
        let field = [key("upgrades"), key("security_floor")];
        let problem = match p6os_layout::version::check(floor) {
            Err(e) => Some(format!("`{floor}` is not a version: {e}")),
            Ok(()) if p6os_layout::version::compare(floor, version).is_gt() => Some(format!(
                "the floor {floor} is above the recipe's version {version}: this image could not install itself"
            )),
            Ok(()) => None,
        };
        if let Some(problem) = problem {
            diags.push(diagnostic_at(
                recipe,
                tree,
                &field,
                problem,
                Some(
                    "name a version at or below `version`, e.g. the first release without the flaw"
                        .into(),
                ),
            ));
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
        config_keys,
        security_floor: u.security_floor.clone(),
        health: h.clone(),
    }
}
