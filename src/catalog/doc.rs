//! A parsed TOML file that keeps the span of every key and value, and deserializes into `Raw*`
//! types while collecting every serde error (recovering by dropping the offending entry and
//! trying again), so one run reports all problems in a file, not just the first.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, Deserializer};
use toml::Spanned;

use super::diag::{did_you_mean, Diagnostic, Diagnostics, ErrorKind, SourceText};

/// More serde errors than this in one file and we stop recovering: the file is not what we think.
const MAX_RECOVERIES: usize = 64;

/// A path into a TOML document: `build.instance_types[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DocPath(Vec<Seg>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    Key(String),
    Index(usize),
}

impl DocPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }
    pub fn k(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }
    pub fn i(&self, idx: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(idx));
        p
    }
    fn parent(&self) -> Self {
        let mut p = self.clone();
        p.0.pop();
        p
    }
}

impl fmt::Display for DocPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if n == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// A TOML file, parsed with spans, plus what recovery removed from it.
pub struct Doc {
    pub src: Arc<SourceText>,
    root: Spanned<DeTable<'static>>,
    removed: HashSet<DocPath>,
}

impl Doc {
    /// Parses `src`; syntax errors (all of them) go to `diags` and give `None`.
    pub fn parse(src: SourceText, diags: &mut Diagnostics) -> Option<Doc> {
        let text: &'static str = Box::leak(src.text.clone().into_boxed_str());
        let (mut root, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            // The parser recovers and may report follow-on errors on the same line; the first one
            // on a line is the one the user needs.
            let mut lines = HashSet::new();
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                let d = src.diag(ErrorKind::Syntax, span, clean_message(e.message()));
                if lines.insert(d.line) {
                    diags.push(d);
                }
            }
            // SAFETY of the leak above: the text lives as long as the process; we parse each
            // catalog file once, so the leak is bounded by the catalog size.
            return None;
        }
        root.get_mut().make_owned();
        Some(Doc {
            src: Arc::new(src),
            root,
            removed: HashSet::new(),
        })
    }

    /// Deserializes into `T`, reporting every unknown field and wrong type: each error drops the
    /// entry it points at and deserialization runs again. Returns `None` only if recovery failed.
    pub fn deserialize<T: DeserializeOwned>(&mut self, diags: &mut Diagnostics) -> Option<T> {
        for _ in 0..MAX_RECOVERIES {
            let de = Deserializer::from(self.root.clone());
            match T::deserialize(de) {
                Ok(v) => return Some(v),
                Err(e) => {
                    let span = e.span();
                    let found = span.as_ref().and_then(|s| self.entry_at(s.start));
                    let d = self.serde_diag(e.message(), span.clone(), found.as_ref());
                    let Some((path, _, _)) = found else {
                        diags.push(d);
                        return None;
                    };
                    // A misspelt field is not also reported as missing under its right name.
                    if let Some(meant) = d
                        .hint
                        .as_deref()
                        .and_then(|h| h.strip_prefix("did you mean `"))
                    {
                        let meant = meant.trim_end_matches("`?");
                        self.removed.insert(path.parent().k(meant));
                    }
                    diags.push(d);
                    self.remove(&path);
                    self.removed.insert(path);
                }
            }
        }
        None
    }

    /// Whether recovery dropped this entry, or a misspelling of it (so "missing" is not
    /// reported on top).
    pub fn was_removed(&self, path: &DocPath) -> bool {
        self.removed.contains(path)
    }

    /// Whether recovery dropped anything inside `path` (a misspelt kind key of a step, say).
    pub fn was_removed_under(&self, path: &DocPath) -> bool {
        self.removed.iter().any(|r| r.0.starts_with(&path.0))
    }

    /// The string at `path`, if there is one.
    pub fn string(&self, path: &DocPath) -> Option<String> {
        let mut cur = self.root.get_ref();
        let (last, parents) = path.0.split_last()?;
        for s in parents {
            let Seg::Key(k) = s else { return None };
            match cur.get(k.as_str()).map(|v| v.get_ref()) {
                Some(DeValue::Table(t)) => cur = t,
                _ => return None,
            }
        }
        let Seg::Key(k) = last else { return None };
        match cur.get(k.as_str()).map(|v| v.get_ref()) {
            Some(DeValue::String(s)) => Some(s.to_string()),
            _ => None,
        }
    }

    /// Span of the value at `path`, or of the nearest ancestor that exists.
    pub fn span(&self, path: &DocPath) -> Range<usize> {
        let mut p = path.clone();
        loop {
            if let Some((_, v)) = self.lookup(&p) {
                return v;
            }
            if p.0.is_empty() {
                return 0..0;
            }
            p = p.parent();
        }
    }

    /// Span of the key at `path` (falls back to the value's span).
    pub fn key_span(&self, path: &DocPath) -> Range<usize> {
        match self.lookup(path) {
            Some((Some(k), _)) => k,
            _ => self.span(path),
        }
    }

    /// A diagnostic at the value of `path`.
    pub fn at(&self, path: &DocPath, kind: ErrorKind, msg: impl Into<String>) -> Diagnostic {
        self.src.diag(kind, self.span(path), msg)
    }

    /// A diagnostic at the key of `path`.
    pub fn at_key(&self, path: &DocPath, kind: ErrorKind, msg: impl Into<String>) -> Diagnostic {
        self.src.diag(kind, self.key_span(path), msg)
    }

    /// A diagnostic at the first occurrence of `needle` inside the value at `path` (for a word in
    /// a template string); at the value itself when it is not found.
    pub fn at_text(
        &self,
        path: &DocPath,
        needle: &str,
        kind: ErrorKind,
        msg: impl Into<String>,
    ) -> Diagnostic {
        let span = self.span(path);
        let hay = &self.src.text[span.clone()];
        match hay.find(needle).filter(|_| !needle.is_empty()) {
            Some(i) => self
                .src
                .diag(kind, span.start + i..span.start + i + needle.len(), msg),
            None => self.src.diag(kind, span, msg),
        }
    }

    /// (key span, value span) of the entry at `path`.
    fn lookup(&self, path: &DocPath) -> Option<(Option<Range<usize>>, Range<usize>)> {
        let mut key: Option<Range<usize>> = None;
        let mut cur: &Spanned<DeValue<'static>>;
        let mut segs = path.0.iter();
        let Some(first) = segs.next() else {
            return Some((None, self.root.span()));
        };
        let Seg::Key(k) = first else { return None };
        let (kk, vv) = self.root.get_ref().get_key_value(k.as_str())?;
        key = Some(kk.span()).or(key);
        cur = vv;
        for s in segs {
            match (s, cur.get_ref()) {
                (Seg::Key(k), DeValue::Table(t)) => {
                    let (kk, vv) = t.get_key_value(k.as_str())?;
                    key = Some(kk.span());
                    cur = vv;
                }
                (Seg::Index(i), DeValue::Array(a)) => {
                    cur = a.get(*i)?;
                    key = None;
                }
                _ => return None,
            }
        }
        Some((key, cur.span()))
    }

    /// The deepest keyed entry whose key or value contains `offset`.
    fn entry_at(&self, offset: usize) -> Option<(DocPath, Range<usize>, bool)> {
        fn walk(
            v: &DeValue<'static>,
            path: &DocPath,
            offset: usize,
            best: &mut Option<(DocPath, Range<usize>, bool)>,
        ) {
            match v {
                DeValue::Table(t) => {
                    for (k, val) in t.iter() {
                        let p = path.k(k.get_ref());
                        let ks = k.span();
                        let vs = val.span();
                        let on_key = ks.contains(&offset) || (ks.start == offset && ks.is_empty());
                        if on_key || vs.contains(&offset) || vs.start == offset {
                            *best = Some((p.clone(), if on_key { ks } else { vs }, on_key));
                        }
                        // Table headers make a table's own span cover only the header, so look
                        // inside every table, not just the ones whose span holds the offset.
                        walk(val.get_ref(), &p, offset, best);
                    }
                }
                DeValue::Array(a) => {
                    for (i, val) in a.iter().enumerate() {
                        walk(val.get_ref(), &path.i(i), offset, best);
                    }
                }
                _ => {}
            }
        }
        let mut best = None;
        walk(
            &DeValue::Table(self.root.get_ref().clone()),
            &DocPath::root(),
            offset,
            &mut best,
        );
        best
    }

    fn remove(&mut self, path: &DocPath) {
        fn remove_in(v: &mut DeValue<'static>, segs: &[Seg]) {
            match (segs, v) {
                ([Seg::Key(k)], DeValue::Table(t)) => {
                    t.remove(k.as_str());
                }
                ([Seg::Key(k), rest @ ..], DeValue::Table(t)) => {
                    if let Some(next) = t.get_mut(k.as_str()) {
                        remove_in(next.get_mut(), rest);
                    }
                }
                ([Seg::Index(i), rest @ ..], DeValue::Array(a)) if !rest.is_empty() => {
                    if let Some(next) = a.get_mut(*i) {
                        remove_in(next.get_mut(), rest);
                    }
                }
                _ => {}
            }
        }
        let mut root = DeValue::Table(std::mem::take(self.root.get_mut()));
        remove_in(&mut root, &path.0);
        if let DeValue::Table(t) = root {
            *self.root.get_mut() = t;
        }
    }

    fn serde_diag(
        &self,
        raw: &str,
        span: Option<Range<usize>>,
        found: Option<&(DocPath, Range<usize>, bool)>,
    ) -> Diagnostic {
        let msg = clean_message(raw);
        let span = match found {
            Some((_, s, _)) if msg.starts_with("unknown field") => s.clone(),
            _ => span.unwrap_or(0..0),
        };
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or_default();
            let d = self.src.diag(
                ErrorKind::UnknownField,
                span,
                format!("unknown field `{name}`"),
            );
            return with_expected_hint(d, name, &msg);
        }
        if let Some(rest) = msg.strip_prefix("unknown variant `") {
            let name = rest.split('`').next().unwrap_or_default();
            let d = self.src.diag(
                ErrorKind::InvalidValue,
                span,
                format!("unknown value `{name}`"),
            );
            return with_expected_hint(d, name, &msg);
        }
        if let Some(rest) = msg.strip_prefix("invalid type: ") {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
            // serde names our Raw* types; users know tables.
            let expected = if expected.starts_with("struct ") {
                "a table"
            } else {
                expected
            };
            return self.src.diag(
                ErrorKind::WrongType,
                span,
                format!("wrong type: expected {expected}, found {found}"),
            );
        }
        if let Some(rest) = msg.strip_prefix("missing field `") {
            let name = rest.split('`').next().unwrap_or_default();
            return self.src.diag(
                ErrorKind::MissingField,
                span,
                format!("missing field `{name}`"),
            );
        }
        self.src.diag(ErrorKind::InvalidValue, span, msg)
    }
}

/// "unknown field `x`, expected one of `a`, `b`" -> hint "did you mean `a`?" or the list.
fn with_expected_hint(d: Diagnostic, name: &str, msg: &str) -> Diagnostic {
    let expected: Vec<&str> = msg
        .split_once("expected ")
        .map(|(_, list)| {
            list.split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, s)| s)
                .collect()
        })
        .unwrap_or_default();
    match did_you_mean(name, expected.iter().copied()) {
        Some(best) => d.with_hint(format!("did you mean `{best}`?")),
        None if expected.is_empty() => d.with_hint("this table takes no fields"),
        None => d.with_hint(format!("expected one of: {}", expected.join(", "))),
    }
}

/// toml's messages can carry a trailing newline and a rendered snippet; keep the first line.
fn clean_message(m: &str) -> String {
    m.lines().next().unwrap_or(m).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        name: Option<String>,
        build: Option<Build>,
    }
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Build {
        instance_types: Option<Vec<String>>,
        size: Option<u32>,
    }

    fn run(text: &str) -> (Option<Raw>, Diagnostics, Doc) {
        let mut diags = Diagnostics::default();
        let mut doc =
            Doc::parse(SourceText::new("t.toml".into(), text.into()), &mut diags).unwrap();
        let raw = doc.deserialize::<Raw>(&mut diags);
        (raw, diags, doc)
    }

    #[test]
    fn every_serde_error_is_reported_once_with_its_place() {
        let (raw, diags, doc) = run(
            "name = 3\nnmae = \"x\"\n[build]\ninstance_type = [\"m5.large\"]\nsize = \"big\"\n",
        );
        let got: Vec<_> = diags.iter().map(|d| (d.kind, d.line, d.col)).collect();
        assert!(raw.is_some(), "{diags}");
        assert_eq!(got.len(), 4, "{diags}");
        assert!(got.contains(&(ErrorKind::WrongType, 1, 8)), "{got:?}");
        assert!(got.contains(&(ErrorKind::UnknownField, 2, 1)), "{got:?}");
        assert!(got.contains(&(ErrorKind::UnknownField, 4, 1)), "{got:?}");
        assert!(got.contains(&(ErrorKind::WrongType, 5, 8)), "{got:?}");
        let hint = diags
            .iter()
            .find(|d| d.line == 4)
            .and_then(|d| d.hint.clone());
        assert_eq!(hint.as_deref(), Some("did you mean `instance_types`?"));
        assert!(doc.was_removed(&DocPath::root().k("name")));
        assert!(doc.was_removed(&DocPath::root().k("build").k("size")));
    }

    #[test]
    fn paths_find_spans() {
        let (_, diags, doc) = run("[build]\ninstance_types = [\"a\", \"b\"]\n");
        assert!(diags.is_empty());
        let p = DocPath::root().k("build").k("instance_types").i(1);
        assert_eq!(p.to_string(), "build.instance_types[1]");
        let d = doc.at(&p, ErrorKind::InvalidInstanceType, "x");
        assert_eq!((d.line, d.col), (2, 24));
        let k = doc.at_key(
            &DocPath::root().k("build").k("instance_types"),
            ErrorKind::Io,
            "x",
        );
        assert_eq!((k.line, k.col), (2, 1));
    }

    #[test]
    fn syntax_errors_are_located() {
        let mut diags = Diagnostics::default();
        let doc = Doc::parse(
            SourceText::new("t.toml".into(), "a = 1\nb = = 2\n".into()),
            &mut diags,
        );
        assert!(doc.is_none());
        assert_eq!(diags.0[0].kind, ErrorKind::Syntax);
        assert_eq!(diags.0[0].line, 2);
    }
}
