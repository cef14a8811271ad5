//! Check kinds: what an image must prove before it is captured. Parsed and validated by the
//! catalog; probes and evaluation come with the bake runner.

use serde::Serialize;

pub use crate::catalog::raw::{ServiceState, StartMode};

/// One verification, with its strings already rendered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// A display name: the author's, or one derived from the kind (`service BuildAgent`).
    pub name: String,
    #[serde(flatten)]
    pub kind: CheckKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckKind {
    Command {
        command: String,
        exit_code: i32,
        stdout_contains: Option<String>,
        stdout_matches: Option<String>,
    },
    File {
        path: String,
        exists: bool,
        contains: Option<String>,
        sha256: Option<String>,
        mode: Option<u32>,
    },
    Service {
        service: String,
        state: Option<ServiceState>,
        start_mode: Option<StartMode>,
    },
    Port {
        port: u16,
        listening: bool,
    },
    Http {
        url: String,
        status: u16,
        body_contains: Option<String>,
    },
    Package {
        package: String,
        installed: bool,
        version: Option<String>,
    },
    Registry {
        key: String,
        value: Option<String>,
        equals: Option<String>,
    },
    Hotfix {
        hotfix: String,
        installed: bool,
    },
    WindowsFeature {
        feature: String,
        installed: bool,
    },
}

impl CheckKind {
    /// The kind key as written in TOML.
    pub fn key(&self) -> &'static str {
        match self {
            CheckKind::Command { .. } => "command",
            CheckKind::File { .. } => "file",
            CheckKind::Service { .. } => "service",
            CheckKind::Port { .. } => "port",
            CheckKind::Http { .. } => "http",
            CheckKind::Package { .. } => "package",
            CheckKind::Registry { .. } => "registry",
            CheckKind::Hotfix { .. } => "hotfix",
            CheckKind::WindowsFeature { .. } => "windows_feature",
        }
    }

    /// A short default name: the kind and its subject.
    pub fn default_name(&self) -> String {
        let subject = match self {
            CheckKind::Command { command, .. } => command.lines().next().unwrap_or("").to_string(),
            CheckKind::File { path, .. } => path.clone(),
            CheckKind::Service { service, .. } => service.clone(),
            CheckKind::Port { port, .. } => port.to_string(),
            CheckKind::Http { url, .. } => url.clone(),
            CheckKind::Package { package, .. } => package.clone(),
            CheckKind::Registry { key, value, .. } => match value {
                Some(v) => format!("{key}\\{v}"),
                None => key.clone(),
            },
            CheckKind::Hotfix { hotfix, .. } => hotfix.clone(),
            CheckKind::WindowsFeature { feature, .. } => feature.clone(),
        };
        format!("{} {subject}", self.key())
    }

    /// Applies `f` to every string that is a template (so the catalog can render a check).
    pub fn try_map_strings<E>(
        &self,
        mut f: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<CheckKind, E> {
        let mut opt = |o: &Option<String>| -> Result<Option<String>, E> {
            o.as_deref().map(&mut f).transpose()
        };
        Ok(match self {
            CheckKind::Command {
                command,
                exit_code,
                stdout_contains,
                stdout_matches,
            } => {
                let stdout_contains = opt(stdout_contains)?;
                let stdout_matches = opt(stdout_matches)?;
                CheckKind::Command {
                    command: f(command)?,
                    exit_code: *exit_code,
                    stdout_contains,
                    stdout_matches,
                }
            }
            CheckKind::File {
                path,
                exists,
                contains,
                sha256,
                mode,
            } => {
                let contains = opt(contains)?;
                let sha256 = opt(sha256)?;
                CheckKind::File {
                    path: f(path)?,
                    exists: *exists,
                    contains,
                    sha256,
                    mode: *mode,
                }
            }
            CheckKind::Service {
                service,
                state,
                start_mode,
            } => CheckKind::Service {
                service: f(service)?,
                state: *state,
                start_mode: *start_mode,
            },
            CheckKind::Port { .. } => self.clone(),
            CheckKind::Http {
                url,
                status,
                body_contains,
            } => {
                let body_contains = opt(body_contains)?;
                CheckKind::Http {
                    url: f(url)?,
                    status: *status,
                    body_contains,
                }
            }
            CheckKind::Package {
                package,
                installed,
                version,
            } => {
                let version = opt(version)?;
                CheckKind::Package {
                    package: f(package)?,
                    installed: *installed,
                    version,
                }
            }
            CheckKind::Registry { key, value, equals } => {
                let value = opt(value)?;
                let equals = opt(equals)?;
                CheckKind::Registry {
                    key: f(key)?,
                    value,
                    equals,
                }
            }
            CheckKind::Hotfix { hotfix, installed } => CheckKind::Hotfix {
                hotfix: f(hotfix)?,
                installed: *installed,
            },
            CheckKind::WindowsFeature { feature, installed } => CheckKind::WindowsFeature {
                feature: f(feature)?,
                installed: *installed,
            },
        })
    }
}

pub mod eval;
pub mod probe;
pub mod report;
