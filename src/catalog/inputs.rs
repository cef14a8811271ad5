//! `[inputs.<name>]` of an image or recipe: live values read at plan and bake time (the sha256
//! of what a URL serves, the value of an SSM parameter), part of the fingerprint and of the
//! template context as `inputs.<name>.sha256` / `.value` / `.source`.

use std::collections::BTreeMap;

use super::diag::{Diagnostics, ErrorKind};
use super::doc::{Doc, DocPath};
use super::model::{Input, InputKind};
use super::raw::RawInput;
use super::recipe::inline_template;
use super::values;

/// An input's name: lowercase letters, digits and `_`, starting with a letter.
fn input_name(s: &str) -> Result<(), String> {
    if values::snake_name(s, false) {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not an input name: use lowercase letters, digits and _, starting with a letter (it is read as inputs.{s} in templates)"
        ))
    }
}

/// The name of an environment variable: letters, digits and `_`, not starting with a digit.
/// The error does not repeat the value: it may be a token pasted in the wrong place.
fn env_name(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(())
    } else {
        Err("bearer_token_env is not an environment variable name (letters, digits and _, not starting with a digit): it names the variable that holds the token, never the token itself".into())
    }
}

fn templated(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Validates `raw` (the table at `base`) with located errors.
pub fn validate(
    doc: &Doc,
    base: &DocPath,
    raw: &BTreeMap<String, RawInput>,
    label: &str,
    diags: &mut Diagnostics,
) -> Vec<Input> {
    let mut out = Vec::new();
    for (name, r) in raw {
        let path = base.k(name);
        if let Err(e) = input_name(name) {
            diags.push(doc.at_key(&path, ErrorKind::InvalidValue, e));
            continue;
        }
        let (kind, text, at) = match (&r.http, &r.ssm_parameter) {
            (Some(u), None) => (InputKind::Http, u, path.k("http")),
            (None, Some(p)) => (InputKind::SsmParameter, p, path.k("ssm_parameter")),
            _ => {
                diags.push(
                    doc.at_key(
                        &path,
                        ErrorKind::MissingField,
                        format!("input `{name}` needs exactly one of http, ssm_parameter"),
                    )
                    .with_hint("http = \"https://…\" (the sha256 of what it serves) or ssm_parameter = \"/…\" (its value)"),
                );
                continue;
            }
        };
        let only_http = |key: &str| {
            doc.at_key(
                &path.k(key),
                ErrorKind::InvalidValue,
                format!("`{key}` is for an http input; input `{name}` reads an SSM parameter"),
            )
            .with_hint("remove it, or read the value over http")
        };
        let kind = match (kind, r.body.as_deref()) {
            (InputKind::Http, None | Some("sha256")) => InputKind::Http,
            (InputKind::Http, Some("text")) => InputKind::HttpText,
            (InputKind::Http, Some(other)) => {
                diags.push(
                    doc.at(
                        &path.k("body"),
                        ErrorKind::InvalidValue,
                        format!("body = \"{other}\" is not a way to read a body"),
                    )
                    .with_hint("\"sha256\" (the default: the sha256 of the body) or \"text\" (the body itself, at most 4 KiB)"),
                );
                continue;
            }
            (k, None) => k,
            (_, Some(_)) => {
                diags.push(only_http("body"));
                continue;
            }
        };
        if let Some(v) = &r.bearer_token_env {
            if kind == InputKind::SsmParameter {
                diags.push(only_http("bearer_token_env"));
                continue;
            }
            if let Err(e) = env_name(v) {
                // The line is not shown either: it may hold a token pasted in the wrong place.
                let mut d = doc.at(&path.k("bearer_token_env"), ErrorKind::InvalidValue, e);
                d.source_line = None;
                diags.push(d);
                continue;
            }
        }
        if !templated(text) {
            let r = match kind {
                InputKind::Http | InputKind::HttpText => {
                    if text.starts_with("http://") || text.starts_with("https://") {
                        Ok(())
                    } else {
                        Err(format!("`{text}` is not an http(s) URL"))
                    }
                }
                InputKind::SsmParameter => values::ssm_parameter(text),
            };
            if let Err(e) = r {
                diags.push(doc.at(&at, ErrorKind::InvalidValue, e));
                continue;
            }
        }
        out.push(Input {
            name: name.clone(),
            kind,
            source: inline_template(doc, &at, text, format!("{label} input {name}")),
            token_env: r.bearer_token_env.clone(),
        });
    }
    out
}
