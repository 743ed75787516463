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
