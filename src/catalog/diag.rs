//! Located diagnostics: every catalog problem as `path:line:col`, the source line, a caret and a hint.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What went wrong, stable across releases (tests and `--json` consumers match on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    Io,
    Syntax,
    UnknownField,
    WrongType,
    MissingField,
    InvalidValue,
    ConflictingFields,
    UnknownRecipe,
    UnknownImage,
    UnknownParam,
    MissingParam,
    ParamType,
    SecretLiteral,
    TemplateSyntax,
    UndefinedVariable,
    TemplateError,
    MissingFile,
    PlatformMismatch,
    InvalidSemver,
    Cycle,
    DuplicateImage,
    InvalidInstanceType,
    InvalidRegion,
    UnknownTarget,
    ScriptSyntax,
    ScriptTrap,
    UnquotedParam,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Io => "io",
            Self::Syntax => "syntax",
            Self::UnknownField => "unknown-field",
            Self::WrongType => "wrong-type",
            Self::MissingField => "missing-field",
            Self::InvalidValue => "invalid-value",
            Self::ConflictingFields => "conflicting-fields",
            Self::UnknownRecipe => "unknown-recipe",
            Self::UnknownImage => "unknown-image",
            Self::UnknownParam => "unknown-param",
            Self::MissingParam => "missing-param",
            Self::ParamType => "param-type",
            Self::SecretLiteral => "secret-literal",
            Self::TemplateSyntax => "template-syntax",
            Self::UndefinedVariable => "undefined-variable",
            Self::TemplateError => "template-error",
            Self::MissingFile => "missing-file",
            Self::PlatformMismatch => "platform-mismatch",
            Self::InvalidSemver => "invalid-semver",
            Self::Cycle => "cycle",
            Self::DuplicateImage => "duplicate-image",
            Self::InvalidInstanceType => "invalid-instance-type",
            Self::InvalidRegion => "invalid-region",
            Self::UnknownTarget => "unknown-target",
            Self::ScriptSyntax => "script-syntax",
            Self::ScriptTrap => "script-trap",
            Self::UnquotedParam => "unquoted-param",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error stops validation (exit 2, nothing runs); a warning is printed and the bake goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Error,
    Warning,
}

/// One problem at one place. `line` and `col` are 1-based; `col` counts characters.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub kind: ErrorKind,
    pub path: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip)]
    pub source_line: Option<String>,
    #[serde(skip)]
    pub width: usize,
}

impl Diagnostic {
    /// A problem with a whole file (no position inside it).
    pub fn file(kind: ErrorKind, path: &Path, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            kind,
            path: path.to_path_buf(),
            line: 1,
            col: 1,
            message: message.into(),
            hint: None,
            source_line: None,
            width: 0,
        }
    }

    /// The same finding as a warning.
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.path.display(), self.line, self.col)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{label}[{}]: {}", self.kind, self.message)?;
        writeln!(f, "  --> {}", self.location())?;
        if let Some(src) = &self.source_line {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            let (shown, caret_col, width) = window(&src.replace('\t', " "), self.col, self.width);
            let before = " ".repeat(caret_col.saturating_sub(1));
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {shown}")?;
            writeln!(f, "{pad} | {before}{}", "^".repeat(width.max(1)))?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Characters of a source line shown around the caret; a longer line (a minified value, a huge
/// string) is cut to this window, marked with `…`.
const SHOWN: usize = 120;

/// The part of `line` to show, the caret's column in it and the caret's width.
fn window(line: &str, col: usize, width: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= SHOWN {
        return (line.to_string(), col, width);
    }
    let caret = col.saturating_sub(1).min(chars.len());
    let start = caret.saturating_sub(SHOWN / 2);
    let end = (start + SHOWN).min(chars.len());
    let mut shown: String = chars[start..end].iter().collect();
    let mut caret_col = caret - start + 1;
    if start > 0 {
        shown.insert(0, '…');
        caret_col += 1;
    }
    if end < chars.len() {
        shown.push('…');
    }
    (shown, caret_col, width.min(end.saturating_sub(caret)))
}

/// Every problem found in one run, sorted by file and position.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(transparent)]
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
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
    /// Sorts by place and drops exact repeats (one template used by several images, say).
    pub fn finish(&mut self) {
        self.0.sort_by(|a, b| {
            (&a.path, a.line, a.col, a.kind.as_str(), &a.message).cmp(&(
                &b.path,
                b.line,
                b.col,
                b.kind.as_str(),
                &b.message,
            ))
        });
        self.0.dedup_by(|a, b| {
            a.path == b.path
                && a.line == b.line
                && a.col == b.col
                && a.kind == b.kind
                && a.message == b.message
        });
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let files: std::collections::BTreeSet<_> = self.0.iter().map(|d| &d.path).collect();
        write!(
            f,
            "{} problem{} in {} file{}",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" },
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// A file's text with a line index, to turn byte spans into line, column and source line.
#[derive(Debug, Clone)]
pub struct SourceText {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceText {
    pub fn new(path: PathBuf, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            path,
            text,
            line_starts,
        }
    }

    /// A diagnostic pointing at `span` (clamped to the text; a span over several lines underlines
    /// the rest of its first line).
    pub fn diag(
        &self,
        kind: ErrorKind,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let start = span.start.min(self.text.len());
        let line_idx = match self.line_starts.binary_search(&start) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let line_start = self.line_starts[line_idx];
        let line_end = self.text[line_start..]
            .find('\n')
            .map_or(self.text.len(), |i| line_start + i);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        let mut start = start;
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        // The span may start past the shown text (on a `\r` or the newline): keep the caret on
        // the line.
        let shown_end = line_start + line_text.len();
        let start = start.min(shown_end);
        let col = self.text[line_start..start].chars().count() + 1;
        let mut end = span.end.max(start).min(shown_end);
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let width = self.text[start..end].chars().count();
        Diagnostic {
            severity: Severity::Error,
            kind,
            path: self.path.clone(),
            line: line_idx + 1,
            col,
            message: message.into(),
            hint: None,
            source_line: Some(line_text.to_string()),
            width,
        }
    }
}

/// The closest candidate to `word`, when it is close enough to be what the user meant.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_line_and_column() {
        let src = SourceText::new("x.toml".into(), "a = 1\nbé = \"x\"\n".into());
        let d = src.diag(ErrorKind::WrongType, 12..15, "m");
        assert_eq!((d.line, d.col, d.width), (2, 6, 3));
        assert_eq!(d.source_line.as_deref(), Some("bé = \"x\""));
        let end = src.diag(ErrorKind::Syntax, 999..1000, "m");
        assert_eq!(end.line, 3);
        // CRLF: a span on the `\r` or the `\n` stays on its line.
        let crlf = SourceText::new("x.toml".into(), "name = \"app\r\nversion = 1\r\n".into());
        for at in [11, 12] {
            let d = crlf.diag(ErrorKind::Syntax, at..at + 1, "m");
            assert_eq!((d.line, d.col, d.width), (1, 12, 0), "{at}");
        }
    }

    #[test]
    fn suggestions_only_when_close() {
        let c = ["instance_types", "root_volume", "communicator"];
        assert_eq!(did_you_mean("instance_type", c), Some("instance_types"));
        assert_eq!(did_you_mean("zzz", c), None);
    }

    #[test]
    fn rendering_has_location_caret_and_hint() {
        let src = SourceText::new(
            "images/x.toml".into(),
            "[build]\ninstance_type = 1\n".into(),
        );
        let d = src
            .diag(
                ErrorKind::UnknownField,
                8..21,
                "unknown field `instance_type`",
            )
            .with_hint("did you mean `instance_types`?");
        let s = d.to_string();
        assert!(s.contains("--> images/x.toml:2:1"), "{s}");
        assert!(s.contains("2 | instance_type = 1"), "{s}");
        assert!(s.contains("  | ^^^^^^^^^^^^^\n"), "{s}");
        assert!(s.contains("hint: did you mean `instance_types`?"), "{s}");
    }

    /// A huge line shows a window around the caret, not the whole line.
    #[test]
    fn long_lines_are_cut_around_the_caret() {
        let line = format!("x = \"{}\" y = 1", "a".repeat(100_000));
        let src = SourceText::new("images/x.toml".into(), format!("{line}\n"));
        let at = line.len() - 5;
        let s = src.diag(ErrorKind::Syntax, at..at + 1, "oops").to_string();
        assert!(s.len() < 600, "{}", s.len());
        let shown = s
            .lines()
            .find(|l| l.starts_with("1 | "))
            .expect("source line");
        let caret = s
            .lines()
            .find(|l| l.trim_start().starts_with("| ") && l.contains('^'))
            .expect("caret");
        let at_char = caret.chars().position(|c| c == '^').expect("^");
        assert_eq!(shown.chars().nth(at_char), Some('y'), "{shown}\n{caret}");
        assert!(shown.starts_with("1 | …"), "{shown}");
    }
}
