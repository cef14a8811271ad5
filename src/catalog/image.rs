//! `images/<name>.toml` -> a validated `Image` (recipes must already be loaded).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::check;
use super::diag::{did_you_mean, Diagnostics, ErrorKind};
use super::doc::{Doc, DocPath};
use super::model::*;
use super::params;
use super::raw::{RawImage, RawSource};
use super::recipe::read_source;
use super::render::check_syntax;
use super::values;

/// Defaults for `[build.timeouts]`: launch covers boot plus SSM/SSH readiness (Windows needs
/// several minutes), capture covers CreateImage of a large Windows volume.
const DEFAULT_LAUNCH: Duration = Duration::from_secs(15 * 60);
const DEFAULT_STEP: Duration = Duration::from_secs(30 * 60);
const DEFAULT_PROVISION: Duration = Duration::from_secs(4 * 3600);
const DEFAULT_CAPTURE: Duration = Duration::from_secs(60 * 60);
/// EBS gp3/io2 volumes go up to 16 TiB (AWS EBS volume types documentation).
const MAX_VOLUME_GB: u32 = 16_384;

struct Ctx<'a> {
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
    fn check<T>(&mut self, path: &DocPath, kind: ErrorKind, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.err(path, kind, e)).ok()
    }
}

/// The recipes an image may use: every folder under `recipes/` and the valid ones among them.
pub struct RecipeSet<'a> {
    pub folders: &'a BTreeSet<String>,
    pub valid: &'a BTreeMap<RecipeName, Recipe>,
}

pub fn validate(
    root: &Path,
    rel: &Path,
    doc: &mut Doc,
    recipes: &RecipeSet,
    diags: &mut Diagnostics,
) -> Option<Image> {
    let raw: RawImage = doc.deserialize(diags)?;
    let before = diags.len();
    let mut cx = Ctx { doc, diags };
    let top = DocPath::root();

    let name = match &raw.name {
        Some(n) => cx
            .check(
                &top.k("name"),
                ErrorKind::InvalidValue,
                values::image_name(n),
            )
            .map(|_| n.clone()),
        None => {
            cx.missing(&top, "name", "add name = \"<image name>\"");
            None
        }
    };
    let version = match &raw.version {
        Some(v) => cx.check(
            &top.k("version"),
            ErrorKind::InvalidValue,
            values::major_minor(v),
        ),
        None => {
            cx.missing(&top, "version", "add version = \"1.0\" (major.minor)");
            None
        }
    };
    let platform = raw.platform;
    if platform.is_none() {
        cx.missing(&top, "platform", "add platform = \"windows\" or \"linux\"");
    }
    let architecture = raw.architecture.unwrap_or_default();
    let source = match &raw.source {
        Some(s) => source(&mut cx, &top.k("source"), s, architecture),
        None => {
            cx.missing(
                &top,
                "source",
                "add a [source] table with ami, ami_filter, ssm_parameter or image",
            );
            None
        }
    };
    let platform_or = platform.unwrap_or(Platform::Linux);
    let build = build(&mut cx, root, &top.k("build"), &raw, platform_or);
    let mut uses = Vec::new();
    let mut finalized_by: Option<String> = None;
    for (i, r) in raw.recipe.iter().enumerate() {
        let path = top.k("recipe").i(i);
        if let Some(u) = recipe_use(&mut cx, &path, r, platform, recipes) {
            let finalize = recipes.valid.get(&u.recipe).is_some_and(|r| r.finalize);
            if let (Some(f), false) = (&finalized_by, finalize) {
                let d = cx
                    .doc
                    .at(&path.k("use"), ErrorKind::InvalidValue, format!(
                        "recipe `{}` comes after `{f}`, which finalizes the image",
                        u.recipe
                    ))
                    .with_hint(format!("move `{f}` to the end: its steps run after every check, right before capture"));
                cx.diags.push(d);
            }
            if finalize {
                finalized_by = Some(u.recipe.to_string());
            }
            uses.push(u);
        }
    }
    let platforms: Vec<Platform> = platform.into_iter().collect();
    let mut checks = Vec::new();
    for (i, c) in raw.check.iter().enumerate() {
        if let Some(c) = check::validate(c, cx.doc, &top.k("check").i(i), &platforms, cx.diags) {
            checks.push(c);
        }
    }
    let publish = publish(&mut cx, &top.k("publish"), &raw);
    let inputs = super::inputs::validate(
        cx.doc,
        &top.k("inputs"),
        &raw.inputs,
        &format!("image {}", rel.display()),
        cx.diags,
    );
    let test = match (&raw.test, &build) {
        (Some(t), Some(b)) => test(&mut cx, root, &top.k("test"), t, b, &platforms),
        _ => None,
    };
    let recipe_tests = uses.iter().any(|u| {
        recipes
            .valid
            .get(&u.recipe)
            .is_some_and(|r| !r.test_checks.is_empty())
    });
    if raw.test.as_ref().is_some_and(|t| t.check.is_empty()) && !recipe_tests {
        cx.err(
            &top.k("test"),
            ErrorKind::MissingField,
            "[test] has no [[test.check]] and none of its recipes has one: a test phase must check something",
        );
    }
    if cx.diags.len() > before {
        return None;
    }
    Some(Image {
        name: ImageName(name?),
        description: raw.description.clone().unwrap_or_default(),
        version: version?,
        platform: platform?,
        architecture,
        source: source?,
        build: build?,
        recipes: uses,
        checks,
        publish: publish?,
        test,
        inputs,
        file: rel.to_path_buf(),
        // Description and publish settings do not change what is baked; everything else does.
        canonical: serde_json::to_string(&RawImage {
            description: None,
            publish: None,
            ..raw.clone()
        })
        .unwrap_or_default(),
    })
}

fn source(cx: &mut Ctx, path: &DocPath, s: &RawSource, arch: Architecture) -> Option<Source> {
    let set: Vec<&str> = [
        ("ami", s.ami.is_some()),
        ("ami_filter", s.ami_filter.is_some()),
        ("ssm_parameter", s.ssm_parameter.is_some()),
        ("image", s.image.is_some()),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(k, _)| *k)
    .collect();
    match set.as_slice() {
        [] => {
            if !cx.doc.was_removed_under(path) {
                let d = cx
                    .doc
                    .at(path, ErrorKind::MissingField, "the source needs exactly one of ami, ami_filter, ssm_parameter, image")
                    .with_hint("e.g. ssm_parameter = \"/aws/service/ami-windows-latest/Windows_Server-2022-English-Full-Base\"");
                cx.diags.push(d);
            }
            None
        }
        [_] => {
            if let Some(a) = &s.ami {
                cx.check(&path.k("ami"), ErrorKind::InvalidValue, values::ami_id(a))
                    .map(|_| Source::Ami(a.clone()))
            } else if let Some(p) = &s.ssm_parameter {
                cx.check(
                    &path.k("ssm_parameter"),
                    ErrorKind::InvalidValue,
                    values::ssm_parameter(p),
                )
                .map(|_| Source::SsmParameter(p.clone()))
            } else if let Some(f) = &s.ami_filter {
                let fp = path.k("ami_filter");
                let owners = f.owners.clone().unwrap_or_default();
                if f.name.is_none() {
                    cx.missing(&fp, "name", "add name = \"<AMI name pattern>\"");
                }
                if owners.is_empty() {
                    if f.owners.is_some() {
                        cx.err(
                            &fp.k("owners"),
                            ErrorKind::InvalidValue,
                            "owners must not be empty: an unowned filter could match anyone's AMI",
                        );
                    } else {
                        cx.missing(&fp, "owners", "add owners = [\"amazon\"] (or account ids): an unowned filter could match anyone's AMI");
                    }
                }
                let farch = f.architecture.unwrap_or(arch);
                if farch != arch {
                    cx.err(
                        &fp.k("architecture"),
                        ErrorKind::InvalidValue,
                        format!(
                            "the filter looks for {} AMIs but the image is {}",
                            farch.as_str(),
                            arch.as_str()
                        ),
                    );
                    return None;
                }
                Some(Source::AmiFilter {
                    name: f.name.clone()?,
                    owners: (!owners.is_empty()).then_some(owners)?,
                    architecture: farch,
                })
            } else {
                let v = s.image.as_deref().unwrap_or_default();
                let ip = path.k("image");
                let Some((n, req)) = v.split_once('@') else {
                    let d = cx
                        .doc
                        .at(
                            &ip,
                            ErrorKind::InvalidValue,
                            format!("`{v}` names no version"),
                        )
                        .with_hint(format!(
                            "write `{v}@^1` (a semver requirement) or `{v}@candidate` (a channel)"
                        ));
                    cx.diags.push(d);
                    return None;
                };
                let name = cx.check(&ip, ErrorKind::InvalidValue, values::image_name(n));
                let req = match values::parent_req(req) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        let d = cx.doc.at_text(&ip, req, ErrorKind::InvalidSemver, e);
                        cx.diags.push(d);
                        None
                    }
                };
                Some(Source::Image {
                    name: ImageName(name.map(|_| n.to_string())?),
                    req: req?,
                })
            }
        }
        [_, second, ..] => {
            let d = cx.doc.at_key(
                &path.k(second),
                ErrorKind::ConflictingFields,
                format!(
                    "the source is exactly one of ami, ami_filter, ssm_parameter, image; found {}",
                    set.join(" and ")
                ),
            );
            cx.diags.push(d);
            None
        }
    }
}

/// `[test]`: instance types default to the build's, the timeout to the build's launch timeout.
fn test(
    cx: &mut Ctx,
    root: &Path,
    path: &DocPath,
    t: &super::raw::RawTest,
    build: &Build,
    platforms: &[Platform],
) -> Option<TestSpec> {
    let mut instance_types = Vec::new();
    match &t.instance_types {
        None => instance_types = build.instance_types.clone(),
        Some(v) if v.is_empty() => cx.err(
            &path.k("instance_types"),
            ErrorKind::InvalidValue,
            "instance_types must not be empty (leave it out to use the build's)",
        ),
        Some(v) => {
            for (i, ty) in v.iter().enumerate() {
                if let Some(()) = cx.check(
                    &path.k("instance_types").i(i),
                    ErrorKind::InvalidInstanceType,
                    values::instance_type(ty),
                ) {
                    instance_types.push(InstanceType(ty.clone()));
                }
            }
        }
    }
    let timeout = timeout(
        cx,
        &path.k("timeout"),
        t.timeout.as_ref(),
        build.timeouts.launch,
    );
    let user_data = t
        .user_data
        .as_ref()
        .and_then(|rel| user_data(cx, root, &path.k("user_data"), rel));
    let mut checks = Vec::new();
    for (i, c) in t.check.iter().enumerate() {
        if let Some(c) = check::validate(c, cx.doc, &path.k("check").i(i), platforms, cx.diags) {
            checks.push(c);
        }
    }
    Some(TestSpec {
        instance_types,
        timeout,
        user_data,
        checks,
    })
}

fn timeout(cx: &mut Ctx, path: &DocPath, v: Option<&String>, default: Duration) -> Duration {
    match v {
        None => default,
        Some(s) => cx
            .check(path, ErrorKind::InvalidValue, values::duration(s))
            .unwrap_or(default),
    }
}

fn build(
    cx: &mut Ctx,
    root: &Path,
    path: &DocPath,
    raw: &RawImage,
    platform: Platform,
) -> Option<Build> {
    let Some(b) = &raw.build else {
        cx.missing(
            &DocPath::root(),
            "build",
            "add [build] with instance_types = [\"m6i.large\"]",
        );
        return None;
    };
    let before = cx.diags.len();
    let mut instance_types = Vec::new();
    match &b.instance_types {
        None => cx.missing(
            path,
            "instance_types",
            "add instance_types = [\"m6i.large\"] (in preference order)",
        ),
        Some(v) if v.is_empty() => cx.err(
            &path.k("instance_types"),
            ErrorKind::InvalidValue,
            "instance_types must not be empty",
        ),
        Some(v) => {
            for (i, t) in v.iter().enumerate() {
                if let Some(()) = cx.check(
                    &path.k("instance_types").i(i),
                    ErrorKind::InvalidInstanceType,
                    values::instance_type(t),
                ) {
                    instance_types.push(InstanceType(t.clone()));
                }
            }
        }
    }
    let vol = b.root_volume.clone().unwrap_or_default();
    if let Some(size) = vol.size_gb {
        if size == 0 || size > MAX_VOLUME_GB {
            cx.err(
                &path.k("root_volume").k("size_gb"),
                ErrorKind::InvalidValue,
                format!("size_gb must be between 1 and {MAX_VOLUME_GB}"),
            );
        }
    }
    let communicator = b.communicator.unwrap_or(match platform {
        Platform::Windows => Communicator::Ssm,
        Platform::Linux => Communicator::Ssh,
    });
    if b.ssh.is_some() && communicator != Communicator::Ssh {
        cx.err(
            &path.k("ssh"),
            ErrorKind::ConflictingFields,
            "ssh settings only apply with communicator = \"ssh\"",
        );
    }
    let ssh_raw = b.ssh.clone().unwrap_or_default();
    let user = ssh_raw.user.unwrap_or_else(|| {
        match platform {
            Platform::Windows => "Administrator",
            Platform::Linux => "ec2-user",
        }
        .to_string()
    });
    let ssh = Ssh {
        sudo: ssh_raw
            .sudo
            .unwrap_or(platform == Platform::Linux && user != "root"),
        user,
        port: ssh_raw.port.unwrap_or(22),
    };
    if ssh.port == 0 {
        cx.err(
            &path.k("ssh").k("port"),
            ErrorKind::InvalidValue,
            "port 0 is not a port",
        );
    }
    let user_data = match &b.user_data {
        None => None,
        Some(rel) => user_data(cx, root, &path.k("user_data"), rel),
    };
    let t = b.timeouts.clone().unwrap_or_default();
    let tp = path.k("timeouts");
    let timeouts = Timeouts {
        launch: timeout(cx, &tp.k("launch"), t.launch.as_ref(), DEFAULT_LAUNCH),
        step: timeout(cx, &tp.k("step"), t.step.as_ref(), DEFAULT_STEP),
        provision: timeout(
            cx,
            &tp.k("provision"),
            t.provision.as_ref(),
            DEFAULT_PROVISION,
        ),
        capture: timeout(cx, &tp.k("capture"), t.capture.as_ref(), DEFAULT_CAPTURE),
    };
    if cx.diags.len() > before {
        return None;
    }
    Some(Build {
        instance_types,
        root_volume: Volume {
            size_gb: vol.size_gb,
            volume_type: vol.volume_type.unwrap_or(VolumeType::Gp3),
        },
        communicator,
        ssh,
        user_data,
        timeouts,
    })
}

fn user_data(cx: &mut Ctx, root: &Path, path: &DocPath, rel: &str) -> Option<Template> {
    let ok = !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !ok {
        cx.err(
            path,
            ErrorKind::InvalidValue,
            format!("`{rel}` must be a relative path inside images/"),
        );
        return None;
    }
    let file = PathBuf::from("images").join(rel);
    if let Err(e) = super::recipe::no_links(root, &file) {
        cx.err(path, ErrorKind::InvalidValue, e);
        return None;
    }
    if !root.join(&file).is_file() {
        let d = cx
            .doc
            .at(
                path,
                ErrorKind::MissingFile,
                format!("file `{}` not found", file.display()),
            )
            .with_hint("user_data paths are relative to images/");
        cx.diags.push(d);
        return None;
    }
    let src = read_source(root, &file, cx.diags)?;
    let t = Template::file(src);
    check_syntax(&t).map_err(|d| cx.diags.push(d)).ok()?;
    Some(t)
}

fn recipe_use(
    cx: &mut Ctx,
    path: &DocPath,
    r: &super::raw::RawRecipeUse,
    platform: Option<Platform>,
    recipes: &RecipeSet,
) -> Option<RecipeUse> {
    let Some(name) = &r.use_ else {
        cx.missing(
            path,
            "use",
            "add use = \"<recipe>\" (a folder under recipes/)",
        );
        return None;
    };
    let up = path.k("use");
    if !recipes.folders.contains(name) {
        let hint = match did_you_mean(name, recipes.folders.iter().map(String::as_str)) {
            Some(m) => format!("did you mean `{m}`?"),
            None => "recipes are the folders under recipes/ that hold a recipe.toml".to_string(),
        };
        let d = cx
            .doc
            .at(
                &up,
                ErrorKind::UnknownRecipe,
                format!("unknown recipe `{name}`"),
            )
            .with_hint(hint);
        cx.diags.push(d);
        return None;
    }
    // A recipe that failed its own validation was reported there; do not pile on.
    let recipe = recipes.valid.get(&RecipeName(name.clone()))?;
    let before = cx.diags.len();
    if let Some(p) = platform {
        if !recipe.platforms.contains(&p) {
            let d = cx.doc.at(
                &up,
                ErrorKind::PlatformMismatch,
                format!(
                    "recipe `{name}` supports {}, not {}",
                    check::names(&recipe.platforms),
                    p.as_str()
                ),
            );
            cx.diags.push(d);
        }
    }
    let mut values = BTreeMap::new();
    for (k, v) in &r.with {
        let kp = path.k("with").k(k);
        let Some(spec) = recipe.params.get(k) else {
            let hint = match did_you_mean(k, recipe.params.keys().map(String::as_str)) {
                Some(m) => format!("did you mean `{m}`?"),
                None if recipe.params.is_empty() => format!("recipe `{name}` takes no parameters"),
                None => format!(
                    "recipe `{name}` takes: {}",
                    recipe.params.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            let d = cx
                .doc
                .at_key(
                    &kp,
                    ErrorKind::UnknownParam,
                    format!("recipe `{name}` has no parameter `{k}`"),
                )
                .with_hint(hint);
            cx.diags.push(d);
            continue;
        };
        match params::typed(spec.param_type, v) {
            Ok(pv) => {
                values.insert(k.clone(), pv);
            }
            Err(e) => {
                let mut d = cx
                    .doc
                    .at(&kp, e.kind, format!("parameter `{k}`: {}", e.message));
                d.hint = e.hint;
                if e.kind == ErrorKind::SecretLiteral {
                    // The source line would show the secret.
                    d.source_line = None;
                }
                cx.diags.push(d);
            }
        }
    }
    for (k, spec) in &recipe.params {
        if values.contains_key(k) || r.with.contains_key(k) {
            continue;
        }
        match &spec.default {
            Some(d) => {
                values.insert(k.clone(), d.clone());
            }
            None => {
                let doc = if spec.doc.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", spec.doc)
                };
                let d = cx
                    .doc
                    .at(
                        &up,
                        ErrorKind::MissingParam,
                        format!("recipe `{name}` needs parameter `{k}`{doc}"),
                    )
                    .with_hint(format!(
                        "add it: with = {{ {k} = ... }} ({})",
                        spec.param_type.as_str()
                    ));
                cx.diags.push(d);
            }
        }
    }
    if cx.diags.len() > before {
        return None;
    }
    Some(RecipeUse {
        recipe: recipe.name.clone(),
        params: values,
    })
}

fn publish(cx: &mut Ctx, path: &DocPath, raw: &RawImage) -> Option<Publish> {
    let p = raw.publish.clone().unwrap_or_default();
    let before = cx.diags.len();
    let mut regions = Vec::new();
    for (i, r) in p.regions.iter().flatten().enumerate() {
        if cx
            .check(
                &path.k("regions").i(i),
                ErrorKind::InvalidRegion,
                values::region(r),
            )
            .is_some()
        {
            regions.push(Region(r.clone()));
        }
    }
    let channels = p.channels.clone().unwrap_or_default();
    for (i, c) in channels.iter().enumerate() {
        cx.check(
            &path.k("channels").i(i),
            ErrorKind::InvalidValue,
            values::channel(c),
        );
    }
    let share = p.share.clone().unwrap_or_default();
    for (i, a) in share.accounts.iter().enumerate() {
        cx.check(
            &path.k("share").k("accounts").i(i),
            ErrorKind::InvalidValue,
            values::account_id(a),
        );
    }
    let unit = |arn: &str| super::model::OrgUnit::parse(arn).filter(|_| arn.starts_with("arn:aws"));
    for (i, ou) in share.ous.iter().enumerate() {
        if unit(ou).is_none_or(|u| u.ou.is_none()) {
            cx.err(&path.k("share").k("ous").i(i), ErrorKind::InvalidValue, format!(
                "`{ou}` is not an organizational unit ARN (arn:aws:organizations::<account>:ou/o-.../ou-...)"
            ));
        }
    }
    for (i, o) in share.organizations.iter().enumerate() {
        if unit(o).is_none_or(|u| u.ou.is_some()) {
            cx.err(&path.k("share").k("organizations").i(i), ErrorKind::InvalidValue, format!(
                "`{o}` is not an organization ARN (arn:aws:organizations::<account>:organization/o-...)"
            ));
        }
    }
    let deprecate_after = p.deprecate_after.as_ref().and_then(|d| {
        cx.check(
            &path.k("deprecate_after"),
            ErrorKind::InvalidValue,
            values::duration(d),
        )
    });
    // EnableImageDeprecation takes at most 10 years from now (EC2 API reference).
    if deprecate_after.is_some_and(|d| d > Duration::from_secs(3650 * 86_400)) {
        cx.err(
            &path.k("deprecate_after"),
            ErrorKind::InvalidValue,
            "deprecate_after is at most 3650d (EC2 deprecates at most 10 years ahead)",
        );
    }
    if p.imds_v1.as_ref().is_some_and(|r| r.trim().is_empty()) {
        cx.err(
            &path.k("imds_v1"),
            ErrorKind::InvalidValue,
            "imds_v1 needs the reason IMDSv1 stays allowed (software on the image that cannot use IMDSv2 tokens); without it the AMIs are IMDSv2-only",
        );
    }
    if p.keep == Some(0) {
        cx.err(
            &path.k("keep"),
            ErrorKind::InvalidValue,
            "keep must be at least 1: the newest version is always kept",
        );
    }
    let fast_launch = p.fast_launch.as_ref().map(|f| {
        let fl = path.k("fast_launch");
        if raw.platform != Some(Platform::Windows) {
            cx.err(
                &fl,
                ErrorKind::InvalidValue,
                "fast_launch is for Windows images (EC2 Fast Launch pre-provisions Windows instances)",
            );
        }
        let parallel = f.max_parallel_launches.unwrap_or(6);
        if parallel < 6 {
            cx.err(
                &fl.k("max_parallel_launches"),
                ErrorKind::InvalidValue,
                format!("max_parallel_launches is {parallel}: EC2 Fast Launch needs 6 or more"),
            );
        }
        let count = f.target_resource_count.unwrap_or(5);
        if count == 0 {
            cx.err(
                &fl.k("target_resource_count"),
                ErrorKind::InvalidValue,
                "target_resource_count must be at least 1",
            );
        }
        let templates = f.launch_templates.clone().unwrap_or_default();
        for (region, lt) in &templates {
            let at = fl.k("launch_templates").k(region);
            cx.check(&at, ErrorKind::InvalidRegion, values::region(region));
            let ok = lt
                .strip_prefix("lt-")
                .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                cx.err(
                    &at,
                    ErrorKind::InvalidValue,
                    format!("`{lt}` is not a launch template id (lt-<hex>)"),
                );
            }
        }
        FastLaunch {
            max_parallel_launches: parallel,
            target_resource_count: count,
            launch_templates: templates,
        }
    });
    if cx.diags.len() > before {
        return None;
    }
    Some(Publish {
        regions,
        channels,
        share: Share {
            accounts: share.accounts,
            ous: share.ous,
            organizations: share.organizations,
        },
        deprecate_after,
        keep: p.keep,
        imds_v1: p.imds_v1.clone(),
        fast_launch,
    })
}
