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
        if !templated(text) {
            let r = match kind {
                InputKind::Http => {
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
        });
    }
    out
}
