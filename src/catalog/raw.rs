//! The file formats as written: `Raw*` types that serde fills (unknown fields are errors) and that
//! `bakery schema` publishes. Required fields are `Option` here on purpose: validation reports
//! every missing one with its place, instead of serde stopping at the first.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `bakery.toml`: targets, the per-account settings images must not carry.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    /// Named targets, e.g. `[targets.prod]`.
    #[serde(default)]
    pub targets: BTreeMap<String, RawTarget>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// AWS regions; the first is the build region.
    pub regions: Option<Vec<String>>,
    /// AWS profile (default credential chain when absent).
    pub profile: Option<String>,
    /// Endpoint URL for every AWS service (e.g. a local emulator).
    pub endpoint_url: Option<String>,
    /// Subnet for the build instance.
    pub subnet: Option<String>,
    /// Security group; without it a temporary one is created for the bake.
    pub security_group: Option<String>,
    /// IAM instance profile name for the build instance.
    pub instance_profile: Option<String>,
    /// KMS key for every region.
    pub kms_key: Option<String>,
    /// KMS key per region (wins over `kms_key`).
    pub kms_keys: Option<BTreeMap<String, String>>,
    /// S3 bucket for SSM file transfer and full command output.
    pub s3_bucket: Option<String>,
    /// SSM parameter prefix (default `/bakery`).
    pub ssm_prefix: Option<String>,
    /// Connect to this host instead of the instance address.
    pub ssh_host: Option<String>,
    /// Connect to this port instead of the communicator port.
    pub ssh_port: Option<u16>,
    /// Log in as this user instead of the image's (sandbox).
    pub ssh_user: Option<String>,
    /// Ingress CIDR for the temporary security group (default: the caller's /32).
    pub ssh_cidr: Option<String>,
    /// Extra tags on everything a bake creates.
    pub tags: Option<BTreeMap<String, String>>,
    /// Price table for cost estimates, relative to the project (default: the shipped
    /// prices/aws-on-demand.toml).
    pub prices: Option<String>,
    /// Accounts that launch what this target publishes: bakery shares each AMI with them and
    /// mirrors the registry's parameters into them through a role it assumes there.
    pub consumers: Option<Vec<RawConsumer>>,
    /// These credentials belong to a consumer account: `resolve`, `lock` and `outdated` read
    /// the parameters bakery mirrored here (AMI tags do not cross accounts).
    pub consumer: Option<bool>,
}

/// `[[targets.<name>.consumers]]`: an account that launches the images.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    /// The consumer's 12-digit account id.
    pub account: Option<String>,
    /// The role bakery assumes in that account (`arn:aws:iam::<account>:role/<name>`).
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for, if any.
    pub external_id: Option<String>,
    /// Regions the consumer launches in: each one of the target's regions (default: all).
    pub regions: Option<Vec<String>>,
    /// SSM prefix in the consumer account (default: the target's).
    pub ssm_prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Windows,
    Linux,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Windows => "windows",
            Platform::Linux => "linux",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    #[default]
    X86_64,
    Arm64,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
        }
    }
}

/// `images/<name>.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    /// Unique image name: lowercase letters, digits and dashes.
    pub name: Option<String>,
    pub description: Option<String>,
    /// `major.minor`; bakery assigns the patch at bake time.
    pub version: Option<String>,
    pub platform: Option<Platform>,
    pub architecture: Option<Architecture>,
    pub source: Option<RawSource>,
    pub build: Option<RawBuild>,
    /// Recipes, applied in order.
    #[serde(default)]
    pub recipe: Vec<RawRecipeUse>,
    /// Image checks, run after every recipe's own checks.
    #[serde(default)]
    pub check: Vec<RawCheck>,
    pub publish: Option<RawPublish>,
    /// A fresh instance launched from the new AMI, after capture and before anything is
    /// distributed or published; its checks must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<RawTest>,
    /// Live values read at plan and bake time: `[inputs.<name>]` with `http` or
    /// `ssm_parameter`, used in templates as `inputs.<name>.sha256` / `.value`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, RawInput>,
}

/// `[test]` of an image.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTest {
    /// Instance types for the test instance, in preference order (default: the build's).
    pub instance_types: Option<Vec<String>>,
    /// How long the test instance may take to boot and answer (default: the build's launch
    /// timeout).
    pub timeout: Option<String>,
    /// User data for the test instance (a template under images/), e.g. what a TeamCity cloud
    /// profile gives an agent; default: none.
    pub user_data: Option<String>,
    /// Checks on the fresh instance, of every kind an image check may be.
    #[serde(default)]
    pub check: Vec<RawCheck>,
}

/// Where the image starts: exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// A fixed AMI id.
    pub ami: Option<String>,
    /// The newest AMI matching a filter.
    pub ami_filter: Option<RawAmiFilter>,
    /// An SSM parameter holding an AMI id (e.g. AWS public parameters).
    pub ssm_parameter: Option<String>,
    /// Another bakery image: `name@<semver requirement or channel>`.
    pub image: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAmiFilter {
    /// AMI name pattern (`*` wildcards).
    pub name: Option<String>,
    /// Owner account ids or aliases (`amazon`, `self`, ...).
    pub owners: Option<Vec<String>>,
    pub architecture: Option<Architecture>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Communicator {
    Ssm,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    Gp3,
    Gp2,
    Io1,
    Io2,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBuild {
    /// Instance types in preference order.
    pub instance_types: Option<Vec<String>>,
    pub root_volume: Option<RawVolume>,
    pub communicator: Option<Communicator>,
    pub ssh: Option<RawSsh>,
    /// A tera template (relative to `images/`) rendered into the instance user data.
    pub user_data: Option<String>,
    pub timeouts: Option<RawTimeouts>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVolume {
    pub size_gb: Option<u32>,
    #[serde(rename = "type")]
    pub volume_type: Option<VolumeType>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Run steps and probes with `sudo` (default: true unless the user is root).
    pub sudo: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub launch: Option<String>,
    pub step: Option<String>,
    pub provision: Option<String>,
    pub capture: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRecipeUse {
    /// Recipe name (a folder under `recipes/`).
    #[serde(rename = "use")]
    pub use_: Option<String>,
    /// Parameter values.
    #[serde(default, rename = "with")]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub with: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPublish {
    pub regions: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    pub share: Option<RawShare>,
    pub deprecate_after: Option<String>,
    pub keep: Option<u32>,
    /// Allow IMDSv1 on instances launched from the image, and why. Without it the AMI and every
    /// copy are marked IMDSv2-only (`ImdsSupport = v2.0`, which AWS cannot undo).
    pub imds_v1: Option<String>,
    /// EC2 Fast Launch for a Windows image: enabled on the new AMI in every publish region
    /// after publish, disabled on versions that prune removes.
    pub fast_launch: Option<RawFastLaunch>,
}

/// `[inputs.<name>]`: a live value read at plan and bake time.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    /// URL (a template): the input is the sha256 of the body it serves (conditional requests
    /// skip the download when it did not change).
    pub http: Option<String>,
    /// SSM parameter name (a template): the input is its value.
    pub ssm_parameter: Option<String>,
    /// With `http`: `"sha256"` (default: the input is the sha256 of the body, `value` is the
    /// URL) or `"text"` (`value` is the body itself, trimmed: short UTF-8 text such as a
    /// version, at most 4 KiB, read in full every time).
    pub body: Option<String>,
    /// With `http`: an environment variable holding a token sent as `Authorization: Bearer
    /// <token>` (read when the input is read; never logged, recorded or part of the
    /// fingerprint).
    pub bearer_token_env: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFastLaunch {
    /// Instances launched at once to pre-provision snapshots (6 or more; default 6).
    pub max_parallel_launches: Option<u32>,
    /// Pre-provisioned snapshots kept ready (default 5).
    pub target_resource_count: Option<u32>,
    /// Launch template (`lt-…`) per region for the pre-provisioning instances; needed where the
    /// instances cannot use the default VPC (a region without one, or a target subnet).
    pub launch_templates: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShare {
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub ous: Vec<String>,
    #[serde(default)]
    pub organizations: Vec<String>,
}

/// `recipes/<name>/recipe.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRecipe {
    pub description: Option<String>,
    pub platforms: Option<Vec<Platform>>,
    /// Run this recipe's steps after every check, right before capture (generalisation such as
    /// sysprep or cloud-init clean, after which the instance cannot be verified). Such a recipe
    /// has no checks and comes last in an image.
    #[serde(default)]
    pub finalize: bool,
    #[serde(default)]
    pub params: BTreeMap<String, RawParam>,
    #[serde(default)]
    pub step: Vec<RawStep>,
    #[serde(default)]
    pub check: Vec<RawCheck>,
    /// Checks on a fresh instance launched from the new AMI (the test phase of every image
    /// that uses this recipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<RawRecipeTest>,
    /// Live values read at plan and bake time: `[inputs.<name>]` with `http` or
    /// `ssm_parameter` (templates with the recipe's parameters), used in templates as
    /// `inputs.<name>.sha256` / `.value`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, RawInput>,
}

/// `[test]` of a recipe: only checks (the image says how the test instance is launched).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRecipeTest {
    #[serde(default)]
    pub check: Vec<RawCheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Int,
    Bool,
    List,
    Secret,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Bool => "bool",
            ParamType::List => "list",
            ParamType::Secret => "secret",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawParam {
    #[serde(rename = "type")]
    pub param_type: Option<ParamType>,
    /// Without a default the image must pass the parameter.
    #[schemars(with = "Option<serde_json::Value>")]
    pub default: Option<toml::Value>,
    pub doc: Option<String>,
}

/// One step: exactly one kind key (`shell`, `powershell`, `file`, `download`, `restart`,
/// `windows_update`) plus common options.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub name: Option<String>,
    /// Run only on this platform.
    pub platform: Option<Platform>,
    pub timeout: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub shell: Option<RawScript>,
    pub powershell: Option<RawScript>,
    pub file: Option<RawFileStep>,
    pub download: Option<RawDownload>,
    pub restart: Option<RawRestart>,
    pub windows_update: Option<RawWindowsUpdate>,
}

/// A script: a template file in the recipe folder, or inline text.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScript {
    pub script: Option<String>,
    pub inline: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFileStep {
    /// File or directory in the recipe folder.
    pub source: Option<String>,
    /// Absolute, or relative to the per-bake working directory.
    pub destination: Option<String>,
    /// Render the file(s) with tera.
    #[serde(default)]
    pub template: bool,
    /// Unix mode, e.g. "0644" (Linux only).
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDownload {
    pub url: Option<String>,
    pub sha256: Option<String>,
    pub destination: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWindowsUpdate {
    /// Update classifications (default: CriticalUpdates, SecurityUpdates): a list, or a
    /// template that renders to a comma-separated one (`"{{ params.categories | join(sep=',') }}"`).
    pub categories: Option<ListOrText>,
    /// Updates not to install, by KB article (`KB5034439`): a list, or a template as above.
    pub exclude_kbs: Option<ListOrText>,
    pub max_passes: Option<u32>,
}

/// A list written out, or a template that renders to a comma-separated list.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ListOrText {
    List(Vec<String>),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartMode {
    Auto,
    Manual,
    Disabled,
}

/// One check: exactly one kind key plus that kind's options.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub name: Option<String>,
    /// Run only on this platform (for recipes that support several).
    pub platform: Option<Platform>,
    // kinds
    pub command: Option<String>,
    pub file: Option<String>,
    pub service: Option<String>,
    pub port: Option<u16>,
    pub http: Option<String>,
    pub package: Option<String>,
    pub registry: Option<String>,
    pub hotfix: Option<String>,
    pub windows_feature: Option<String>,
    // options
    pub exit_code: Option<i32>,
    pub stdout_contains: Option<String>,
    pub stdout_matches: Option<String>,
    pub exists: Option<bool>,
    pub contains: Option<String>,
    pub sha256: Option<String>,
    pub mode: Option<String>,
    pub state: Option<ServiceState>,
    pub start_mode: Option<StartMode>,
    pub listening: Option<bool>,
    pub status: Option<u16>,
    pub body_contains: Option<String>,
    pub installed: Option<bool>,
    pub version: Option<String>,
    pub value: Option<String>,
    pub equals: Option<String>,
}
