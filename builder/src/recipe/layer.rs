//! Layer files (`images/**.yaml`): their sources checked, every problem reported at once.

use std::path::Path;

use super::{clean_absolute, is_sha256, valid_name, InlineKind, LayerFile, ModuleClasses, Source};
use crate::diag::Diagnostics;
use crate::yamlcheck::{self, diagnostic_at, Loaded, Seg};

const PACKAGE_HINT: Option<&str> = Some("write `name` or `name=version`");

/// Loads and checks one layer file.
pub fn load_layer(path: &Path) -> Result<LayerFile, Diagnostics> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostics::file_error(path, format!("cannot read layer file: {e}")))?;
    let Loaded { value: def, tree } = yamlcheck::load::<LayerFile>(path, &text)?;
    let mut diags = Diagnostics::default();
    let dir = path.parent().unwrap_or(Path::new("."));
    for (i, source) in def.sources.iter().enumerate() {
        let base = vec![Seg::Key("sources".into()), Seg::Index(i)];
        let field = |k: &str| {
            let mut f = base.clone();
            f.push(Seg::Key(k.into()));
            f
        };
        let mut err = |f: Vec<Seg>, msg: String, hint: Option<&str>| {
            diags.push(diagnostic_at(
                path,
                &tree,
                &f,
                msg,
                hint.map(str::to_string),
            ))
        };
        match source {
            Source::Debian { packages } => {
                if packages.is_empty() {
                    err(field("packages"), "needs at least one package".into(), None);
                }
                for j in invalid_packages(packages) {
                    let mut f = field("packages");
                    f.push(Seg::Index(j));
                    err(
                        f,
                        format!("invalid package `{}`", packages[j]),
                        PACKAGE_HINT,
                    );
                }
            }
            Source::Mmdebstrap {
                suite, packages, ..
            } => {
                let suite_ok = !suite.is_empty()
                    && suite
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !suite_ok {
                    err(
                        field("suite"),
                        format!("invalid suite `{suite}`"),
                        Some("a Debian code name such as `bookworm`"),
                    );
                }
                for j in invalid_packages(packages) {
                    let mut f = field("packages");
                    f.push(Seg::Index(j));
                    err(
                        f,
                        format!("invalid package `{}`", packages[j]),
                        PACKAGE_HINT,
                    );
                }
            }
            Source::File {
                name,
                url,
                sha256,
                dest,
                mode,
            } => {
                if !valid_name(name) {
                    err(
                        field("name"),
                        format!("invalid name `{name}`"),
                        Some("lowercase letters, digits and dashes; used as --layer-source NAME=PATH"),
                    );
                }
                if !(url.starts_with("http://")
                    || url.starts_with("https://")
                    || url.starts_with("file://"))
                {
                    err(
                        field("url"),
                        format!("unsupported URL `{url}`"),
                        Some("use http://, https:// or file://"),
                    );
                }
                if !is_sha256(sha256) {
                    err(
                        field("sha256"),
                        format!("`{sha256}` is not a sha256"),
                        Some("64 lowercase hex digits"),
                    );
                }
                if !clean_absolute(dest) {
                    err(
                        field("dest"),
                        format!("`{dest}` is not a clean absolute path"),
                        None,
                    );
                }
                if let Some(m) = mode {
                    if u32::from_str_radix(m, 8).map_or(true, |v| v > 0o7777) {
                        err(
                            field("mode"),
                            format!("`{m}` is not an octal mode"),
                            Some("quote it, e.g. \"0755\""),
                        );
                    }
                }
            }
            Source::Tarball {
                path: local,
                url,
                sha256,
            } => {
                match (local, url) {
                    (Some(_), Some(_)) | (None, None) => err(
                        base.clone(),
                        "give exactly one of `path` and `url`".into(),
                        None,
                    ),
                    (None, Some(u)) => {
                        if !(u.starts_with("http://")
                            || u.starts_with("https://")
                            || u.starts_with("file://"))
                        {
                            err(
                                field("url"),
                                format!("unsupported URL `{u}`"),
                                Some("use http://, https:// or file://"),
                            );
                        }
                        if sha256.is_none() {
                            err(
                                base.clone(),
                                "missing field `sha256`".into(),
                                Some("a tarball fetched by URL must be pinned by its sha256"),
                            );
                        }
                    }
                    (Some(p), None) => {
                        if !dir.join(p).is_file() {
                            err(
                                field("path"),
                                format!("file `{}` not found", dir.join(p).display()),
                                Some("paths are relative to the layer file"),
                            );
                        }
                    }
                }
                if let Some(s) = sha256 {
                    if !is_sha256(s) {
                        err(
                            field("sha256"),
                            format!("`{s}` is not a sha256"),
                            Some("64 lowercase hex digits"),
                        );
                    }
                }
            }
            Source::Dir { path: p, target } => {
                if !dir.join(p).is_dir() {
                    err(
                        field("path"),
                        format!("directory `{}` not found", dir.join(p).display()),
                        Some("paths are relative to the layer file"),
                    );
                }
                if let Some(t) = target {
                    if !t.starts_with('/') || t.split('/').any(|c| c == "..") {
                        err(
                            field("target"),
                            format!("`{t}` is not a clean absolute path"),
                            None,
                        );
                    }
                }
            }
            Source::Inline { entries } => {
                for (j, e) in entries.iter().enumerate() {
                    let mut f = field("entries");
                    f.push(Seg::Index(j));
                    let sub = |k: &str| {
                        let mut g = f.clone();
                        g.push(Seg::Key(k.into()));
                        g
                    };
                    if !e.path.starts_with('/')
                        || e.path.split('/').any(|c| c == ".." || c == ".")
                        || e.path == "/"
                    {
                        err(
                            sub("path"),
                            format!("`{}` is not a clean absolute path", e.path),
                            None,
                        );
                    }
                    if let Some(m) = &e.mode {
                        if u32::from_str_radix(m, 8).map_or(true, |v| v > 0o7777) {
                            err(
                                sub("mode"),
                                format!("`{m}` is not an octal mode"),
                                Some("quote it, e.g. \"0755\""),
                            );
                        }
                    }
                    let needs = |k: InlineKind| e.kind == k;
                    let checks: [(&str, bool, bool); 4] = [
                        ("target", e.target.is_some(), needs(InlineKind::Symlink)),
                        ("content", e.content.is_some(), needs(InlineKind::File)),
                        (
                            "major",
                            e.major.is_some(),
                            needs(InlineKind::Char) || needs(InlineKind::Block),
                        ),
                        (
                            "minor",
                            e.minor.is_some(),
                            needs(InlineKind::Char) || needs(InlineKind::Block),
                        ),
                    ];
                    for (name, given, needed) in checks {
                        if needed && !given {
                            err(
                                f.clone(),
                                format!("missing field `{name}` for kind `{:?}`", e.kind)
                                    .to_lowercase(),
                                None,
                            );
                        } else if given && !needed {
                            err(
                                sub(name),
                                format!("`{name}` does not apply to kind `{:?}`", e.kind)
                                    .to_lowercase(),
                                None,
                            );
                        }
                    }
                }
            }
        }
    }
    for (field, msg, hint) in module_class_problems(&def.initramfs) {
        let mut f = vec![Seg::Key("initramfs".into())];
        f.extend(field);
        diags.push(diagnostic_at(
            path,
            &tree,
            &f,
            msg,
            hint.map(str::to_string),
        ));
    }
    diags.into_result(def)
}

/// Problems of initramfs module classes (a layer's or a recipe's `initramfs`), each with its
/// field below `initramfs`.
pub(super) fn module_class_problems(
    classes: &ModuleClasses,
) -> Vec<(Vec<Seg>, String, Option<&'static str>)> {
    let mut problems = Vec::new();
    for (class, modules) in classes {
        let at = vec![Seg::Key(class.clone())];
        if !valid_name(class) {
            problems.push((
                at.clone(),
                format!("invalid class name `{class}`"),
                Some("lowercase letters, digits and dashes, starting with a letter (`intel-nic`)"),
            ));
        }
        if modules.is_empty() {
            problems.push((at.clone(), "names no module".into(), None));
        }
        for (j, module) in modules.iter().enumerate() {
            let valid = module.starts_with(|c: char| c.is_ascii_alphanumeric())
                && module
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && module.len() <= 64;
            if !valid {
                let mut f = at.clone();
                f.push(Seg::Index(j));
                problems.push((
                    f,
                    format!("invalid module name `{module}`"),
                    Some("a module's name as `modinfo` shows it, without `.ko` (`sd_mod`)"),
                ));
            }
        }
    }
    problems
}

/// Indexes of package specs that are not `name` or `name=version`.
fn invalid_packages(packages: &[String]) -> Vec<usize> {
    let mut bad = Vec::new();
    for (j, p) in packages.iter().enumerate() {
        let (name, version) = p.split_once('=').unwrap_or((p, ""));
        // Debian names start with a letter or digit; that also keeps `-q` from
        // reaching apt as an option.
        let name_ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        let version_ok =
            !p.contains('=') || (!version.is_empty() && !version.contains(char::is_whitespace));
        if !name_ok || !version_ok {
            bad.push(j);
        }
    }
    bad
}
