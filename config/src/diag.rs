//! Diagnostics: every problem in a user-facing file, with its place, field path and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a user-facing file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line and column; 0 when the place is unknown (e.g. a missing file).
    pub line: usize,
    pub column: usize,
    /// Field path such as `layers[1].sources[0].sha256`; empty for the document itself.
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)?;
        } else {
            write!(f, ": {}: {}", self.field, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// All problems found in one or more files. Never empty when returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
    /// Orders problems by file, then position (stable for problems at the same place).
    pub fn sort(&mut self) {
        self.0
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
    /// `Ok(value)` when nothing was found, else all problems in file order.
    pub fn into_result<T>(mut self, value: T) -> Result<T, Diagnostics> {
        self.sort();
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
    /// A problem about a whole file (missing, unreadable).
    pub fn file_error(file: &Path, message: impl Into<String>) -> Self {
        Diagnostics(vec![Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: message.into(),
            hint: None,
        }])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "\n{n} problem{} found", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

/// An error and its causes on one line, `a: b: c`, each cause printed once: a cause whose text
/// the level just above it already shows (`#[error("{path}: {source}")]`, `#[error("...: {0}")]`
/// over a `#[from]`) is not repeated. Only the level just above counts, so a short cause is never
/// hidden because its words happen to appear further up. Every binary of the workspace prints
/// errors through this.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut above = text.clone();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !line.is_empty() && !above.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        above = line;
        source = cause.source();
    }
    text
}

/// The closest candidate to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            // A transposition or two in a short word is as likely a typo as a long shared prefix.
            let edits = strsim::damerau_levenshtein(word, c);
            let close_edit = edits <= 2 && edits < word.len().max(c.len());
            let bonus = if close_edit {
                1.0 + (2 - edits) as f64
            } else {
                0.0
            };
            let score = strsim::jaro_winkler(word, c) + bonus;
            (score, c)
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose message may show its cause, as `#[error("{0}")]` with `#[from]` does.
    #[derive(Debug)]
    struct Layer {
        text: String,
        cause: Option<Box<Layer>>,
    }
    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.text)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.cause.as_deref().map(|c| c as _)
        }
    }
    fn layer(text: &str, cause: Option<Layer>) -> Layer {
        Layer {
            text: text.into(),
            cause: cause.map(Box::new),
        }
    }

    /// The chain that printed "No such file or directory" three times after a fresh machine's
    /// set-up lost qemu-img: each level's message already held its cause.
    #[test]
    fn each_cause_is_printed_once() {
        let io = layer("No such file or directory (os error 2)", None);
        let spawn = layer(
            "cannot run qemu-img to write x.qcow2: No such file or directory (os error 2) (install qemu-utils)",
            Some(io),
        );
        let outputs = layer(&format!("output formats: {spawn}"), Some(spawn));
        assert_eq!(
            error_chain(&outputs),
            "output formats: cannot run qemu-img to write x.qcow2: No such file or directory \
             (os error 2) (install qemu-utils)"
        );
        let plain = layer("mount /sysroot", Some(layer("No such device", None)));
        assert_eq!(error_chain(&plain), "mount /sysroot: No such device");
        // A cause is compared with the level above it only, not with the whole line.
        let coincidence = layer(
            "download of https://x/timed out/bundle failed",
            Some(layer("read", Some(layer("timed out", None)))),
        );
        assert_eq!(
            error_chain(&coincidence),
            "download of https://x/timed out/bundle failed: read: timed out"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        let keys = ["name", "version", "partitions", "sha256"];
        assert_eq!(did_you_mean("sah256", keys), Some("sha256"));
        assert_eq!(did_you_mean("partition", keys), Some("partitions"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }

    #[test]
    fn renders_place_field_and_hint() {
        let d = Diagnostic {
            file: "r.yaml".into(),
            line: 3,
            column: 5,
            field: "boot.tries".into(),
            message: "expected an integer".into(),
            hint: Some("use a number such as 3".into()),
        };
        assert_eq!(
            d.to_string(),
            "r.yaml:3:5: boot.tries: expected an integer\n  hint: use a number such as 3"
        );
    }
}
