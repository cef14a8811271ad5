//! The validated catalog model: what loading proves, in types that cannot hold invalid states.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::diag::SourceText;
pub use super::raw::{Architecture, Communicator, ParamType, Platform, VolumeType};
use crate::checks::CheckKind;

string_id!(
    /// An image name: lowercase letters, digits and dashes.
    pub(crate) ImageName
);
string_id!(
    /// A recipe name: the folder under `recipes/`.
    pub(crate) RecipeName
);
string_id!(
    /// An EC2 instance type such as `m6i.large`.
    pub(crate) InstanceType
);
string_id!(
    /// An AWS region such as `eu-west-1`.
    pub(crate) Region
);

impl ImageName {
    /// For code that already validated the name (tests, generated catalogs).
    pub fn new_unchecked(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

/// `major.minor` of an image; bakery assigns the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MajorMinor {
    pub major: u64,
    pub minor: u64,
}

impl fmt::Display for MajorMinor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A template and where its text starts in its file, so render errors point into the file.
#[derive(Debug, Clone)]
pub struct Template {
    pub text: String,
    pub src: Arc<SourceText>,
    /// Byte offset in `src` where `text` starts (0 for a template file).
    pub offset: usize,
    /// Label for fingerprints and messages: `recipes/jdk/install.ps1`.
    pub label: String,
    /// The parsed template, made once and shared by every render of it.
    pub(crate) parsed: Arc<Parsed>,
    /// False when the source spells the text differently (TOML escapes), so positions inside
    /// the text cannot be mapped to the file: errors then point at the whole value.
    pub exact: bool,
}

impl Template {
    pub fn new(text: String, src: Arc<SourceText>, offset: usize, label: String) -> Self {
        Template {
            text,
            src,
            offset,
            label,
            parsed: Arc::default(),
            exact: true,
        }
    }

    /// A template that is a whole file (its text is the file's text).
    pub fn file(src: SourceText) -> Self {
        let label = src.path.display().to_string();
        Template::new(src.text.clone(), Arc::new(src), 0, label)
    }
}

/// A tera instance holding one parsed template (tera types have no Debug).
#[derive(Default)]
pub struct Parsed(pub(crate) std::sync::OnceLock<tera::Tera>);

impl fmt::Debug for Parsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Parsed"
        } else {
            "Unparsed"
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentReq {
    Semver(#[serde(serialize_with = "ser_display")] semver::VersionReq),
    Channel(String),
}

fn ser_display<S: serde::Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl fmt::Display for ParentReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParentReq::Semver(r) => write!(f, "{r}"),
            ParentReq::Channel(c) => f.write_str(c),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Ami(String),
    AmiFilter {
        name: String,
        owners: Vec<String>,
        architecture: Architecture,
    },
    SsmParameter(String),
    Image {
        name: ImageName,
        req: ParentReq,
    },
}

impl fmt::Display for Source {
    /// As a person writes it: `image amazon-linux-2023-base@^1`, `ami ami-0123…`,
    /// `ssm_parameter /aws/service/…`, `ami_filter al2023-ami-* (owners amazon, x86_64)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ami(id) => write!(f, "ami {id}"),
            Source::SsmParameter(p) => write!(f, "ssm_parameter {p}"),
            Source::Image { name, req } => write!(f, "image {name}@{req}"),
            Source::AmiFilter {
                name,
                owners,
                architecture,
            } => write!(
                f,
                "ami_filter {name} (owners {}, {})",
                owners.join(", "),
                architecture.as_str()
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    /// `None`: keep the source AMI's root volume size.
    pub size_gb: Option<u32>,
    pub volume_type: VolumeType,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    /// Steps and probes run through `sudo`.
    pub sudo: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeouts {
    pub launch: Duration,
    pub step: Duration,
    pub provision: Duration,
    pub capture: Duration,
}

#[derive(Debug, Clone)]
pub struct Build {
    pub instance_types: Vec<InstanceType>,
    pub root_volume: Volume,
    pub communicator: Communicator,
    pub ssh: Ssh,
    pub user_data: Option<Template>,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Share {
    pub accounts: Vec<String>,
    pub ous: Vec<String>,
    pub organizations: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Publish {
    /// Empty: the target's regions.
    pub regions: Vec<Region>,
    pub channels: Vec<String>,
    pub share: Share,
    pub deprecate_after: Option<Duration>,
    pub keep: Option<u32>,
    /// Why the image allows IMDSv1; `None`: the AMIs are IMDSv2-only.
    pub imds_v1: Option<String>,
    /// EC2 Fast Launch on every published AMI (Windows images).
    pub fast_launch: Option<FastLaunch>,
}

/// `publish.fast_launch`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FastLaunch {
    pub max_parallel_launches: u32,
    pub target_resource_count: u32,
    /// Region -> launch template id (`lt-…`), latest version.
    pub launch_templates: BTreeMap<String, String>,
}

/// A reference to a secret, looked up on the instance at run time; its value never passes
/// through bakery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    Ssm(String),
    SecretsManager(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    String(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
    Secret(SecretRef),
}

#[derive(Debug, Clone)]
pub struct RecipeUse {
    pub recipe: RecipeName,
    /// Every parameter of the recipe, with the image's value or the recipe's default.
    pub params: BTreeMap<String, ParamValue>,
}

/// A check whose strings are still templates.
#[derive(Debug, Clone)]
pub struct CheckTemplate {
    pub name: Option<String>,
    pub platform: Option<Platform>,
    pub kind: CheckKind,
    pub src: Arc<SourceText>,
    /// Each templated string of `kind` (keyed by its text), parsed once at load.
    pub templates: BTreeMap<String, Template>,
}

#[derive(Debug, Clone)]
pub struct Image {
    pub name: ImageName,
    pub description: String,
    pub version: MajorMinor,
    pub platform: Platform,
    pub architecture: Architecture,
    pub source: Source,
    pub build: Build,
    pub recipes: Vec<RecipeUse>,
    pub checks: Vec<CheckTemplate>,
    pub publish: Publish,
    /// `[test]`: checks on a fresh instance launched from the new AMI.
    pub test: Option<TestSpec>,
    /// `[inputs.<name>]`: live values (their sources render in the image's context).
    pub inputs: Vec<Input>,
    /// `images/<name>.toml`, relative to the project.
    pub file: PathBuf,
    /// Canonical JSON of the definition, for the fingerprint (comments and layout do not count).
    pub canonical: String,
}

/// `[test]` of an image.
#[derive(Debug, Clone)]
pub struct TestSpec {
    pub instance_types: Vec<InstanceType>,
    pub timeout: std::time::Duration,
    pub user_data: Option<Template>,
    pub checks: Vec<CheckTemplate>,
}

#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub param_type: ParamType,
    pub default: Option<ParamValue>,
    pub doc: String,
}

#[derive(Debug, Clone)]
pub enum Script {
    File(Template),
    Inline(Template),
}

impl Script {
    pub fn template(&self) -> &Template {
        match self {
            Script::File(t) | Script::Inline(t) => t,
        }
    }
}

/// A file shipped with a recipe: its path relative to the recipe folder and its bytes.
#[derive(Debug, Clone)]
pub struct RecipeFile {
    pub rel: String,
    pub bytes: Vec<u8>,
    /// Set when the step renders it (`template = true`).
    pub template: Option<Template>,
}

#[derive(Debug, Clone)]
pub enum StepAction {
    Shell(Script),
    PowerShell(Script),
    File {
        source: String,
        is_dir: bool,
        files: Vec<RecipeFile>,
        destination: Template,
        mode: Option<u32>,
    },
    Download {
        url: Template,
        sha256: Template,
        destination: Template,
    },
    Restart {
        timeout: Option<Duration>,
    },
    WindowsUpdate {
        categories: UpdateList,
        exclude_kbs: UpdateList,
        max_passes: u32,
    },
}

/// A `windows_update` list: checked when loaded, or a template checked once rendered.
#[derive(Debug, Clone)]
pub enum UpdateList {
    Fixed(Vec<String>),
    Template(Template),
}

impl StepAction {
    /// Platforms the step kind can run on.
    pub fn runs_on(&self, p: Platform) -> bool {
        match self {
            StepAction::Shell(_) => p == Platform::Linux,
            StepAction::PowerShell(_) | StepAction::WindowsUpdate { .. } => p == Platform::Windows,
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: Option<String>,
    pub platform: Option<Platform>,
    pub timeout: Option<Duration>,
    pub env: BTreeMap<String, Template>,
    pub action: StepAction,
}

#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: RecipeName,
    pub description: String,
    pub platforms: Vec<Platform>,
    /// Steps run after the checks, right before capture.
    pub finalize: bool,
    pub params: BTreeMap<String, ParamSpec>,
    pub steps: Vec<Step>,
    pub checks: Vec<CheckTemplate>,
    /// `[[test.check]]`: checks for the test phase of every image using the recipe.
    pub test_checks: Vec<CheckTemplate>,
    /// `[inputs.<name>]`: live values (their sources render with the recipe's parameters).
    pub inputs: Vec<Input>,
    /// `recipes/<name>`, relative to the project.
    pub dir: PathBuf,
    /// Canonical JSON of `recipe.toml`.
    pub canonical: String,
}

/// Where a live input is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// The sha256 of what a URL serves.
    Http,
    /// What a URL serves, as text (`body = "text"`).
    HttpText,
    SsmParameter,
}

/// An organization or organizational unit an image is shared with, from its ARN
/// (`arn:aws:organizations::<account>:organization/o-…` or `…:ou/o-…/ou-…`): what the catalog
/// accepts in `publish.share` and what the KMS preflight checks the key policy for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgUnit {
    /// `o-…`
    pub org: String,
    /// `ou-…`; none for the whole organization.
    pub ou: Option<String>,
}

impl OrgUnit {
    pub fn parse(arn: &str) -> Option<OrgUnit> {
        let resource = arn.strip_prefix("arn:")?.split(':').nth(4)?;
        match resource.split('/').collect::<Vec<_>>()[..] {
            ["organization", org] if org.starts_with("o-") => Some(OrgUnit {
                org: org.into(),
                ou: None,
            }),
            ["ou", org, ou] if org.starts_with("o-") && ou.starts_with("ou-") => Some(OrgUnit {
                org: org.into(),
                ou: Some(ou.into()),
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for OrgUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ou {
            Some(ou) => write!(f, "OU {ou} of {}", self.org),
            None => write!(f, "organization {}", self.org),
        }
    }
}

/// `[inputs.<name>]` of an image or recipe.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub kind: InputKind,
    /// The URL or parameter name, a template.
    pub source: Template,
    /// `bearer_token_env`: the environment variable whose token the request carries.
    pub token_env: Option<String>,
}

/// A target from `bakery.toml`.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub regions: Vec<Region>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub subnet: Option<String>,
    pub security_group: Option<String>,
    pub instance_profile: Option<String>,
    pub kms_key: Option<String>,
    pub kms_keys: BTreeMap<String, String>,
    pub s3_bucket: Option<String>,
    pub ssm_prefix: String,
    pub ssh_host: Option<String>,
    pub ssh_port: Option<u16>,
    pub ssh_user: Option<String>,
    pub ssh_cidr: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Prices for cost estimates (`prices` in bakery.toml, else the shipped table).
    #[serde(skip)]
    pub prices: crate::cost::Prices,
    /// Accounts that launch the images (shared with, parameters mirrored into them).
    pub consumers: Vec<Consumer>,
    /// The credentials are a consumer account's: the registry is read from the mirror.
    pub consumer: bool,
}

/// An account that launches what a target publishes, and the role bakery assumes there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consumer {
    pub account: String,
    pub role_arn: String,
    pub external_id: Option<String>,
    /// Regions it launches in (a subset of the target's).
    pub regions: Vec<Region>,
    /// SSM prefix of the mirror in that account.
    pub ssm_prefix: String,
}

/// SSM prefix when a target does not name one.
pub const DEFAULT_SSM_PREFIX: &str = "/bakery";

impl Target {
    /// Refuses what only the bakery account may do (bake, move or remove versions) on a target
    /// whose credentials are a consumer's.
    pub fn writable(&self) -> Result<(), String> {
        if self.consumer {
            return Err(format!(
                "target {} is a consumer account (consumer = true in bakery.toml): it can resolve, lock and check pins, but versions are made and moved from the bakery account's target",
                self.name
            ));
        }
        Ok(())
    }

    /// The accounts an image is shared with in `region`: its own `share.accounts` and every
    /// consumer that launches there (sorted, each once), so no consumer is ever given
    /// parameters naming an AMI it cannot launch.
    pub fn share_accounts(&self, image: &[String], region: &str) -> Vec<String> {
        let mut out: std::collections::BTreeSet<String> = image.iter().cloned().collect();
        out.extend(
            self.consumers
                .iter()
                .filter(|c| c.regions.iter().any(|r| r.as_str() == region))
                .map(|c| c.account.clone()),
        );
        out.into_iter().collect()
    }

    /// The target used when none is named (offline validation, render, plan).
    pub fn offline() -> Self {
        Target {
            name: "default".into(),
            regions: Vec::new(),
            profile: None,
            endpoint_url: None,
            subnet: None,
            security_group: None,
            instance_profile: None,
            kms_key: None,
            kms_keys: BTreeMap::new(),
            s3_bucket: None,
            ssm_prefix: DEFAULT_SSM_PREFIX.into(),
            ssh_host: None,
            ssh_port: None,
            ssh_user: None,
            ssh_cidr: None,
            tags: BTreeMap::new(),
            prices: Default::default(),
            consumers: Vec::new(),
            consumer: false,
        }
    }
}
