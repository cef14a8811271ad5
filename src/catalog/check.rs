//! `[[check]]` tables: exactly one kind key, only that kind's options.

use super::diag::{Diagnostics, ErrorKind};
use super::doc::{Doc, DocPath};
use super::model::{CheckTemplate, Platform};
use super::raw::RawCheck;
use super::values;
use crate::checks::CheckKind;

const KINDS: [&str; 9] = [
    "command",
    "file",
    "service",
    "port",
    "http",
    "package",
    "registry",
    "hotfix",
    "windows_feature",
];

/// Options each kind accepts.
fn options_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "command" => &["exit_code", "stdout_contains", "stdout_matches"],
        "file" => &["exists", "contains", "sha256", "mode"],
        "service" => &["state", "start_mode"],
        "port" => &["listening"],
        "http" => &["status", "body_contains"],
        "package" => &["installed", "version"],
        "registry" => &["value", "equals"],
        "hotfix" | "windows_feature" => &["installed"],
        _ => &[],
    }
}

fn present_kinds(c: &RawCheck) -> Vec<&'static str> {
    let set = [
        c.command.is_some(),
        c.file.is_some(),
        c.service.is_some(),
        c.port.is_some(),
        c.http.is_some(),
        c.package.is_some(),
        c.registry.is_some(),
        c.hotfix.is_some(),
        c.windows_feature.is_some(),
    ];
    KINDS
        .iter()
        .zip(set)
        .filter(|(_, s)| *s)
        .map(|(k, _)| *k)
        .collect()
}

fn present_options(c: &RawCheck) -> Vec<&'static str> {
    let set = [
        ("exit_code", c.exit_code.is_some()),
        ("stdout_contains", c.stdout_contains.is_some()),
        ("stdout_matches", c.stdout_matches.is_some()),
        ("exists", c.exists.is_some()),
        ("contains", c.contains.is_some()),
        ("sha256", c.sha256.is_some()),
        ("mode", c.mode.is_some()),
        ("state", c.state.is_some()),
        ("start_mode", c.start_mode.is_some()),
        ("listening", c.listening.is_some()),
        ("status", c.status.is_some()),
        ("body_contains", c.body_contains.is_some()),
        ("installed", c.installed.is_some()),
        ("version", c.version.is_some()),
        ("value", c.value.is_some()),
        ("equals", c.equals.is_some()),
    ];
    set.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect()
}

/// Validates one check; `platforms` are those the enclosing image or recipe runs on.
pub fn validate(
    raw: &RawCheck,
    doc: &Doc,
    path: &DocPath,
    platforms: &[Platform],
    diags: &mut Diagnostics,
) -> Option<CheckTemplate> {
    let kinds = present_kinds(raw);
    let kind = match kinds.as_slice() {
        [k] => *k,
        [] => {
            if !doc.was_removed_under(path) {
                diags.push(
                    doc.at(path, ErrorKind::MissingField, "a check needs a kind")
                        .with_hint(format!("add one of: {}", KINDS.join(", "))),
                );
            }
            return None;
        }
        [_, second, ..] => {
            diags.push(
                doc.at_key(
                    &path.k(second),
                    ErrorKind::ConflictingFields,
                    format!(
                        "a check has exactly one kind, found {}",
                        kinds.join(" and ")
                    ),
                )
                .with_hint("split it into one [[check]] per kind"),
            );
            return None;
        }
    };
    let mut ok = true;
    for opt in present_options(raw) {
        if !options_of(kind).contains(&opt) {
            ok = false;
            let takes = options_of(kind).join(", ");
            diags.push(
                doc.at_key(
                    &path.k(opt),
                    ErrorKind::ConflictingFields,
                    format!("`{opt}` does not apply to a {kind} check"),
                )
                .with_hint(format!("a {kind} check takes: {takes}")),
            );
        }
    }
    let runs_on: Vec<Platform> = match raw.platform {
        Some(p) => vec![p],
        None => platforms.to_vec(),
    };
    if let Some(p) = raw.platform {
        if !platforms.contains(&p) {
            ok = false;
            diags.push(doc.at(
                &path.k("platform"),
                ErrorKind::PlatformMismatch,
                format!(
                    "this check is for {} but the enclosing definition runs on {}",
                    p.as_str(),
                    names(platforms)
                ),
            ));
        }
    }
    if ["registry", "hotfix", "windows_feature"].contains(&kind)
        && runs_on.contains(&Platform::Linux)
    {
        ok = false;
        diags.push(
            doc.at_key(
                &path.k(kind),
                ErrorKind::PlatformMismatch,
                format!("a {kind} check is Windows only, but this one would run on linux"),
            )
            .with_hint("add platform = \"windows\" to the check, or remove it"),
        );
    }
    if let Some(m) = raw.stdout_matches.as_ref().filter(|m| !is_template(m)) {
        if let Err(e) = regex::Regex::new(m) {
            ok = false;
            let msg = e.to_string().lines().last().unwrap_or_default().to_string();
            diags.push(doc.at(
                &path.k("stdout_matches"),
                ErrorKind::InvalidValue,
                format!("not a valid regular expression: {msg}"),
            ));
        }
    }
    let mode = match &raw.mode {
        Some(m) => match values::file_mode(m) {
            Ok(v) => Some(v),
            Err(e) => {
                ok = false;
                diags.push(doc.at(&path.k("mode"), ErrorKind::InvalidValue, e));
                None
            }
        },
        None => None,
    };
    if let Some(s) = &raw.sha256 {
        if !is_template(s) {
            if let Err(e) = values::sha256(s) {
                ok = false;
                diags.push(doc.at(&path.k("sha256"), ErrorKind::InvalidValue, e));
            }
        }
    }
    if let Some(s) = raw.status {
        if !(100..=599).contains(&s) {
            ok = false;
            diags.push(doc.at(
                &path.k("status"),
                ErrorKind::InvalidValue,
                format!("{s} is not an HTTP status code (100-599)"),
            ));
        }
    }
    if raw.port == Some(0) {
        ok = false;
        diags.push(doc.at(
            &path.k("port"),
            ErrorKind::InvalidValue,
            "port 0 is not a port",
        ));
    }
    for (key, val) in [
        ("command", &raw.command),
        ("file", &raw.file),
        ("service", &raw.service),
        ("http", &raw.http),
        ("package", &raw.package),
        ("registry", &raw.registry),
        ("hotfix", &raw.hotfix),
        ("windows_feature", &raw.windows_feature),
    ] {
        if val.as_deref().is_some_and(|v| v.trim().is_empty()) {
            ok = false;
            diags.push(doc.at(
                &path.k(key),
                ErrorKind::InvalidValue,
                format!("`{key}` is empty"),
            ));
        }
    }
    if !ok {
        return None;
    }
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    let kind = match kind {
        "command" => CheckKind::Command {
            command: s(&raw.command),
            exit_code: raw.exit_code.unwrap_or(0),
            stdout_contains: raw.stdout_contains.clone(),
            stdout_matches: raw.stdout_matches.clone(),
        },
        "file" => CheckKind::File {
            path: s(&raw.file),
            exists: raw.exists.unwrap_or(true),
            contains: raw.contains.clone(),
            sha256: raw.sha256.clone(),
            mode,
        },
        "service" => CheckKind::Service {
            service: s(&raw.service),
            state: raw.state,
            start_mode: raw.start_mode,
        },
        "port" => CheckKind::Port {
            port: raw.port.unwrap_or_default(),
            listening: raw.listening.unwrap_or(true),
        },
        "http" => CheckKind::Http {
            url: s(&raw.http),
            status: raw.status.unwrap_or(200),
            body_contains: raw.body_contains.clone(),
        },
        "package" => CheckKind::Package {
            package: s(&raw.package),
            installed: raw.installed.unwrap_or(true),
            version: raw.version.clone(),
        },
        "registry" => CheckKind::Registry {
            key: s(&raw.registry),
            value: raw.value.clone(),
            equals: raw.equals.clone(),
        },
        "hotfix" => CheckKind::Hotfix {
            hotfix: s(&raw.hotfix),
            installed: raw.installed.unwrap_or(true),
        },
        _ => CheckKind::WindowsFeature {
            feature: s(&raw.windows_feature),
            installed: raw.installed.unwrap_or(true),
        },
    };
    // Parse every templated string once; a syntax error is located at the string.
    let offset = doc.span(path).start;
    let mut templates = std::collections::BTreeMap::new();
    let mut bad = false;
    let _ = kind.try_map_strings(|s| -> Result<String, ()> {
        if is_template(s) {
            let at = doc.src.text[offset..]
                .find(s)
                .map_or(offset, |i| offset + i);
            let t = super::model::Template::new(s.to_string(), doc.src.clone(), at, String::new());
            match super::render::check_syntax(&t) {
                Ok(()) => {
                    templates.insert(s.to_string(), t);
                }
                Err(d) => {
                    bad = true;
                    diags.push(d);
                }
            }
        }
        Ok(String::new())
    });
    if bad {
        return None;
    }
    Some(CheckTemplate {
        name: raw.name.clone(),
        platform: raw.platform,
        kind,
        src: doc.src.clone(),
        templates,
    })
}

pub fn names(ps: &[Platform]) -> String {
    ps.iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Whether a string has tera syntax (and so is checked after rendering).
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// Rules for values that can only be checked once rendered (they may be templates).
pub fn check_rendered(kind: &CheckKind) -> Result<(), String> {
    match kind {
        CheckKind::Command {
            stdout_matches: Some(m),
            ..
        } => regex::Regex::new(m).map(|_| ()).map_err(|e| {
            format!(
                "stdout_matches is not a valid regular expression after rendering: {}",
                e.to_string().lines().last().unwrap_or_default()
            )
        }),
        CheckKind::File {
            sha256: Some(h), ..
        } => values::sha256(h).map_err(|e| format!("after rendering: {e}")),
        _ => Ok(()),
    }
}
