//! `unattended.yaml`: the site operator's only input, cloud-init style (a leading `#cloud-config`
//! line is a comment and accepted). Typed with `deny_unknown_fields`, checked as a whole: every
//! problem is reported at once with its place, and nothing is applied from a file with one.
//!
//! Layout: `types` (the serde types and so the schema), `checks/` (the semantic checks, one
//! file per section), `syntax` (the shared syntax rules: host names, URLs, CIDRs, PEM, paths,
//! SSH keys, password hashes), this file (the entry point). No I/O beyond the text given, and
//! no secret value is ever echoed in a diagnostic.

mod checks;
mod cloudinit;
mod emit;
mod redact;
mod syntax;
mod types;

use std::path::Path;

use crate::diag::Diagnostics;
use crate::yamlcheck::{self, Loaded};

pub use emit::{to_yaml, HEADER};
pub use ipnet::IpNet;
pub use redact::{extra_arg_looks_secret, REDACTED};
pub use syntax::{
    overlaps, parse_cidr, parse_http_url, redact_userinfo, strip_whitespace, valid_account_name,
    valid_hostname,
};
pub use types::*;

#[cfg(test)]
use syntax::{valid_mac, valid_ssh_key};

/// The JSON Schema `p6os schema unattended` prints.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(Unattended).to_value()
}

/// Parses and checks a whole document; every problem at once.
pub fn load(file: &Path, text: &str) -> Result<Unattended, Diagnostics> {
    let Loaded { value, tree } =
        match yamlcheck::load_with::<Unattended>(file, text, &cloudinit::answer) {
            Ok(loaded) => loaded,
            Err(mut diags) => {
                // Every problem at once: the sections whose own shape is right still get their
                // checks (a bad CIDR is reported beside an unknown key elsewhere).
                if let Ok(tree) = yamlcheck::parse(file, text) {
                    diags.extend(checks::check(file, &tree, &well_formed_sections(&tree)));
                    diags.sort();
                }
                return Err(diags);
            }
        };
    checks::check(file, &tree, &value).into_result(value)
}

/// A document for an editor: every section that reads on its own, and every problem of the
/// whole (empty when [`load`] would accept it). Sections with a problem of shape are left out
/// (at their defaults); the problems say which.
pub fn load_for_editing(file: &Path, text: &str) -> (Unattended, Diagnostics) {
    match load(file, text) {
        Ok(u) => (u, Diagnostics::default()),
        Err(diags) => {
            let u = yamlcheck::parse(file, text)
                .map(|tree| well_formed_sections(&tree))
                .unwrap_or_default();
            (u, diags)
        }
    }
}

/// The top-level sections of a document that deserialize on their own; the others are left
/// at their defaults (so they add no checks).
fn well_formed_sections(tree: &marked_yaml::Node) -> Unattended {
    let mut u = Unattended::default();
    let Some(map) = tree.as_mapping() else {
        return u;
    };
    macro_rules! sections {
        ($($field:ident),*) => {$(
            if let Some(node) = map.get_node(stringify!($field)) {
                if let Ok(v) = marked_yaml::from_node(node) {
                    u.$field = v;
                }
            }
        )*};
    }
    sections!(
        appliance,
        hostname,
        timezone,
        ntp,
        users,
        ssh,
        network,
        proxy,
        kubernetes,
        registries,
        console,
        write_files
    );
    u
}

#[cfg(test)]
mod tests;
