//! `recipes/<name>/recipe.toml` and its files -> a validated `Recipe`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::check;
use super::diag::{Diagnostics, ErrorKind, SourceText};
use super::doc::{Doc, DocPath};
use super::model::{
    ParamSpec, Platform, Recipe, RecipeFile, RecipeName, Script, Step, StepAction, Template,
    UpdateList,
};
use super::params;
use super::raw::{RawRecipe, RawScript, RawStep};
use super::render::check_syntax;
use super::values;

/// Windows Update classification names accepted by `windows_update.categories`.
pub const UPDATE_CATEGORIES: [&str; 10] = [
    "CriticalUpdates",
    "SecurityUpdates",
    "DefinitionUpdates",
    "UpdateRollups",
    "Updates",
    "FeaturePacks",
    "ServicePacks",
    "Tools",
    "Drivers",
    "Upgrades",
];
/// A Windows Update classification as the catalog writes it (`SecurityUpdates`).
pub fn update_category(c: &str) -> Result<String, String> {
    if UPDATE_CATEGORIES.contains(&c) {
        Ok(c.to_string())
    } else {
        Err(format!("unknown update category `{c}`"))
    }
}

/// A KB article (`KB5034439`, any case), as `KB` and its digits.
pub fn kb_article(k: &str) -> Result<String, String> {
    let digits = k
        .get(..2)
        .filter(|p| p.eq_ignore_ascii_case("kb"))
        .map(|_| &k[2..])
        .unwrap_or(k);
    if !digits.is_empty() && digits.len() <= 10 && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(format!("KB{digits}"))
    } else {
        Err(format!("`{k}` is not a KB article number (KB5034439)"))
    }
}

/// A comma- or space-separated list (a rendered template), each item checked.
pub fn split_update_list(
    text: &str,
    check: fn(&str) -> Result<String, String>,
) -> Result<Vec<String>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(check)
        .collect()
}

fn update_hint(key: &str, c: &str) -> Option<String> {
    (key == "categories").then(|| match super::diag::did_you_mean(c, UPDATE_CATEGORIES) {
        Some(m) => format!("did you mean `{m}`?"),
        None => format!("expected one of: {}", UPDATE_CATEGORIES.join(", ")),
    })
}

/// Passes of install-and-reboot before `windows_update` gives up (bounded, see issue 4).
const MAX_UPDATE_PASSES: u32 = 20;
const DEFAULT_UPDATE_PASSES: u32 = 5;

/// Reads a project file; a missing or unreadable file becomes a diagnostic on the file itself.
pub fn read_source(root: &Path, rel: &Path, diags: &mut Diagnostics) -> Option<SourceText> {
    match std::fs::read_to_string(root.join(rel)) {
        Ok(text) => Some(SourceText::new(rel.to_path_buf(), strip_bom(text))),
        Err(e) => {
            diags.push(super::diag::Diagnostic::file(
                ErrorKind::Io,
                rel,
                format!("cannot read: {e}"),
            ));
            None
        }
    }
}

/// Editors on Windows may start a file with a byte-order mark; it is not content.
pub fn strip_bom(text: String) -> String {
    match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// The template of a string value in `doc`: its text and where that text starts in the file.
pub fn inline_template(doc: &Doc, path: &DocPath, text: &str, label: String) -> Template {
    let span = doc.span(path);
    let raw = &doc.src.text[span.clone()];
    let mut skip = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        3
    } else {
        usize::from(raw.starts_with('"') || raw.starts_with('\''))
    };
    // TOML trims a newline right after an opening triple quote.
    if skip == 3 {
        if raw[3..].starts_with("\r\n") {
            skip += 2;
        } else if raw[3..].starts_with('\n') {
            skip += 1;
        }
    }
    let mut t = Template::new(text.to_string(), doc.src.clone(), span.start + skip, label);
    t.exact = doc.src.text.get(t.offset..t.offset + text.len()) == Some(text);
    t
}

/// A path inside the recipe folder: relative, no `..`.
fn inside(rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(format!(
            "`{rel}` must be a relative path inside the recipe folder"
        ))
    }
}

struct Ctx<'a> {
    root: &'a Path,
    dir: &'a Path,
    doc: &'a Doc,
    diags: &'a mut Diagnostics,
}

impl Ctx<'_> {
    fn err(&mut self, path: &DocPath, kind: ErrorKind, msg: impl Into<String>) {
        let d = self.doc.at(path, kind, msg);
        self.diags.push(d);
    }

    fn missing(&mut self, path: &DocPath, field: &str, hint: &str) {
        if !self.doc.was_removed(&path.k(field)) {
            let d = self
                .doc
                .at(
                    path,
                    ErrorKind::MissingField,
                    format!("missing field `{field}`"),
                )
                .with_hint(hint.to_string());
            self.diags.push(d);
        }
    }

    /// Reads a file of the recipe as a template; checks its syntax.
    fn file_template(&mut self, path: &DocPath, rel: &str) -> Option<Template> {
        let rel_path = match inside(rel) {
            Ok(p) => p,
            Err(e) => {
                self.err(path, ErrorKind::InvalidValue, e);
                return None;
            }
        };
        let file = self.dir.join(&rel_path);
        if let Err(e) = no_links(self.root, &file) {
            self.err(path, ErrorKind::InvalidValue, e);
            return None;
        }
        let plain = plain_kind(&self.root.join(&file)) == Some(false);
        let read = if plain {
            std::fs::read(self.root.join(&file))
        } else {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        };
        let text = match read {
            Ok(b) => match String::from_utf8(b) {
                Ok(t) => strip_bom(t),
                Err(_) => {
                    self.err(
                        path,
                        ErrorKind::InvalidValue,
                        format!("`{rel}` is not UTF-8 text"),
                    );
                    return None;
                }
            },
            Err(_) => {
                let d = self
                    .doc
                    .at(
                        path,
                        ErrorKind::MissingFile,
                        format!("file `{}` not found", file.display()),
                    )
                    .with_hint(format!("paths are relative to {}", self.dir.display()));
                self.diags.push(d);
                return None;
            }
        };
        let t = Template::file(SourceText::new(file, text));
        match check_syntax(&t) {
            Ok(()) => Some(t),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    fn inline(&mut self, path: &DocPath, text: &str, label: String) -> Option<Template> {
        let t = inline_template(self.doc, path, text, label);
        match check_syntax(&t) {
            Ok(()) => Some(t),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    fn duration(
        &mut self,
        path: &DocPath,
        s: &Option<String>,
    ) -> Result<Option<std::time::Duration>, ()> {
        match s {
            None => Ok(None),
            Some(s) => values::duration(s).map(Some).map_err(|e| {
                self.err(path, ErrorKind::InvalidValue, e);
            }),
        }
    }
}

/// Validates `recipes/<name>/recipe.toml` (already parsed into `doc`).
pub fn validate(root: &Path, name: &str, doc: &mut Doc, diags: &mut Diagnostics) -> Option<Recipe> {
    let raw: RawRecipe = doc.deserialize(diags)?;
    let dir = PathBuf::from("recipes").join(name);
    let before = diags.len();
    let mut cx = Ctx {
        root,
        dir: &dir,
        doc,
        diags,
    };
    let top = DocPath::root();
    if let Err(e) = values::image_name(name) {
        let d = super::diag::Diagnostic::file(
            ErrorKind::InvalidValue,
            &dir,
            format!("recipe folder: {e}"),
        );
        cx.diags.push(d);
    }
    let platforms = match &raw.platforms {
        Some(p) if !p.is_empty() => p.clone(),
        Some(_) => {
            cx.err(
                &top.k("platforms"),
                ErrorKind::InvalidValue,
                "a recipe needs at least one platform",
            );
            vec![]
        }
        None => {
            cx.missing(
                &top,
                "platforms",
                "add platforms = [\"windows\"] or [\"linux\"] or both",
            );
            vec![]
        }
    };
    let mut params = BTreeMap::new();
    for (pname, p) in &raw.params {
        let path = top.k("params").k(pname);
        if let Err(e) = param_name(pname) {
            let d = cx.doc.at_key(&path, ErrorKind::InvalidValue, e);
            cx.diags.push(d);
        }
        let Some(t) = p.param_type else {
            cx.missing(
                &path,
                "type",
                "add type = \"string\" (or int, bool, list, secret)",
            );
            continue;
        };
        let default = match &p.default {
            None => None,
            Some(v) => match params::typed(t, v) {
                Ok(v) => Some(v),
                Err(e) => {
                    let mut d = cx.doc.at(
                        &path.k("default"),
                        e.kind,
                        format!("default: {}", e.message),
                    );
                    d.hint = e.hint;
                    if e.kind == ErrorKind::SecretLiteral {
                        // The source line would show the secret.
                        d.source_line = None;
                    }
                    cx.diags.push(d);
                    continue;
                }
            },
        };
        params.insert(
            pname.clone(),
            ParamSpec {
                param_type: t,
                default,
                doc: p.doc.clone().unwrap_or_default(),
            },
        );
    }
    let mut steps = Vec::new();
    for (i, s) in raw.step.iter().enumerate() {
        if let Some(step) = step(&mut cx, &top.k("step").i(i), s, &platforms) {
            steps.push(step);
        }
    }
    let mut checks = Vec::new();
    for (i, c) in raw.check.iter().enumerate() {
        if let Some(c) = check::validate(c, cx.doc, &top.k("check").i(i), &platforms, cx.diags) {
            checks.push(c);
        }
    }
    let mut test_checks = Vec::new();
    for (i, c) in raw.test.iter().flat_map(|t| t.check.iter()).enumerate() {
        let path = top.k("test").k("check").i(i);
        if let Some(c) = check::validate(c, cx.doc, &path, &platforms, cx.diags) {
            test_checks.push(c);
        }
    }
    let inputs = super::inputs::validate(
        cx.doc,
        &top.k("inputs"),
        &raw.inputs,
        &format!("recipe {name}"),
        cx.diags,
    );
    if raw.finalize && !raw.check.is_empty() {
        let d = doc
            .at(
                &top.k("check"),
                ErrorKind::ConflictingFields,
                "a finalize recipe cannot have checks: they would run before its steps",
            )
            .with_hint("move the checks to the recipe that installs what they verify");
        diags.push(d);
    }
    if diags.len() > before {
        return None;
    }
    Some(Recipe {
        name: RecipeName(name.to_string()),
        description: raw.description.clone().unwrap_or_default(),
        platforms,
        finalize: raw.finalize,
        params,
        steps,
        checks,
        test_checks,
        inputs,
        dir,
        // The description does not change what runs; everything else does.
        canonical: serde_json::to_string(&RawRecipe {
            description: None,
            ..raw.clone()
        })
        .unwrap_or_default(),
    })
}

fn param_name(s: &str) -> Result<(), String> {
    if values::snake_name(s, true) {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a parameter name; use lowercase letters, digits and _"
        ))
    }
}

fn step(cx: &mut Ctx, path: &DocPath, s: &RawStep, platforms: &[Platform]) -> Option<Step> {
    let kinds: Vec<&str> = [
        ("shell", s.shell.is_some()),
        ("powershell", s.powershell.is_some()),
        ("file", s.file.is_some()),
        ("download", s.download.is_some()),
        ("restart", s.restart.is_some()),
        ("windows_update", s.windows_update.is_some()),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(k, _)| *k)
    .collect();
    let kind = match kinds.as_slice() {
        [k] => *k,
        [] => {
            if !cx.doc.was_removed_under(path) {
                let d = cx
                    .doc
                    .at(path, ErrorKind::MissingField, "a step needs a kind")
                    .with_hint(
                        "add one of: shell, powershell, file, download, restart, windows_update",
                    );
                cx.diags.push(d);
            }
            return None;
        }
        [_, second, ..] => {
            let d = cx
                .doc
                .at_key(
                    &path.k(second),
                    ErrorKind::ConflictingFields,
                    format!("a step has exactly one kind, found {}", kinds.join(" and ")),
                )
                .with_hint("split it into one [[step]] per kind");
            cx.diags.push(d);
            return None;
        }
    };
    let before = cx.diags.len();
    let timeout = cx.duration(&path.k("timeout"), &s.timeout).ok().flatten();
    let mut env = BTreeMap::new();
    for (k, v) in s.env.iter().flatten() {
        let p = path.k("env").k(k);
        if !k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let d = cx.doc.at_key(
                &p,
                ErrorKind::InvalidValue,
                format!("`{k}` is not an environment variable name"),
            );
            cx.diags.push(d);
            continue;
        }
        if let Some(t) = cx.inline(&p, v, format!("{}:env.{k}", cx.dir.display())) {
            env.insert(k.clone(), t);
        }
    }
    let kp = path.k(kind);
    let action = match kind {
        "shell" | "powershell" => {
            let sc = if kind == "shell" {
                &s.shell
            } else {
                &s.powershell
            };
            let script = script(cx, &kp, sc.as_ref()?)?;
            if kind == "shell" {
                StepAction::Shell(script)
            } else {
                StepAction::PowerShell(script)
            }
        }
        "file" => {
            let f = s.file.as_ref()?;
            let Some(source) = &f.source else {
                cx.missing(
                    &kp,
                    "source",
                    "add source = \"files/...\" (a file or folder of this recipe)",
                );
                return None;
            };
            let Some(dest) = &f.destination else {
                cx.missing(
                    &kp,
                    "destination",
                    "add destination = \"...\" (relative: in the per-bake working directory)",
                );
                return None;
            };
            let mode = match &f.mode {
                None => None,
                Some(m) => match values::file_mode(m) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        cx.err(&kp.k("mode"), ErrorKind::InvalidValue, e);
                        None
                    }
                },
            };
            let destination = cx.inline(
                &kp.k("destination"),
                dest,
                format!("{}:destination", cx.dir.display()),
            )?;
            let (is_dir, files) = recipe_files(cx, &kp.k("source"), source, f.template)?;
            StepAction::File {
                source: source.clone(),
                is_dir,
                files,
                destination,
                mode,
            }
        }
        "download" => {
            let d = s.download.as_ref()?;
            let (Some(url), Some(sha), Some(dest)) = (&d.url, &d.sha256, &d.destination) else {
                for (f, v, h) in [
                    ("url", d.url.is_none(), "add url = \"https://...\""),
                    (
                        "sha256",
                        d.sha256.is_none(),
                        "add sha256 = \"<64 hex digits>\": downloads are always verified",
                    ),
                    (
                        "destination",
                        d.destination.is_none(),
                        "add destination = \"...\"",
                    ),
                ] {
                    if v {
                        cx.missing(&kp, f, h);
                    }
                }
                return None;
            };
            if !(url.contains("{{") || url.starts_with("https://") || url.starts_with("http://")) {
                cx.err(
                    &kp.k("url"),
                    ErrorKind::InvalidValue,
                    format!("`{url}` is not an http(s) URL"),
                );
            }
            if !sha.contains("{{") {
                if let Err(e) = values::sha256(sha) {
                    cx.err(&kp.k("sha256"), ErrorKind::InvalidValue, e);
                }
            }
            let label = cx.dir.display().to_string();
            StepAction::Download {
                url: cx.inline(&kp.k("url"), url, format!("{label}:url"))?,
                sha256: cx.inline(&kp.k("sha256"), sha, format!("{label}:sha256"))?,
                destination: cx.inline(
                    &kp.k("destination"),
                    dest,
                    format!("{label}:destination"),
                )?,
            }
        }
        "restart" => {
            let r = s.restart.as_ref()?;
            StepAction::Restart {
                timeout: cx.duration(&kp.k("timeout"), &r.timeout).ok()?,
            }
        }
        _ => {
            let w = s.windows_update.as_ref()?;
            let label = cx.dir.display().to_string();
            let mut list = |key: &str,
                            raw: &Option<super::raw::ListOrText>,
                            default: Vec<String>,
                            check: fn(&str) -> Result<String, String>|
             -> Option<UpdateList> {
                match raw {
                    None => Some(UpdateList::Fixed(default)),
                    Some(super::raw::ListOrText::List(items)) => {
                        let mut out = Vec::new();
                        for (i, c) in items.iter().enumerate() {
                            match check(c) {
                                Ok(v) => out.push(v),
                                Err(e) => {
                                    let d = cx.doc.at(&kp.k(key).i(i), ErrorKind::InvalidValue, e);
                                    let d = match update_hint(key, c) {
                                        Some(h) => d.with_hint(h),
                                        None => d,
                                    };
                                    cx.diags.push(d);
                                }
                            }
                        }
                        Some(UpdateList::Fixed(out))
                    }
                    Some(super::raw::ListOrText::Text(t))
                        if t.contains("{{") || t.contains("{%") =>
                    {
                        cx.inline(&kp.k(key), t, format!("{label}:{key}"))
                            .map(UpdateList::Template)
                    }
                    Some(super::raw::ListOrText::Text(t)) => match split_update_list(t, check) {
                        Ok(v) => Some(UpdateList::Fixed(v)),
                        Err(e) => {
                            cx.err(&kp.k(key), ErrorKind::InvalidValue, e);
                            None
                        }
                    },
                }
            };
            let categories = list(
                "categories",
                &w.categories,
                vec!["CriticalUpdates".into(), "SecurityUpdates".into()],
                update_category,
            )?;
            let exclude_kbs = list("exclude_kbs", &w.exclude_kbs, Vec::new(), kb_article)?;
            let max_passes = w.max_passes.unwrap_or(DEFAULT_UPDATE_PASSES);
            if max_passes == 0 || max_passes > MAX_UPDATE_PASSES {
                cx.err(
                    &kp.k("max_passes"),
                    ErrorKind::InvalidValue,
                    format!("max_passes must be between 1 and {MAX_UPDATE_PASSES}"),
                );
            }
            StepAction::WindowsUpdate {
                categories,
                exclude_kbs,
                max_passes,
            }
        }
    };
    // Where may this step run, and can its kind run there?
    if let Some(p) = s.platform {
        if !platforms.contains(&p) {
            let d = cx.doc.at(
                &path.k("platform"),
                ErrorKind::PlatformMismatch,
                format!(
                    "this step is for {} but the recipe's platforms are {}",
                    p.as_str(),
                    check::names(platforms)
                ),
            );
            cx.diags.push(d);
        }
    }
    let runs_on: Vec<Platform> = s.platform.map_or_else(|| platforms.to_vec(), |p| vec![p]);
    for p in runs_on {
        if !action.runs_on(p) {
            let only = if p == Platform::Linux {
                "windows"
            } else {
                "linux"
            };
            let d = cx
                .doc
                .at_key(
                    &kp,
                    ErrorKind::PlatformMismatch,
                    format!("a {kind} step cannot run on {}", p.as_str()),
                )
                .with_hint(format!(
                    "add platform = \"{only}\" to this step, or use a step kind for {}",
                    p.as_str()
                ));
            cx.diags.push(d);
        }
    }
    if cx.diags.len() > before {
        return None;
    }
    Some(Step {
        name: s.name.clone(),
        platform: s.platform,
        timeout,
        env,
        action,
    })
}

fn script(cx: &mut Ctx, path: &DocPath, s: &RawScript) -> Option<Script> {
    match (&s.script, &s.inline) {
        (Some(f), None) => cx.file_template(&path.k("script"), f).map(Script::File),
        (None, Some(text)) => {
            let label = format!("{}:inline", cx.dir.display());
            cx.inline(&path.k("inline"), text, label)
                .map(Script::Inline)
        }
        (Some(_), Some(_)) => {
            let d = cx.doc.at_key(
                &path.k("inline"),
                ErrorKind::ConflictingFields,
                "a script is either `script` (a file) or `inline`, not both",
            );
            cx.diags.push(d);
            None
        }
        (None, None) => {
            cx.missing(
                path,
                "script",
                "add script = \"file.ps1\" or inline = \"...\"",
            );
            None
        }
    }
}

/// The file or every file under the folder `rel` (sorted), read now so the plan and its
/// fingerprint cover their bytes.
fn recipe_files(
    cx: &mut Ctx,
    path: &DocPath,
    rel: &str,
    template: bool,
) -> Option<(bool, Vec<RecipeFile>)> {
    let rel_path = match inside(rel) {
        Ok(p) => p,
        Err(e) => {
            cx.err(path, ErrorKind::InvalidValue, e);
            return None;
        }
    };
    if let Err(e) = no_links(cx.root, &cx.dir.join(&rel_path)) {
        cx.err(path, ErrorKind::InvalidValue, e);
        return None;
    }
    let base = cx.root.join(cx.dir).join(&rel_path);
    let Some(is_dir) = plain_kind(&base) else {
        let d = cx
            .doc
            .at(
                path,
                ErrorKind::MissingFile,
                format!(
                    "`{}` not found (or not a plain file or folder)",
                    cx.dir.join(&rel_path).display()
                ),
            )
            .with_hint(format!("paths are relative to {}", cx.dir.display()));
        cx.diags.push(d);
        return None;
    };
    let mut found = Vec::new();
    if is_dir {
        let mut odd = Vec::new();
        walk(&base, "", &mut found, &mut odd);
        if !odd.is_empty() {
            cx.err(
                path,
                ErrorKind::InvalidValue,
                format!(
                "{} holds links or special files ({}): only plain files and folders are shipped",
                cx.dir.join(&rel_path).display(),
                odd.join(", ")
            ),
            );
            return None;
        }
    } else {
        found.push((String::new(), base.clone()));
    }
    found.sort();
    let mut files = Vec::new();
    for (sub, abs) in found {
        let Ok(bytes) = std::fs::read(&abs) else {
            cx.err(
                path,
                ErrorKind::Io,
                format!("cannot read {}", abs.display()),
            );
            return None;
        };
        let shown = if sub.is_empty() {
            rel_path.clone()
        } else {
            rel_path.join(&sub)
        };
        let label = cx.dir.join(&shown).display().to_string();
        let tpl = if template {
            let Ok(text) = String::from_utf8(bytes.clone()) else {
                cx.err(
                    path,
                    ErrorKind::InvalidValue,
                    format!("{label} is not UTF-8 text; drop template = true"),
                );
                return None;
            };
            let t = Template::file(SourceText::new(PathBuf::from(&label), text));
            if let Err(d) = check_syntax(&t) {
                cx.diags.push(d);
                return None;
            }
            Some(t)
        } else {
            None
        };
        files.push(RecipeFile {
            rel: sub,
            bytes,
            template: tpl,
        });
    }
    Some((is_dir, files))
}

/// Regular files under `dir` (recursively). Symlinks and special files are collected into
/// `odd`: a link could pull in anything on the baking host (credentials, say), and a pipe would
/// block validation.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>, odd: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, &rel, out, odd),
            Ok(m) if m.is_file() => out.push((rel, p)),
            _ => odd.push(rel),
        }
    }
}

/// Fails when a path on the way from `root` to `root/rel` (the folders, `rel` itself) is a
/// symbolic link or a special file: a link anywhere could pull a file from outside the catalog
/// (credentials on the baking host, say) into an image. A missing path is left to the caller.
pub fn no_links(root: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = root.to_path_buf();
    let mut shown = PathBuf::new();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        cur.push(c);
        shown.push(c);
        let Ok(m) = std::fs::symlink_metadata(&cur) else {
            return Ok(());
        };
        let last = i + 1 == parts.len();
        if m.file_type().is_symlink() {
            return Err(format!(
                "`{}` is a symbolic link: only plain files and folders inside the project are used; copy what it points to in instead",
                shown.display()
            ));
        }
        if !last && !m.is_dir() {
            return Err(format!("`{}` is not a folder", shown.display()));
        }
        if last && !m.is_dir() && !m.is_file() {
            return Err(format!(
                "`{}` is not a plain file or folder",
                shown.display()
            ));
        }
    }
    Ok(())
}

/// Whether `p` is a regular file or directory, not a symlink or a special file.
pub fn plain_kind(p: &Path) -> Option<bool> {
    let m = std::fs::symlink_metadata(p).ok()?;
    if m.is_dir() {
        Some(true)
    } else if m.is_file() {
        Some(false)
    } else {
        None
    }
}
