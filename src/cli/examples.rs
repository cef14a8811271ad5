//! The command lines of `examples/ci/` parse with this CLI: an example that names a flag bakery
//! no longer has fails here, not in a team's nightly build.

use std::path::{Path, PathBuf};

use clap::Parser;

use super::Cli;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("examples/ci") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every `bakery …` invocation in `text`: a line that starts with `bakery ` (after indentation,
/// or after `ExecStart=/usr/local/bin/`), cut where the shell takes over (`>`, `|`, `&&`, `;`).
fn invocations(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("ExecStart=/usr/local/bin/").unwrap_or(l);
            l.starts_with("bakery ").then(|| {
                let end = l.find(['>', '|', '&', ';']).unwrap_or(l.len());
                l[..end].trim().to_string()
            })
        })
        .collect()
}

/// Shell words, with double-quoted words kept whole and `$IMAGE` standing for an image name.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cur, mut quoted, mut any) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out.into_iter()
        .map(|w| w.replace("$IMAGE", "teamcity-agent-linux"))
        .collect()
}

#[test]
fn every_bakery_command_line_in_the_ci_examples_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci");
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut seen = 0;
    for f in &all {
        let text = std::fs::read_to_string(f).expect("read example");
        for line in invocations(&text) {
            seen += 1;
            if let Err(e) = Cli::try_parse_from(words(&line)) {
                panic!("{}: `{line}` does not parse:\n{e}", f.display());
            }
        }
    }
    // The workflow's plan and three level bakes, TeamCity's plan and bake, the service.
    assert!(
        seen >= 7,
        "found {seen} bakery command lines in {}",
        root.display()
    );
}

#[test]
fn the_extraction_cuts_where_the_shell_takes_over() {
    assert_eq!(
        invocations("  bakery plan --target prod --exit-code || rc=$?\nExecStart=/usr/local/bin/bakery bake --changed --target prod\necho bakery plan"),
        ["bakery plan --target prod --exit-code", "bakery bake --changed --target prod"]
    );
    assert_eq!(
        words(r#"bakery bake "$IMAGE" --manifest "out/$IMAGE.json""#),
        [
            "bakery",
            "bake",
            "teamcity-agent-linux",
            "--manifest",
            "out/teamcity-agent-linux.json"
        ]
    );
    // A flag that does not exist fails to parse (the test above can fail).
    assert!(Cli::try_parse_from(words("bakery plan --levels --no-such-flag")).is_err());
}
