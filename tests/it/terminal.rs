//! Progress on a terminal: a bake run under a pseudo-terminal (util-linux `script` gives the
//! child one) draws a live line per bake, in colour unless NO_COLOR is set; without a terminal
//! the output is plain lines with no control sequences.

use std::process::{Command, Stdio};

use crate::support::sandbox::Sandbox;
use crate::support::text;

/// The braille frames of indicatif's default spinner.
const SPINNER: &[char] = &['⠁', '⠂', '⠄', '⡀', '⢀', '⠠', '⠐', '⠈'];

/// Runs bakery with `args` in the sandbox on a pseudo-terminal (stdin, stdout and stderr) and
/// returns its exit code and everything it drew.
fn on_a_terminal(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let c = sb.command(args);
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = quote(&c.get_program().to_string_lossy());
    for a in c.get_args() {
        line.push(' ');
        line.push_str(&quote(&a.to_string_lossy()));
    }
    let mut s = Command::new("script");
    s.args(["--quiet", "--return", "--command", &line, "/dev/null"]);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    s.env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("TEAMCITY_VERSION")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let out = s.output().expect("run script(1)");
    (out.status.code(), text(&out.stdout))
}

/// The live lines drawn for `image`: segments between carriage returns and newlines that hold
/// a spinner frame and the image's name.
fn live_lines<'a>(drawn: &'a str, image: &str) -> Vec<&'a str> {
    drawn
        .split(['\r', '\n'])
        .filter(|seg| seg.contains(SPINNER) && seg.contains(image))
        .collect()
}

/// SGR sequences (`ESC [ … m`): colour and bold.
fn sgr_count(s: &str) -> usize {
    s.match_indices("\x1b[")
        .filter(|(i, _)| {
            s[i + 2..]
                .chars()
                .find(|c| !(c.is_ascii_digit() || *c == ';'))
                == Some('m')
        })
        .count()
}

#[test]
fn a_terminal_gets_a_live_line_per_bake_in_colour_unless_no_color() {
    let sb = Sandbox::start();
    let copies = sb.add_demo_copies("copy", 1);

    // Two bakes at once: a live line each, and colour.
    let (code, drawn) = on_a_terminal(
        &sb,
        &["bake", "sandbox-demo", &copies[0], "--target", "sandbox"],
        &[],
    );
    assert_eq!(code, Some(0), "{drawn}");
    for image in ["sandbox-demo", copies[0].as_str()] {
        assert!(
            !live_lines(&drawn, image).is_empty(),
            "no live line for {image}: {drawn:?}"
        );
    }
    assert!(sgr_count(&drawn) > 0, "no colour on a terminal: {drawn:?}");
    assert!(drawn.contains("\x1b[32mbaked\x1b[0m"), "{drawn:?}");

    // NO_COLOR: the live line stays, the colour goes.
    let (code, drawn) = on_a_terminal(
        &sb,
        &["bake", "sandbox-demo", "--target", "sandbox"],
        &[("NO_COLOR", "1")],
    );
    assert_eq!(code, Some(0), "{drawn}");
    assert!(
        !live_lines(&drawn, "sandbox-demo").is_empty(),
        "no live line: {drawn:?}"
    );
    assert_eq!(sgr_count(&drawn), 0, "colour despite NO_COLOR: {drawn:?}");

    // Not a terminal: plain lines, no spinner, no control sequence.
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("==> sandbox-demo"), "{err}");
    assert!(
        !err.contains(SPINNER),
        "a spinner without a terminal: {err:?}"
    );
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}
