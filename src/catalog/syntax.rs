//! Scripts parsed before anything runs: the bash and PowerShell a recipe ships or inlines, after
//! rendering, with tree-sitter's grammars (`tree-sitter-bash`, the official grammar;
//! `tree-sitter-powershell` from airbus-cert, the only maintained PowerShell grammar with a
//! crate, and no PowerShell can be installed on the machines that validate). A syntax error is
//! an error; the well-known traps are warnings.
//!
//! The PowerShell grammar has gaps: it rejects some valid scripts. Those that bakery's own
//! scripts or the shipped catalog hit are worked around here (numeric multiplier suffixes such
//! as `1MB`), each with a test, so that a grammar gap never fails a valid bake. The README's
//! "What validate checks" lists them.

use std::ops::Range;
use std::sync::LazyLock;

use std::collections::BTreeMap;

use regex::Regex;
use tree_sitter::{Node, Parser};

use super::diag::{Diagnostic, ErrorKind};
use super::model::{ParamValue, Template};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Bash,
    PowerShell,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Bash => "bash",
            Lang::PowerShell => "PowerShell",
        }
    }
}

/// One finding in a script: where (byte range in the text given) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub range: Range<usize>,
    pub message: String,
}

/// PowerShell's numeric multiplier suffixes (`1MB`, `2.5gb`), which the grammar does not know:
/// replaced by digits of the same length before parsing, so positions stay.
static PS_MULTIPLIER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(\d+(?:\.\d+)?)(kb|mb|gb|tb|pb)\b").expect("regex"));

/// `switch` clauses on one line (`{ 'a' { 1 } 'b' { 2 } }`), which the grammar wants separated
/// (PowerShell accepts a newline or `;`): the first space between `}` and the next clause's
/// condition becomes `;`.
static PS_CLAUSES_ON_ONE_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\} ( *(?:'(?:[^'\n]|'')*'|"[^"\n]*"|default|-?\d+) *\{)"#).expect("regex")
});

/// Text that PowerShell parses the same way for syntax, with the grammar's gaps papered over;
/// every byte stays where it was.
fn powershell_for_grammar(text: &str) -> String {
    let t = PS_MULTIPLIER.replace_all(text, |c: &regex::Captures| format!("{}00", &c[1]));
    // Twice: a match consumes the `}` that ends the next clause's own match.
    let mut t = t.into_owned();
    for _ in 0..2 {
        t = PS_CLAUSES_ON_ONE_LINE
            .replace_all(&t, |c: &regex::Captures| format!("}};{}", &c[1]))
            .into_owned();
    }
    t
}

fn parse(lang: Lang, text: &str) -> Option<tree_sitter::Tree> {
    let mut p = Parser::new();
    let language: tree_sitter::Language = match lang {
        Lang::Bash => tree_sitter_bash::LANGUAGE.into(),
        Lang::PowerShell => tree_sitter_powershell::LANGUAGE.into(),
    };
    p.set_language(&language).ok()?;
    p.parse(text, None)
}

/// The syntax errors of `text`: the first one in source order (later ones are mostly its
/// echoes), as "missing `}`" or "unexpected `...`".
pub fn errors(lang: Lang, text: &str) -> Vec<Finding> {
    let prepared;
    let text = match lang {
        Lang::PowerShell => {
            prepared = powershell_for_grammar(text);
            prepared.as_str()
        }
        Lang::Bash => text,
    };
    let Some(tree) = parse(lang, text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    first_error(tree.root_node(), text, &mut out);
    out.truncate(1);
    out
}

/// The first error in source order, or nothing. Iterative: a script nested thousands deep must
/// not overflow the stack.
fn first_error(root: Node, text: &str, out: &mut Vec<Finding>) {
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        if !(n.has_error() || n.is_missing()) {
            continue;
        }
        if n.is_missing() {
            out.push(missing(n, text));
            return;
        }
        if n.is_error() {
            // The innermost missing piece says more than the error around it.
            let mut c = n.walk();
            if let Some(m) = n.children(&mut c).find(|ch| ch.is_missing()) {
                out.push(missing(m, text));
                return;
            }
            let r = n.byte_range();
            let snippet: String = text
                .get(r.clone())
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(40)
                .collect();
            out.push(Finding {
                range: r.start..r.start + snippet.len(),
                message: if snippet.trim().is_empty() {
                    "syntax error".to_string()
                } else {
                    format!("syntax error near `{}`", snippet.trim())
                },
            });
            return;
        }
        let mut c = n.walk();
        let children: Vec<Node> = n.children(&mut c).collect();
        stack.extend(children.into_iter().rev());
    }
}

/// A missing token, reported at the construct it should have closed.
fn missing(n: Node, text: &str) -> Finding {
    // The parser notices at the end; the construct left open is where to look.
    let (at, opener) = match n.parent() {
        Some(p) if p.start_byte() < n.start_byte() => {
            let word: String = text
                .get(p.byte_range())
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .chars()
                .take(20)
                .collect();
            (p.start_byte(), Some(word))
        }
        _ => (n.start_byte(), None),
    };
    let len = opener.as_ref().map_or(0, String::len);
    Finding {
        range: at..at + len,
        message: match opener {
            Some(w) if !w.is_empty() => format!("`{w}` is never closed: missing `{}`", n.kind()),
            _ => format!("missing `{}`", n.kind()),
        },
    }
}

/// Well-known PowerShell traps, as warnings: `Write-Host` of a variable that holds a secret,
/// `$ErrorActionPreference` set back to `Continue` (later failures pass silently), `exit`
/// inside a function (it ends the whole script), `Invoke-Expression` of something downloaded.
pub fn traps(lang: Lang, text: &str) -> Vec<Finding> {
    if lang != Lang::PowerShell {
        return Vec::new();
    }
    static SECRET_ECHO: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?im)\b(Write-Host|Write-Output|echo)\b[^\n;|]*\$env:BAKERY_SECRET_\w+")
            .expect("regex")
    });
    static EAP_CONTINUE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r#"(?im)^\s*\$ErrorActionPreference\s*=\s*['"]?(Continue|SilentlyContinue)['"]?\s*$"#,
        )
        .expect("regex")
    });
    static IEX_DOWNLOAD: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)\b(Invoke-Expression|iex)\b[^\n]*\b(Invoke-WebRequest|iwr|Invoke-RestMethod|irm|DownloadString|curl|wget)\b|\b(Invoke-WebRequest|iwr|Invoke-RestMethod|irm|DownloadString)\b[^\n]*\|\s*(Invoke-Expression|iex)\b")
            .expect("regex")
    });
    let mut out = Vec::new();
    let mut at = |re: &Regex, message: &str| {
        for m in re.find_iter(text) {
            let s = m.start() + (m.as_str().len() - m.as_str().trim_start().len());
            out.push(Finding {
                range: s..m.end(),
                message: message.to_string(),
            });
        }
    };
    at(
        &SECRET_ECHO,
        "a secret is written to the output, which bakery logs: drop it from the message",
    );
    at(
        &EAP_CONTINUE,
        "$ErrorActionPreference is set back to Continue: failures after this line no longer fail the step (scope it in a script block, or restore 'Stop')",
    );
    at(
        &IEX_DOWNLOAD,
        "Invoke-Expression of downloaded content runs whatever the server sends: download a pinned file and check its sha256 (a download step) instead",
    );
    if let Some(tree) = parse(lang, &powershell_for_grammar(text)) {
        exit_in_function(tree.root_node(), text, &mut out);
    }
    out.sort_by_key(|f| f.range.start);
    out
}

fn exit_in_function(root: Node, text: &str, out: &mut Vec<Finding>) {
    let mut stack = vec![(root, false)];
    while let Some((n, inside)) = stack.pop() {
        let inside = inside || n.kind() == "function_statement";
        if inside && n.kind() == "flow_control_statement" {
            let t = text.get(n.byte_range()).unwrap_or("");
            if t.trim_start().to_ascii_lowercase().starts_with("exit") {
                out.push(Finding {
                    range: n.start_byte()..n.start_byte() + 4,
                    message: "`exit` inside a function ends the whole script, not the function: use return, or throw".into(),
                });
            }
        }
        let mut c = n.walk();
        let children: Vec<Node> = n.children(&mut c).collect();
        stack.extend(children.into_iter().rev().map(|ch| (ch, inside)));
    }
}

/// The line of `template` (0-based) that rendered as line `rendered_line` of `rendered`: the
/// template line with the same text nearest to that line number, else the nearest one whose
/// literal parts (outside `{{ }}`, `{% %}`) all appear in it, else the same line number.
pub fn template_line(template: &str, rendered: &str, rendered_line: usize) -> usize {
    let want = rendered.lines().nth(rendered_line).unwrap_or("");
    let lines: Vec<&str> = template.lines().collect();
    let nearest = |pred: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| pred(l))
            .min_by_key(|(i, _)| i.abs_diff(rendered_line))
            .map(|(i, _)| i)
    };
    static TAG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}").expect("regex"));
    nearest(&|l| l == want && !want.trim().is_empty())
        .or_else(|| {
            nearest(&|l| {
                if !TAG.is_match(l) {
                    return false;
                }
                let mut rest = want;
                for part in TAG.split(l).map(str::trim).filter(|p| !p.is_empty()) {
                    match rest.find(part) {
                        Some(i) => rest = &rest[i + part.len()..],
                        None => return false,
                    }
                }
                true
            })
        })
        .unwrap_or(rendered_line.min(lines.len().saturating_sub(1)))
}

/// The script in user data, as the instance's agent runs it: on Windows the `<powershell>`
/// block (the rest blanked out, positions kept), on Linux a shell script (`#!` naming sh or bash).
/// `None` for anything else (cloud-config, other interpreters).
pub fn user_data_script(text: &str, windows: bool) -> Option<(Lang, String)> {
    if windows {
        let open = text.find("<powershell>")?;
        let body = open + "<powershell>".len();
        let close = text[body..]
            .find("</powershell>")
            .map_or(text.len(), |i| body + i);
        let blank = |s: &str| -> String {
            s.chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' })
                .collect()
        };
        let mut out = blank(&text[..body]);
        out.push_str(&text[body..close]);
        out.push_str(&blank(&text[close..]));
        return Some((Lang::PowerShell, out));
    }
    let first = text.lines().next()?;
    let shell = first.starts_with("#!")
        && ["/sh", "/bash", "env sh", "env bash"]
            .iter()
            .any(|s| first.contains(s));
    shell.then(|| (Lang::Bash, text.to_string()))
}

/// Where `range` of the rendered `script` is in the template's file, and a note naming the
/// rendered line when the template's own text differs from what ran.
fn locate(t: &Template, script: &str, range: Range<usize>) -> (Range<usize>, Option<String>) {
    let start = range.start.min(script.len());
    let rline = script[..start].matches('\n').count();
    let line_start = script[..start].rfind('\n').map_or(0, |i| i + 1);
    let col = start - line_start;
    let (off, note) = if script == t.text {
        (start, None)
    } else {
        let tline = template_line(&t.text, script, rline);
        let tstart: usize = t.text.split_inclusive('\n').take(tline).map(str::len).sum();
        let tlen = t.text[tstart..].find('\n').unwrap_or(t.text.len() - tstart);
        let shown = script.lines().nth(rline).unwrap_or("").trim();
        (
            tstart + col.min(tlen),
            (!shown.is_empty()).then(|| {
                format!(
                    "rendered, it is line {} of the script: `{shown}`",
                    rline + 1
                )
            }),
        )
    };
    if t.exact {
        let len = range.len().max(1);
        (t.offset + off..t.offset + off + len, note)
    } else {
        (t.offset..t.offset + 1, note)
    }
}

/// A rendered script's syntax error (an error) and traps (warnings), located in the template
/// it came from.
pub fn check_script(t: &Template, script: &str, lang: Lang) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut errs = Vec::new();
    for f in errors(lang, script) {
        let (span, note) = locate(t, script, f.range);
        let d = t.src.diag(
            ErrorKind::ScriptSyntax,
            span,
            format!("{} syntax error: {}", lang.name(), f.message),
        );
        errs.push(match note {
            Some(n) => d.with_hint(format!("{n}. It would fail on the instance, after launch")),
            None => d.with_hint("it would fail on the instance, after launch"),
        });
    }
    let mut warns = Vec::new();
    for f in traps(lang, script) {
        let (span, _) = locate(t, script, f.range);
        warns.push(t.src.diag(ErrorKind::ScriptTrap, span, f.message).warning());
    }
    (errs, warns)
}

/// `{{ ... }}` expressions of a script template that put a text parameter in without the `sh`
/// or `ps` filter: a value with a quote or `$(...)` in it would change the script.
pub fn unquoted_params(
    t: &Template,
    params: &BTreeMap<String, ParamValue>,
    lang: Lang,
) -> Vec<Diagnostic> {
    static EXPR: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\{\{-?(.*?)-?\}\}").expect("regex"));
    static PARAM: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\bparams\.([A-Za-z_][A-Za-z0-9_]*)").expect("regex"));
    let filter = match lang {
        Lang::Bash => "sh",
        Lang::PowerShell => "ps",
    };
    let mut out = Vec::new();
    for m in EXPR.captures_iter(&t.text) {
        let expr = m[1].trim();
        let last = expr.rsplit('|').next().unwrap_or("").trim();
        if expr.contains('|') && (last == "sh" || last == "ps") {
            continue;
        }
        let Some(p) = PARAM.captures(expr) else {
            continue;
        };
        let name = &p[1];
        // Numbers and booleans cannot change a script; a secret renders as a quoted variable.
        if !matches!(
            params.get(name),
            Some(ParamValue::String(_) | ParamValue::List(_))
        ) {
            continue;
        }
        let whole = m.get(0).map_or(0..0, |g| g.range());
        let span = if t.exact {
            t.offset + whole.start..t.offset + whole.end
        } else {
            t.offset..t.offset + 1
        };
        out.push(
            t.src
                .diag(
                    ErrorKind::UnquotedParam,
                    span,
                    format!("parameter `{name}` goes into the {} script unquoted", lang.name()),
                )
                .with_hint(format!(
                    "a value with a quote, a newline or `$(...)` would change the script: write {{{{ params.{name} | {filter} }}}}"
                ))
                .warning(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(lang: Lang, text: &str) -> Option<(usize, String)> {
        errors(lang, text).into_iter().next().map(|f| {
            let line = text[..f.range.start].matches('\n').count() + 1;
            (line, f.message)
        })
    }

    #[test]
    fn finds_real_mistakes_with_their_line() {
        let (line, m) =
            first(Lang::PowerShell, "$a = 1\nif ($a) {\n  Write-Output 'x'\n").expect("error");
        assert!(m.contains("missing `}`"), "{m}");
        assert!(line >= 2, "{line}");
        assert!(first(Lang::PowerShell, "Write-Output \"unclosed\n$b = 2\n").is_some());
        let (line, m) = first(Lang::Bash, "echo a\nif true; then\n  echo hi\n").expect("error");
        assert_eq!(m, "`if` is never closed: missing `fi`");
        assert_eq!(line, 2);
        assert!(first(Lang::Bash, "echo 'unclosed\n").is_some());
    }

    #[test]
    fn valid_scripts_are_clean_including_the_grammar_gaps() {
        for ok in [
            "$size = [int64]$sizeMb * 1MB\n$x = $current / 1mb\n",
            "foreach ($n in 'Application', 'System') { Write-Output $n }\n",
            "$s = 'it''s'\n$t = \"a $($s) b\"\nif ($s) { exit 1 }\n",
            "$m = $(switch ($s) { 'Automatic' { 'auto' } 'Manual' { 'manual' } default { $_.ToLower() } })\n",
            "switch ($n) { 1 { 'one' } -2 { 'minus two' } \"x\" { 'x' } }\n",
        ] {
            assert_eq!(errors(Lang::PowerShell, ok), vec![], "{ok}");
        }
        assert_eq!(
            errors(
                Lang::Bash,
                "set -euo pipefail\nfor f in a b; do echo \"$f\"; done\n"
            ),
            vec![]
        );
    }

    #[test]
    fn traps_are_warnings_with_places() {
        let t = "function Install {\n  exit 3\n}\n$ErrorActionPreference = 'Continue'\nWrite-Host \"token $env:BAKERY_SECRET_TOKEN\"\niex (Invoke-WebRequest https://x).Content\n";
        let found: Vec<String> = traps(Lang::PowerShell, t)
            .into_iter()
            .map(|f| f.message)
            .collect();
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].starts_with("`exit` inside a function"));
        assert!(found[1].contains("ErrorActionPreference"));
        assert!(found[2].contains("a secret is written"));
        assert!(found[3].contains("Invoke-Expression"));
        assert!(traps(Lang::PowerShell, "exit 0\n").is_empty());
        assert!(traps(Lang::Bash, t).is_empty());
    }

    #[test]
    fn rendered_lines_map_back_to_template_lines() {
        let template = "a\n{% if x %}\nb {{ v }} c\n{% endif %}\nd\n";
        let rendered = "a\n\nb 1 c\n\nd\n";
        assert_eq!(template_line(template, rendered, 0), 0);
        assert_eq!(template_line(template, rendered, 2), 2);
        assert_eq!(template_line(template, rendered, 4), 4);
    }
}
