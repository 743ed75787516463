//! A document back to `unattended.yaml` text: what an editor (`p6os site`, the appliance's
//! setup screens) saves. Block style, keys in the schema's order, settings at their defaults
//! left out, multi-line text (certificates) as literal blocks, every string quoted where YAML
//! would read it as something else (libyaml's emitter, through serde_norway). Reading the text
//! back gives the same document ([`super::load`]); comments of a file the document was read
//! from are not kept.

use serde_norway::Value;

use super::types::Unattended;

/// The first line of every document written: cloud-init's marker (a comment to P6OS).
pub const HEADER: &str = "#cloud-config\n";

/// `doc` as the text of an `unattended.yaml`.
pub fn to_yaml(doc: &Unattended) -> String {
    let value = serde_norway::to_value(doc).unwrap_or(Value::Null);
    match pruned(&value).map(|v| serde_norway::to_string(&v)) {
        Some(Ok(body)) => format!("{HEADER}{body}"),
        // A document with nothing set, or one the emitter refused (it takes every value of
        // these types): an empty mapping is still a document.
        _ => format!("{HEADER}{{}}\n"),
    }
}

/// `value` without what reads back as the default: nulls, `false`, empty lists, and mappings
/// that were empty to begin with (an empty `labels`). A section that is set stays, even when
/// every setting in it is at its default (`ssh: {}` still makes the agent write its SSH
/// settings). `None` when nothing is left.
fn pruned(value: &Value) -> Option<Value> {
    match value {
        Value::Null | Value::Bool(false) => None,
        Value::Sequence(items) if items.is_empty() => None,
        // Items of a list are kept even when empty: their position is their meaning.
        Value::Sequence(items) => Some(Value::Sequence(
            items
                .iter()
                .map(|i| pruned(i).unwrap_or_else(|| i.clone()))
                .collect(),
        )),
        Value::Mapping(map) if map.is_empty() => None,
        Value::Mapping(map) => Some(Value::Mapping(
            map.iter()
                .filter_map(|(k, v)| pruned(v).map(|v| (k.clone(), v)))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::unattended::load;

    fn round_trip(text: &str) {
        let doc = load(Path::new("in.yaml"), text).unwrap_or_else(|d| panic!("{d}"));
        let written = to_yaml(&doc);
        let again = load(Path::new("out.yaml"), &written)
            .unwrap_or_else(|d| panic!("{d}\n--- written:\n{written}"));
        assert_eq!(doc, again, "written:\n{written}");
    }

    #[test]
    fn the_documented_example_reads_back_the_same() {
        let doc = include_str!("../../../docs/unattended.md");
        let start = doc.find("```yaml\n").expect("example block") + 8;
        let end = start + doc[start..].find("```").expect("end of block");
        round_trip(&doc[start..end]);
    }

    #[test]
    fn strings_that_look_like_other_things_stay_strings() {
        let tricky = [
            "true",
            "0123",
            "1.5",
            "null",
            "~",
            ": x",
            "#x",
            "- y",
            "yes",
            "'q'",
            "\\\"d\\\"",
        ];
        let mut text = String::from("appliance:\n  name: \"0123\"\n  labels: {\"yes\": \"no\", a: \"1.5\"}\nusers:\n  - name: ops\n    passwd: \"$y$j9T$abc$def\"\nwrite_files:\n  - {path: /etc/a, content: \"line 1\\nline 2\\n\", permissions: \"0644\"}\n  - {path: /etc/b, content: \"  leading blanks\\n\\ttab\"}\n");
        for (i, t) in tricky.iter().enumerate() {
            text.push_str(&format!("  - {{path: /etc/t{i}, content: \"{t}\"}}\n"));
        }
        round_trip(&text);
    }

    #[test]
    fn defaults_are_left_out_and_an_empty_document_is_a_mapping() {
        assert_eq!(to_yaml(&Unattended::default()), "#cloud-config\n{}\n");
        let doc = load(
            Path::new("u.yaml"),
            "hostname: a\nssh: {password_authentication: false, port: 2222}\n",
        )
        .unwrap();
        assert_eq!(
            to_yaml(&doc),
            "#cloud-config\nhostname: a\nssh:\n  port: 2222\n"
        );
        // A section set with every setting at its default stays set.
        round_trip(
            "ssh: {password_authentication: false}\nregistries: {}\nappliance: {labels: {}}\n",
        );
    }
}
