//! Strict YAML loading for user-facing files.
//!
//! The document is parsed into a tree that keeps positions, checked against the JSON Schema
//! derived from the Rust type (so the schema users read and the checks that run are one thing),
//! and only then deserialized. Every problem is reported at once, with line, column, field path
//! and, for unknown keys or values, the closest valid name.

use std::fmt::Write as _;
use std::path::Path;

use marked_yaml::{Node, Span};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::diag::{did_you_mean, Diagnostic, Diagnostics};

/// A step in a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a field path as `a.b[2].c`.
pub fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// A parsed, schema-checked document: the typed value and the tree it came from
/// (kept to point later, semantic errors at the right line).
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub value: T,
    pub tree: Node,
}

/// Parses `text` (from `file`), checks it against `T`'s JSON Schema and deserializes it.
pub fn load<T: DeserializeOwned + JsonSchema>(
    file: &Path,
    text: &str,
) -> Result<Loaded<T>, Diagnostics> {
    load_with(file, text, &|_, _| None)
}

/// What to say about a key the schema does not know, when a format knows better than "unknown
/// field" (a key of another tool's format, say): the message and the hint.
pub type ForeignKeys<'a> = dyn Fn(&[Seg], &str) -> Option<(String, String)> + 'a;

/// [`load`], with `foreign` asked first about every unknown key (its path and name).
pub fn load_with<T: DeserializeOwned + JsonSchema>(
    file: &Path,
    text: &str,
    foreign: &ForeignKeys,
) -> Result<Loaded<T>, Diagnostics> {
    let tree = parse(file, text)?;
    let schema = schemars::schema_for!(T);
    let schema = schema.as_value();
    let mut checker = Checker {
        file,
        defs: schema.get("$defs").and_then(Value::as_object),
        diags: Diagnostics::default(),
        foreign,
    };
    checker.check(&tree, schema, &mut Vec::new());
    if !checker.diags.is_empty() {
        return Err(checker.diags);
    }
    match marked_yaml::from_node::<T>(&tree) {
        Ok(value) => Ok(Loaded { value, tree }),
        Err(e) => {
            let (line, column) = e
                .start_mark()
                .map(|m| (m.line(), m.column()))
                .unwrap_or((0, 0));
            Err(Diagnostics(vec![Diagnostic {
                file: file.to_path_buf(),
                line,
                column,
                field: e.path().unwrap_or_default().to_string(),
                message: e.to_string(),
                hint: None,
            }]))
        }
    }
}

/// Parses YAML into a tree with positions; a syntax error becomes one diagnostic.
pub fn parse(file: &Path, text: &str) -> Result<Node, Diagnostics> {
    let opts = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
    marked_yaml::parse_yaml_with_options(0, text, opts).map_err(|e| {
        use marked_yaml::LoadError as E;
        let (marker, message) = match &e {
            E::TopLevelMustBeMapping(m) => (
                Some(*m),
                "the document must be a mapping of keys".to_string(),
            ),
            E::TopLevelMustBeSequence(m) => (Some(*m), "the document must be a list".to_string()),
            E::UnexpectedAnchor(m) => (
                Some(*m),
                "anchors and aliases are not supported".to_string(),
            ),
            E::MappingKeyMustBeScalar(m) => {
                (Some(*m), "mapping keys must be plain values".to_string())
            }
            E::UnexpectedTag(m) => (Some(*m), "YAML tags are not supported".to_string()),
            E::ScanError(m, s) => (Some(*m), format!("invalid YAML: {}", s.info())),
            E::DuplicateKey(inner) => (
                inner.key.span().start().copied(),
                format!("duplicate key `{}`", inner.key.as_str()),
            ),
        };
        Diagnostics(vec![Diagnostic {
            file: file.to_path_buf(),
            line: marker.map_or(0, |m| m.line()),
            column: marker.map_or(0, |m| m.column()),
            field: String::new(),
            message,
            hint: None,
        }])
    })
}

/// The position of the node at `path` (or of its deepest existing ancestor).
pub fn locate(tree: &Node, path: &[Seg]) -> (usize, usize) {
    let mut node = tree;
    for seg in path {
        let next = match (seg, node) {
            (Seg::Key(k), Node::Mapping(m)) => m.get_node(k),
            (Seg::Index(i), Node::Sequence(s)) => s.get(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    node_position(node)
}

fn position(span: &Span) -> (usize, usize) {
    span.start().map_or((0, 0), |m| (m.line(), m.column()))
}

/// Where a node starts; for a block mapping, its first key (the mapping's own span starts later).
fn node_position(node: &Node) -> (usize, usize) {
    match node {
        Node::Mapping(m) => m
            .keys()
            .next()
            .map_or_else(|| position(m.span()), |k| position(k.span())),
        _ => position(node.span()),
    }
}

/// Builds a diagnostic pointing at `path` in `tree`.
pub fn diagnostic_at(
    file: &Path,
    tree: &Node,
    path: &[Seg],
    message: impl Into<String>,
    hint: Option<String>,
) -> Diagnostic {
    let (line, column) = locate(tree, path);
    Diagnostic {
        file: file.to_path_buf(),
        line,
        column,
        field: path_string(path),
        message: message.into(),
        hint,
    }
}

struct Checker<'a> {
    file: &'a Path,
    defs: Option<&'a Map<String, Value>>,
    diags: Diagnostics,
    foreign: &'a ForeignKeys<'a>,
}

fn is_null(node: &Node) -> bool {
    matches!(node, Node::Scalar(s) if s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"))
}

fn kind_name(node: &Node) -> &'static str {
    match node {
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
        Node::Scalar(_) if is_null(node) => "nothing (null)",
        Node::Scalar(_) => "a value",
    }
}

impl<'a> Checker<'a> {
    fn error(&mut self, node: &Node, path: &[Seg], message: String, hint: Option<String>) {
        let (line, column) = node_position(node);
        self.diags.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            field: path_string(path),
            message,
            hint,
        });
    }

    fn resolve(&self, schema: &'a Value) -> &'a Value {
        let mut s = schema;
        for _ in 0..32 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) => match r.strip_prefix("#/$defs/").and_then(|n| self.defs?.get(n)) {
                    Some(target) => s = target,
                    None => return s,
                },
                None => return s,
            }
        }
        s
    }

    fn check(&mut self, node: &Node, schema: &'a Value, path: &mut Vec<Seg>) {
        let schema = self.resolve(schema);
        if schema.as_bool() == Some(true) {
            return;
        }
        if let Some(variants) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Value::as_array)
        {
            self.check_alternatives(node, variants, path);
            return;
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            self.check_enum(node, values, path, schema);
            return;
        }
        if let Some(c) = schema.get("const") {
            self.check_enum(node, std::slice::from_ref(c), path, schema);
            return;
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return,
        };
        if is_null(node) && types.contains(&"null") {
            return;
        }
        match node {
            Node::Mapping(map) if types.contains(&"object") => {
                let props = schema.get("properties").and_then(Value::as_object);
                for (key, value) in map.iter() {
                    let name = key.as_str();
                    path.push(Seg::Key(name.to_string()));
                    match props.and_then(|p| p.get(name)) {
                        Some(sub) => self.check(value, sub, path),
                        None => match schema.get("additionalProperties") {
                            Some(Value::Bool(false)) => {
                                if let Some((message, hint)) =
                                    (self.foreign)(&path[..path.len() - 1], name)
                                {
                                    let k = Node::Scalar(key.clone());
                                    self.error(&k, path, message, Some(hint));
                                    path.pop();
                                    continue;
                                }
                                let candidates =
                                    props.into_iter().flat_map(|p| p.keys().map(String::as_str));
                                let hint = did_you_mean(name, candidates)
                                    .map(|c| format!("did you mean `{c}`?"));
                                let hint = hint.or_else(|| {
                                    props.map(|p| {
                                        let names: Vec<&str> =
                                            p.keys().map(String::as_str).collect();
                                        format!("known fields: {}", names.join(", "))
                                    })
                                });
                                let k = Node::Scalar(key.clone());
                                self.error(&k, path, format!("unknown field `{name}`"), hint);
                            }
                            Some(sub @ Value::Object(_)) => self.check(value, sub, path),
                            _ => {}
                        },
                    }
                    path.pop();
                }
                if let Some(required) = schema.get("required").and_then(Value::as_array) {
                    for r in required.iter().filter_map(Value::as_str) {
                        if map.get_node(r).is_none() {
                            self.error(node, path, format!("missing field `{r}`"), None);
                        }
                    }
                }
            }
            Node::Sequence(seq) if types.contains(&"array") => {
                if let Some(items) = schema.get("items") {
                    for (i, item) in seq.iter().enumerate() {
                        path.push(Seg::Index(i));
                        self.check(item, items, path);
                        path.pop();
                    }
                }
                if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                    if (seq.len() as u64) < min {
                        self.error(node, path, format!("needs at least {min} item(s)"), None);
                    }
                }
            }
            Node::Scalar(s) => self.check_scalar(node, s.as_str(), &types, schema, path),
            _ => {
                let expected = describe_types(&types);
                self.error(
                    node,
                    path,
                    format!("expected {expected}, found {}", kind_name(node)),
                    None,
                );
            }
        }
    }

    fn check_scalar(
        &mut self,
        node: &Node,
        text: &str,
        types: &[&str],
        schema: &Value,
        path: &[Seg],
    ) {
        if types.contains(&"string") {
            if schema.get("format").and_then(Value::as_str) == Some(crate::size::FORMAT) {
                if let Err(e) = text.parse::<crate::size::ByteSize>() {
                    self.error(
                        node,
                        path,
                        e,
                        Some("a size such as 64MiB, 2GiB or 512KiB".into()),
                    );
                }
            }
            return;
        }
        if types.contains(&"integer") {
            match text.parse::<i128>() {
                Ok(v) => {
                    let min = schema.get("minimum").and_then(Value::as_f64);
                    let max = schema.get("maximum").and_then(Value::as_f64);
                    if min.is_some_and(|m| (v as f64) < m) || max.is_some_and(|m| (v as f64) > m) {
                        let range = format!(
                            "{}..={}",
                            min.map_or("".into(), |m| m.to_string()),
                            max.map_or("".into(), |m| m.to_string())
                        );
                        self.error(node, path, format!("{v} is out of range {range}"), None);
                    }
                    return;
                }
                Err(_) if !types.contains(&"number") && !types.contains(&"boolean") => {
                    self.error(
                        node,
                        path,
                        format!("expected an integer, found `{text}`"),
                        None,
                    );
                    return;
                }
                Err(_) => {}
            }
        }
        if types.contains(&"number") && text.parse::<f64>().is_ok() {
            return;
        }
        if types.contains(&"boolean") {
            if matches!(text, "true" | "false" | "True" | "False" | "TRUE" | "FALSE") {
                return;
            }
            self.error(
                node,
                path,
                format!("expected true or false, found `{text}`"),
                None,
            );
            return;
        }
        let expected = describe_types(types);
        self.error(
            node,
            path,
            format!("expected {expected}, found `{text}`"),
            None,
        );
    }

    fn check_enum(&mut self, node: &Node, values: &[Value], path: &[Seg], schema: &Value) {
        let allowed: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        match node {
            Node::Scalar(s) if allowed.contains(&s.as_str()) => {}
            Node::Scalar(_) if is_null(node) && values.iter().any(Value::is_null) => {}
            Node::Scalar(s) => {
                let hint = did_you_mean(s.as_str(), allowed.iter().copied())
                    .map(|c| format!("did you mean `{c}`?"))
                    .or_else(|| Some(format!("one of: {}", allowed.join(", "))));
                let _ = schema;
                self.error(node, path, format!("unknown value `{}`", s.as_str()), hint);
            }
            _ => self.error(
                node,
                path,
                format!(
                    "expected one of {}, found {}",
                    allowed.join(", "),
                    kind_name(node)
                ),
                None,
            ),
        }
    }

    fn check_alternatives(&mut self, node: &Node, variants: &'a [Value], path: &mut Vec<Seg>) {
        // Internally tagged enums: pick the variant by its tag so errors are about that variant.
        if let Node::Mapping(map) = node {
            if let Some((tag, consts)) = self.tag_of(variants) {
                let Some(given) = map.get_node(&tag) else {
                    let hint = Some(format!("one of: {}", consts.join(", ")));
                    self.error(node, path, format!("missing field `{tag}`"), hint);
                    return;
                };
                let given_text = given
                    .as_scalar()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default();
                match consts.iter().position(|c| *c == given_text) {
                    Some(i) => self.check(node, &variants[i], path),
                    None => {
                        path.push(Seg::Key(tag.clone()));
                        let hint = did_you_mean(&given_text, consts.iter().map(String::as_str))
                            .map(|c| format!("did you mean `{c}`?"))
                            .or_else(|| Some(format!("one of: {}", consts.join(", "))));
                        self.error(given, path, format!("unknown {tag} `{given_text}`"), hint);
                        path.pop();
                    }
                }
                return;
            }
        }
        let mut best: Option<Diagnostics> = None;
        // An optional value that is given is judged as the value: "expected nothing" is never
        // the most useful answer about a mapping with a wrong key.
        let only_null =
            |v: &Value| self.resolve(v).get("type").and_then(Value::as_str) == Some("null");
        let given = !is_null(node) && variants.iter().any(|v| !only_null(v));
        for v in variants.iter().filter(|v| !(given && only_null(v))) {
            let mut trial = Checker {
                file: self.file,
                defs: self.defs,
                diags: Diagnostics::default(),
                foreign: self.foreign,
            };
            trial.check(node, v, path);
            if trial.diags.is_empty() {
                return;
            }
            if best.as_ref().is_none_or(|b| trial.diags.len() < b.len()) {
                best = Some(trial.diags);
            }
        }
        if let Some(b) = best {
            self.diags.extend(b);
        }
    }

    /// For `oneOf` variants that are all objects with a `const` property of the same name.
    fn tag_of(&self, variants: &'a [Value]) -> Option<(String, Vec<String>)> {
        let mut tag: Option<String> = None;
        let mut consts = Vec::new();
        for v in variants {
            let v = self.resolve(v);
            let props = v.get("properties")?.as_object()?;
            let (name, c) = props
                .iter()
                .find_map(|(k, p)| Some((k, p.get("const")?.as_str()?)))?;
            if tag.as_ref().is_some_and(|t| t != name) {
                return None;
            }
            tag = Some(name.clone());
            consts.push(c.to_string());
        }
        tag.map(|t| (t, consts))
    }
}

/// `a string or an integer`
fn describe_types(types: &[&str]) -> String {
    types
        .iter()
        .map(|t| describe_type(t))
        .collect::<Vec<_>>()
        .join(" or ")
}

fn describe_type(t: &str) -> &'static str {
    match t {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "true or false",
        "null" => "nothing",
        _ => "a value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: String,
        count: Option<u8>,
        #[serde(default)]
        items: Vec<Item>,
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    #[serde(deny_unknown_fields)]
    struct Item {
        path: String,
        #[serde(default)]
        enabled: bool,
    }

    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Slow,
    }

    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    #[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
    enum Source {
        Dir { path: String },
        Url { url: String, sha256: String },
    }

    fn errors<T: DeserializeOwned + JsonSchema + std::fmt::Debug>(text: &str) -> Vec<String> {
        match load::<T>(Path::new("t.yaml"), text) {
            Ok(v) => panic!("expected errors, got {:?}", v.value),
            Err(d) => d.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn loads_a_valid_document() {
        let doc = load::<Doc>(
            Path::new("t.yaml"),
            "name: x\ncount: 3\nitems:\n  - path: /a\n    enabled: true\nmode: fast\n",
        )
        .unwrap()
        .value;
        assert_eq!(doc.name, "x");
        assert_eq!(doc.count, Some(3));
        assert!(doc.items[0].enabled);
        assert!(matches!(doc.mode, Some(Mode::Fast)));
    }

    #[test]
    fn reports_every_problem_at_once_with_places() {
        let errs = errors::<Doc>("nam: x\ncount: 300\nitems:\n  - path: /a\n    enabeld: true\n  - enabled: maybe\nmode: fsat\n");
        assert_eq!(
            errs,
            vec![
                "t.yaml:1:1: nam: unknown field `nam`\n  hint: did you mean `name`?",
                "t.yaml:2:8: count: 300 is out of range 0..=255",
                "t.yaml:5:5: items[0].enabeld: unknown field `enabeld`\n  hint: did you mean `enabled`?",
                "t.yaml:6:14: items[1].enabled: expected true or false, found `maybe`",
                "t.yaml:6:5: items[1]: missing field `path`",
                "t.yaml:7:7: mode: unknown value `fsat`\n  hint: did you mean `fast`?",
                "t.yaml:1:1: missing field `name`",
            ]
        );
    }

    #[test]
    fn tagged_enums_are_checked_by_their_tag() {
        #[derive(Debug, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct W {
            source: Source,
        }
        assert_eq!(
            errors::<W>("source:\n  type: url\n  url: http://x\n  sah256: ab\n"),
            vec![
                "t.yaml:4:3: source.sah256: unknown field `sah256`\n  hint: did you mean `sha256`?",
                "t.yaml:2:3: source: missing field `sha256`",
            ]
        );
        assert_eq!(
            errors::<W>("source:\n  type: dri\n"),
            vec!["t.yaml:2:9: source.type: unknown type `dri`\n  hint: did you mean `dir`?"]
        );
        let ok = load::<W>(Path::new("t.yaml"), "source: {type: dir, path: /x}\n").unwrap();
        assert!(matches!(ok.value.source, Source::Dir { .. }));
    }

    #[test]
    fn syntax_errors_and_duplicates_have_a_place() {
        let errs = errors::<Doc>("name: x\nname: y\n");
        assert_eq!(errs, vec!["t.yaml:2:1: duplicate key `name`"]);
        let errs = errors::<Doc>("name: [x\n");
        assert!(errs[0].starts_with("t.yaml:2:1: invalid YAML"), "{errs:?}");
    }

    #[test]
    fn wrong_shapes_are_named() {
        let errs = errors::<Doc>("name: x\nitems: {path: a}\n");
        assert_eq!(
            errs,
            vec!["t.yaml:2:9: items: expected a list, found a mapping"]
        );
    }
}
/// Numbers inside internally tagged enums reach serde as strings (serde buffers the content
/// before it knows the variant); fields there use these to accept both forms.
pub mod lenient {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(u32),
        Text(String),
    }

    fn to_u32<E: serde::de::Error>(v: NumOrText) -> Result<u32, E> {
        match v {
            NumOrText::Num(n) => Ok(n),
            NumOrText::Text(t) => t
                .parse()
                .map_err(|_| E::custom(format!("expected an integer, found `{t}`"))),
        }
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        to_u32(NumOrText::deserialize(d)?)
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        Option::<NumOrText>::deserialize(d)?.map(to_u32).transpose()
    }
}
