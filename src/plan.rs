//! A rendered, ready-to-run bake plan: every step and check with its templates expanded, and the
//! fingerprint (a content hash of every input) with the list of inputs that explains it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::diag::{Diagnostics, ErrorKind};
use crate::catalog::graph;
use crate::catalog::model::*;
use crate::catalog::render::RenderEnv;
use crate::catalog::syntax::{self, Lang};
use crate::catalog::values;
use crate::catalog::Catalog;
use crate::checks::Check;

/// Bump when the meaning of a plan changes, so every fingerprint changes with it.
pub const FORMAT_VERSION: &str = "bakery-plan-1";

/// A sha256 over every input of a bake, hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> &str {
        &self.0[..12.min(self.0.len())]
    }
}

impl Fingerprint {
    /// The full fingerprint of a bake: the catalog's plus what was resolved in AWS (the source
    /// AMI, and the parent's registered version when layered).
    pub fn with_source(&self, source_ami: &str, parent: Option<&str>) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(self.0.as_bytes());
        h.update(b"\nsource ");
        h.update(source_ami.as_bytes());
        if let Some(p) = parent {
            h.update(b"\nparent ");
            h.update(p.as_bytes());
        }
        Fingerprint(hex::encode(h.finalize()))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One thing the fingerprint covers, with its own hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FingerprintInput {
    pub label: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    /// Path below the step's destination ("" for a single file).
    pub rel: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub size: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlannedAction {
    Shell {
        script: String,
    },
    PowerShell {
        script: String,
    },
    Upload {
        source: String,
        destination: String,
        is_dir: bool,
        mode: Option<u32>,
        files: Vec<PlannedFile>,
    },
    Download {
        url: String,
        sha256: String,
        destination: String,
    },
    Restart {
        timeout: Option<Duration>,
    },
    WindowsUpdate {
        categories: Vec<String>,
        /// KB articles not to install.
        exclude_kbs: Vec<String>,
        max_passes: u32,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub recipe: RecipeName,
    pub name: String,
    pub timeout: Duration,
    pub env: BTreeMap<String, String>,
    /// Statements run before the script that fetch the secret parameters it uses into
    /// variables, failing the step when one cannot be read (names of secrets, never values).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secrets: String,
    #[serde(flatten)]
    pub action: PlannedAction,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedCheck {
    /// `recipe <name>` or `image`.
    pub origin: String,
    #[serde(flatten)]
    pub check: Check,
}

/// The test phase of a plan: checks on a fresh instance launched from the new AMI.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTest {
    pub instance_types: Vec<String>,
    /// Rendered `[test] user_data`.
    pub user_data: Option<String>,
    #[serde(with = "humantime_secs")]
    pub timeout: std::time::Duration,
    pub checks: Vec<PlannedCheck>,
}

/// A duration as whole seconds in JSON.
mod humantime_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub image: ImageName,
    pub version: MajorMinor,
    pub platform: Platform,
    pub architecture: Architecture,
    pub communicator: Communicator,
    pub source: Source,
    pub target: String,
    pub user_data: Option<String>,
    /// Provisioning, in order.
    pub steps: Vec<PlannedStep>,
    /// Run after `steps`; all must pass before `finalize` runs.
    pub checks: Vec<PlannedCheck>,
    /// Generalisation steps (finalize recipes), after the checks, right before capture.
    pub finalize: Vec<PlannedStep>,
    /// `[test]`: none means the image is not tested on a fresh instance.
    pub test: Option<PlannedTest>,
    pub fingerprint: Fingerprint,
    pub inputs: Vec<FingerprintInput>,
    /// `[inputs.<name>]` of the image and its recipes, sources rendered: what must be read
    /// (`inputs::resolve`) before the plan is final.
    pub live_inputs: Vec<LiveInput>,
    /// What validation found that does not stop a bake (script traps, unquoted parameters).
    #[serde(skip)]
    pub warnings: Vec<crate::catalog::diag::Diagnostic>,
}

/// A live input of a plan, its source rendered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LiveInput {
    pub name: String,
    pub kind: InputKind,
    /// The URL or SSM parameter name.
    pub source: String,
    /// The environment variable holding the request's bearer token (its name, never the token).
    pub token_env: Option<String>,
}

/// What a live input read: the sha256 of what the URL served (or of the parameter's value),
/// and the value (the parameter's, the body of a `body = "text"` URL; the URL for http).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputValue {
    pub sha256: String,
    pub value: String,
}

/// Values of live inputs by (kind, rendered source).
pub type InputValues = BTreeMap<(InputKind, String), InputValue>;

/// What `inputs.<name>.sha256` is until the input is read (`plan --offline`, `render`).
pub const UNREAD_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Plans images against one target, reusing each parent's fingerprint for its children.
pub struct Planner<'a> {
    catalog: &'a Catalog,
    target: &'a Target,
    done: BTreeMap<ImageName, Fingerprint>,
    values: InputValues,
}

impl<'a> Planner<'a> {
    pub fn new(catalog: &'a Catalog, target: &'a Target) -> Self {
        Self {
            catalog,
            target,
            done: BTreeMap::new(),
            values: InputValues::new(),
        }
    }

    /// Adds values of live inputs (read by `inputs::resolve`) for the plans that follow;
    /// inputs without a value render as unread.
    pub fn add_inputs(&mut self, values: InputValues) {
        self.values.extend(values);
    }

    /// The live inputs of `name` with their sources rendered: what `inputs::resolve` reads
    /// before `plan` (nothing else is rendered, so an image is planned once).
    pub fn live_inputs(&self, name: &ImageName) -> Result<Vec<LiveInput>, Diagnostics> {
        let image = &self.catalog.images[name];
        let mut acc = Acc {
            diags: Diagnostics::default(),
            warnings: Vec::new(),
            inputs: Vec::new(),
        };
        let (live, _) = live_inputs(&mut acc, self.catalog, image, self.target, &self.values);
        if !acc.diags.is_empty() {
            return Err(acc.diags);
        }
        Ok(live)
    }

    /// Renders the plan of `name` (planning its ancestors first for their fingerprints).
    pub fn plan(&mut self, name: &ImageName) -> Result<Plan, Diagnostics> {
        let image = &self.catalog.images[name];
        let parent_fp = match graph::parent(image) {
            Some(p) if self.catalog.images.contains_key(p) => match self.done.get(p) {
                Some(fp) => Some((p.clone(), fp.clone())),
                None => Some((p.clone(), self.plan(p)?.fingerprint)),
            },
            _ => None,
        };
        let plan = render(self.catalog, image, self.target, parent_fp, &self.values)?;
        self.done.insert(name.clone(), plan.fingerprint.clone());
        Ok(plan)
    }
}

impl Plan {
    /// The plan of one image against `target`.
    pub fn render(
        catalog: &Catalog,
        name: &ImageName,
        target: &Target,
    ) -> Result<Plan, Diagnostics> {
        Planner::new(catalog, target).plan(name)
    }
}

struct Acc {
    diags: Diagnostics,
    /// Findings that do not stop a bake (script traps, unquoted parameters).
    warnings: Vec<crate::catalog::diag::Diagnostic>,
    inputs: Vec<FingerprintInput>,
}

impl Acc {
    fn input(&mut self, label: impl Into<String>, bytes: &[u8]) {
        self.inputs.push(FingerprintInput {
            label: label.into(),
            sha256: sha(bytes),
        });
    }
    /// Renders a script (secrets allowed: they render as run-time lookups).
    fn script(&mut self, env: &RenderEnv, t: &Template) -> Option<String> {
        env.render(t).map_err(|d| self.diags.push(d)).ok()
    }

    /// A rendered script parses (`None` and the error, located in its template, otherwise);
    /// its traps become warnings.
    fn script_syntax(&mut self, t: &Template, script: &str, lang: Lang) -> Option<()> {
        let (errors, warnings) = syntax::check_script(t, script, lang);
        self.warnings.extend(warnings);
        if errors.is_empty() {
            Some(())
        } else {
            self.diags.0.extend(errors);
            None
        }
    }

    /// The script in rendered user data parses, as `script_syntax`.
    fn user_data_syntax(&mut self, t: &Template, rendered: &str, platform: Platform) -> Option<()> {
        match syntax::user_data_script(rendered, platform == Platform::Windows) {
            Some((lang, script)) => self.script_syntax(t, &script, lang),
            None => Some(()),
        }
    }

    /// Renders anything else (secrets refused).
    fn render(&mut self, env: &RenderEnv, t: &Template) -> Option<String> {
        env.render_plain(t).map_err(|d| self.diags.push(d)).ok()
    }
}

/// Renders the sources of the live inputs of `image` and its recipes; the `inputs` context of
/// every template (values where read, unread placeholders otherwise), with the fingerprint
/// entries: a read input counts by its sha256, an unread one by its source.
fn live_inputs(
    acc: &mut Acc,
    catalog: &Catalog,
    image: &Image,
    target: &Target,
    values: &InputValues,
) -> (Vec<LiveInput>, serde_json::Value) {
    let mut live: Vec<(LiveInput, &Template)> = Vec::new();
    let img_env = RenderEnv::for_image(image, target);
    let mut declared: Vec<(&RenderEnv, &crate::catalog::model::Input)> = Vec::new();
    let recipe_envs: Vec<(RenderEnv, &crate::catalog::model::Recipe)> = image
        .recipes
        .iter()
        .map(|u| &catalog.recipes[&u.recipe])
        .zip(image.recipes.iter())
        .filter(|(r, _)| !r.inputs.is_empty())
        .map(|(r, u)| (RenderEnv::for_recipe(image, target, &r.name, &u.params), r))
        .collect();
    declared.extend(image.inputs.iter().map(|i| (&img_env, i)));
    for (env, r) in &recipe_envs {
        declared.extend(r.inputs.iter().map(|i| (env, i)));
    }
    for (env, i) in declared {
        let Some(source) = acc.render(env, &i.source) else {
            continue;
        };
        let l = LiveInput {
            name: i.name.clone(),
            kind: i.kind,
            source,
            token_env: i.token_env.clone(),
        };
        match live.iter().find(|(o, _)| o.name == l.name) {
            Some((o, _)) if o == &l => {}
            Some(_) => {
                let t = &i.source;
                acc.diags.push(
                    t.src
                        .diag(
                            ErrorKind::InvalidValue,
                            t.offset..t.offset + t.text.len(),
                            format!(
                                "input `{}` is declared twice with different sources in image {}",
                                l.name, image.name
                            ),
                        )
                        .with_hint("one name, one source: rename one of them"),
                );
            }
            None => live.push((l, &i.source)),
        }
    }
    let mut ctx = serde_json::Map::new();
    let mut out = Vec::new();
    for (l, _) in live {
        let (sha, value) = match values.get(&(l.kind, l.source.clone())) {
            Some(v) => {
                acc.inputs.push(FingerprintInput {
                    label: format!("input {}", l.name),
                    sha256: v.sha256.clone(),
                });
                (v.sha256.clone(), v.value.clone())
            }
            None => {
                acc.input(format!("input {} (unread)", l.name), l.source.as_bytes());
                (UNREAD_SHA256.to_string(), String::new())
            }
        };
        ctx.insert(
            l.name.clone(),
            serde_json::json!({ "sha256": sha, "value": value, "source": l.source }),
        );
        out.push(l);
    }
    (out, serde_json::Value::Object(ctx))
}

fn render(
    catalog: &Catalog,
    image: &Image,
    target: &Target,
    parent: Option<(ImageName, Fingerprint)>,
    values: &InputValues,
) -> Result<Plan, Diagnostics> {
    let mut acc = Acc {
        diags: Diagnostics::default(),
        warnings: Vec::new(),
        inputs: Vec::new(),
    };
    acc.input("format", FORMAT_VERSION.as_bytes());
    acc.input(
        format!("image {}", image.file.display()),
        image.canonical.as_bytes(),
    );
    if let Some((p, fp)) = &parent {
        acc.input(format!("parent {p}"), fp.as_str().as_bytes());
    }
    let (live, inputs_cx) = live_inputs(&mut acc, catalog, image, target, values);
    let img_env = RenderEnv::for_image(image, target).with_inputs(&inputs_cx);
    let user_data = image.build.user_data.as_ref().and_then(|t| {
        let s = acc.render(&img_env, t)?;
        acc.user_data_syntax(t, &s, image.platform)?;
        acc.input(format!("user-data {}", t.label), s.as_bytes());
        Some(s)
    });
    let mut steps = Vec::new();
    let mut finalize = Vec::new();
    let mut checks = Vec::new();
    for u in &image.recipes {
        let recipe = &catalog.recipes[&u.recipe];
        let env =
            RenderEnv::for_recipe(image, target, &recipe.name, &u.params).with_inputs(&inputs_cx);
        acc.input(
            format!("recipe {}", recipe.dir.join("recipe.toml").display()),
            recipe.canonical.as_bytes(),
        );
        let params = serde_json::to_string(&u.params).unwrap_or_default();
        acc.input(format!("params {}", recipe.name), params.as_bytes());
        for (i, s) in recipe.steps.iter().enumerate() {
            if s.platform.is_some_and(|p| p != image.platform) {
                continue;
            }
            if let Some(step) = render_step(&mut acc, &env, image, recipe, &u.params, i, s) {
                if recipe.finalize {
                    finalize.push(step);
                } else {
                    steps.push(step);
                }
            }
        }
        for c in recipe
            .checks
            .iter()
            .filter(|c| c.platform.is_none_or(|p| p == image.platform))
        {
            if let Some(check) = render_check(&mut acc, &env, Some(&u.params), c) {
                checks.push(PlannedCheck {
                    origin: format!("recipe {}", recipe.name),
                    check,
                });
            }
        }
    }
    for c in &image.checks {
        if let Some(check) = render_check(&mut acc, &img_env, None, c) {
            checks.push(PlannedCheck {
                origin: "image".into(),
                check,
            });
        }
    }
    let test = plan_test(&mut acc, catalog, target, image, &img_env, &inputs_cx);
    if !acc.diags.is_empty() {
        return Err(acc.diags);
    }
    let mut h = Sha256::new();
    for i in &acc.inputs {
        h.update(i.label.as_bytes());
        h.update([0]);
        h.update(i.sha256.as_bytes());
        h.update([b'\n']);
    }
    Ok(Plan {
        image: image.name.clone(),
        version: image.version,
        platform: image.platform,
        architecture: image.architecture,
        communicator: image.build.communicator,
        source: image.source.clone(),
        target: target.name.clone(),
        user_data,
        steps,
        checks,
        finalize,
        test,
        fingerprint: Fingerprint(hex::encode(h.finalize())),
        inputs: acc.inputs,
        live_inputs: live,
        warnings: acc.warnings,
    })
}

/// The test phase: the image's `[test]` and its recipes' test checks (a recipe's test checks
/// alone give an image a test phase, launched like the build instance).
fn plan_test(
    acc: &mut Acc,
    catalog: &Catalog,
    target: &Target,
    image: &Image,
    img_env: &RenderEnv,
    inputs_cx: &serde_json::Value,
) -> Option<PlannedTest> {
    let mut checks = Vec::new();
    for u in &image.recipes {
        let recipe = &catalog.recipes[&u.recipe];
        let env =
            RenderEnv::for_recipe(image, target, &recipe.name, &u.params).with_inputs(inputs_cx);
        for c in recipe
            .test_checks
            .iter()
            .filter(|c| c.platform.is_none_or(|p| p == image.platform))
        {
            if let Some(check) = render_check(acc, &env, Some(&u.params), c) {
                checks.push(PlannedCheck {
                    origin: format!("test, recipe {}", recipe.name),
                    check,
                });
            }
        }
    }
    let spec = image.test.as_ref();
    for c in spec.iter().flat_map(|t| t.checks.iter()) {
        if let Some(check) = render_check(acc, img_env, None, c) {
            checks.push(PlannedCheck {
                origin: "test".into(),
                check,
            });
        }
    }
    if spec.is_none() && checks.is_empty() {
        return None;
    }
    let user_data = spec.and_then(|t| t.user_data.as_ref()).and_then(|t| {
        let s = acc.render(img_env, t)?;
        acc.user_data_syntax(t, &s, image.platform)?;
        acc.input(format!("test user-data {}", t.label), s.as_bytes());
        Some(s)
    });
    Some(PlannedTest {
        instance_types: match spec {
            Some(t) => t.instance_types.iter().map(|i| i.to_string()).collect(),
            None => image
                .build
                .instance_types
                .iter()
                .map(|i| i.to_string())
                .collect(),
        },
        timeout: spec.map_or(image.build.timeouts.launch, |t| t.timeout),
        user_data,
        checks,
    })
}

fn render_check(
    acc: &mut Acc,
    env: &RenderEnv,
    params: Option<&BTreeMap<String, ParamValue>>,
    c: &CheckTemplate,
) -> Option<Check> {
    let kind = c
        .kind
        .try_map_strings(|s| match c.templates.get(s) {
            Some(t) => env.render_plain(t),
            None => Ok(s.to_string()),
        })
        .map_err(|d| acc.diags.push(d))
        .ok()?;
    if let Err(e) = crate::catalog::check::check_rendered(&kind) {
        let at = c.templates.values().next().map_or(0, |t| t.offset);
        acc.diags
            .push(c.src.diag(ErrorKind::InvalidValue, at..at + 1, e));
        return None;
    }
    // A command is a script: parsed like one, before anything runs.
    if let (
        crate::checks::CheckKind::Command { command, .. },
        crate::checks::CheckKind::Command { command: raw, .. },
    ) = (&kind, &c.kind)
    {
        if let Some(t) = c.templates.get(raw) {
            let lang = match env.platform() {
                Platform::Windows => Lang::PowerShell,
                Platform::Linux => Lang::Bash,
            };
            acc.script_syntax(t, command, lang)?;
            if let Some(params) = params {
                acc.warnings
                    .extend(syntax::unquoted_params(t, params, lang));
            }
        }
    }
    let check = Check {
        name: c.name.clone().unwrap_or_else(|| kind.default_name()),
        kind,
    };
    // What the probe will look for is an input too (templates can depend on the target).
    acc.input(
        format!("check {}", check.name),
        serde_json::to_string(&check).unwrap_or_default().as_bytes(),
    );
    Some(check)
}

fn render_step(
    acc: &mut Acc,
    env: &RenderEnv,
    image: &Image,
    recipe: &Recipe,
    params: &BTreeMap<String, ParamValue>,
    i: usize,
    s: &Step,
) -> Option<PlannedStep> {
    let where_ = format!("{} step[{i}]", recipe.dir.join("recipe.toml").display());
    let mut env_vars = BTreeMap::new();
    for (k, t) in &s.env {
        env_vars.insert(k.clone(), acc.render(env, t)?);
    }
    if !env_vars.is_empty() {
        let j = serde_json::to_string(&env_vars).unwrap_or_default();
        acc.input(format!("{where_} env"), j.as_bytes());
    }
    let mut secrets = String::new();
    let action = match &s.action {
        StepAction::Shell(sc) | StepAction::PowerShell(sc) => {
            let t = sc.template();
            let script = acc.script(env, t)?;
            let lang = if matches!(s.action, StepAction::Shell(_)) {
                Lang::Bash
            } else {
                Lang::PowerShell
            };
            acc.script_syntax(t, &script, lang)?;
            acc.warnings
                .extend(syntax::unquoted_params(t, params, lang));
            secrets = env.secret_prelude(&script);
            let label = match sc {
                Script::File(t) => t.label.clone(),
                Script::Inline(_) => format!("{where_} inline"),
            };
            acc.input(label, script.as_bytes());
            if matches!(s.action, StepAction::Shell(_)) {
                PlannedAction::Shell { script }
            } else {
                PlannedAction::PowerShell { script }
            }
        }
        StepAction::File {
            source,
            is_dir,
            files,
            destination,
            mode,
        } => {
            let destination = acc.render(env, destination)?;
            let mut out = Vec::new();
            for f in files {
                let bytes = match &f.template {
                    Some(t) => acc.render(env, t)?.into_bytes(),
                    None => f.bytes.clone(),
                };
                let label = if f.rel.is_empty() {
                    recipe.dir.join(source).display().to_string()
                } else {
                    recipe.dir.join(source).join(&f.rel).display().to_string()
                };
                acc.input(format!("file {label}"), &bytes);
                out.push(PlannedFile {
                    rel: f.rel.clone(),
                    size: bytes.len(),
                    bytes,
                });
            }
            acc.input(
                format!("{where_} destination"),
                format!("{destination}:{mode:?}").as_bytes(),
            );
            PlannedAction::Upload {
                source: source.clone(),
                destination,
                is_dir: *is_dir,
                mode: *mode,
                files: out,
            }
        }
        StepAction::Download {
            url,
            sha256,
            destination,
        } => {
            let u = acc.render(env, url)?;
            let h = acc.render(env, sha256)?;
            let d = acc.render(env, destination)?;
            if let Err(e) = values::sha256(&h) {
                acc.diags.push(sha256.src.diag(
                    ErrorKind::InvalidValue,
                    sha256.offset..sha256.offset + sha256.text.len(),
                    format!("after rendering: {e}"),
                ));
                return None;
            }
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                acc.diags.push(url.src.diag(
                    ErrorKind::InvalidValue,
                    url.offset..url.offset + url.text.len(),
                    format!("after rendering, `{u}` is not an http(s) URL"),
                ));
                return None;
            }
            acc.input(
                format!("{where_} download"),
                format!("{u}\n{h}\n{d}").as_bytes(),
            );
            PlannedAction::Download {
                url: u,
                sha256: h.to_ascii_lowercase(),
                destination: d,
            }
        }
        StepAction::Restart { timeout } => {
            acc.input(
                format!("{where_} restart"),
                format!("{timeout:?}").as_bytes(),
            );
            PlannedAction::Restart { timeout: *timeout }
        }
        StepAction::WindowsUpdate {
            categories,
            exclude_kbs,
            max_passes,
        } => {
            use crate::catalog::recipe::{kb_article, update_category};
            let categories = update_list(acc, env, categories, update_category)?;
            let exclude_kbs = update_list(acc, env, exclude_kbs, kb_article)?;
            acc.input(
                format!("{where_} windows_update"),
                format!("{categories:?}{exclude_kbs:?}{max_passes}").as_bytes(),
            );
            PlannedAction::WindowsUpdate {
                categories,
                exclude_kbs,
                max_passes: *max_passes,
            }
        }
    };
    let name = s.name.clone().unwrap_or_else(|| default_step_name(&action));
    Some(PlannedStep {
        recipe: recipe.name.clone(),
        name,
        timeout: s.timeout.unwrap_or(image.build.timeouts.step),
        env: env_vars,
        secrets,
        action,
    })
}

/// A `windows_update` list, its template rendered and every item checked (the error located
/// at the template).
fn update_list(
    acc: &mut Acc,
    env: &RenderEnv,
    list: &UpdateList,
    check: fn(&str) -> Result<String, String>,
) -> Option<Vec<String>> {
    match list {
        UpdateList::Fixed(v) => Some(v.clone()),
        UpdateList::Template(t) => {
            let text = acc.render(env, t)?;
            match crate::catalog::recipe::split_update_list(&text, check) {
                Ok(v) => Some(v),
                Err(e) => {
                    acc.diags.push(t.src.diag(
                        ErrorKind::InvalidValue,
                        t.offset..t.offset + t.text.len(),
                        format!("after rendering: {e}"),
                    ));
                    None
                }
            }
        }
    }
}

fn default_step_name(a: &PlannedAction) -> String {
    match a {
        PlannedAction::Shell { script } | PlannedAction::PowerShell { script } => script
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("script")
            .chars()
            .take(60)
            .collect(),
        PlannedAction::Upload { destination, .. } => format!("upload {destination}"),
        PlannedAction::Download { destination, .. } => format!("download {destination}"),
        PlannedAction::Restart { .. } => "restart".into(),
        PlannedAction::WindowsUpdate { .. } => "windows update".into(),
    }
}
