//! What the review page shows: the document as it will be written with its secrets hidden, and
//! the changes against the file opened (both sides read and written the same way, secrets
//! hidden, so only real changes show).

use p6os_config::unattended::{to_yaml, Unattended};
use similar::{ChangeTag, TextDiff};

use crate::app::App;

/// The document to be saved, secrets hidden.
pub fn document(app: &App) -> String {
    to_yaml(&app.doc.redacted())
}

/// The changed lines (`- old`, `+ new`) with a line of context, secrets hidden.
pub fn changes(app: &App) -> Vec<String> {
    diff(&app.original, &app.doc)
}

fn diff(before: &Unattended, after: &Unattended) -> Vec<String> {
    let old = to_yaml(&before.redacted());
    let new = to_yaml(&after.redacted());
    let diff = TextDiff::from_lines(&old, &new);
    let mut out = Vec::new();
    for group in diff.grouped_ops(1) {
        if !out.is_empty() {
            out.push("  ...".to_string());
        }
        for op in group {
            for change in diff.iter_changes(&op) {
                let sign = match change.tag() {
                    ChangeTag::Delete => "- ",
                    ChangeTag::Insert => "+ ",
                    ChangeTag::Equal => "  ",
                };
                out.push(format!("{sign}{}", change.value().trim_end_matches('\n')));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn changes_show_only_what_changed_and_never_a_secret() {
        let text = "hostname: a\nconsole: {endpoint: \"https://c.example\", token: tok-secret-1}\n";
        let mut app = App::open(Path::new("u.yaml"), Some(text));
        app.doc.hostname = Some("b".into());
        app.doc.console.as_mut().unwrap().token =
            p6os_config::unattended::Secret::new("tok-secret-2");
        let lines = changes(&app);
        let joined = lines.join("\n");
        assert!(joined.contains("- hostname: a"), "{joined}");
        assert!(joined.contains("+ hostname: b"), "{joined}");
        assert!(!joined.contains("tok-secret"), "{joined}");
        assert!(!document(&app).contains("tok-secret"));
    }
}
