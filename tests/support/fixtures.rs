//! Fixture projects in temporary directories.

use std::path::{Path, PathBuf};

pub const BASE_IMAGE: &str = r#"name = "base"
description = "base image"
version = "1.0"
platform = "linux"

[source]
ssm_parameter = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"

[build]
instance_types = ["t3.micro", "t3.small"]
communicator = "ssh"

[[recipe]]
use = "demo"
with = { greeting = "hello", count = 2 }

[[check]]
file = "/etc/os-release"

[publish]
regions = ["us-east-1"]
channels = ["candidate"]
"#;

pub const CHILD_IMAGE: &str = r#"name = "child"
version = "2.1"
platform = "linux"

[source]
image = "base@^1"

[build]
instance_types = ["t3.micro"]

[[recipe]]
use = "demo"
with = { greeting = "hi" }
"#;

pub const WIN_IMAGE: &str = r#"name = "winimg"
version = "1.0"
platform = "windows"

[source]
ami = "ami-0123456789abcdef0"

[build]
instance_types = ["m6i.large"]

[[recipe]]
use = "win"
with = { server_url = "https://tc.example.com" }
"#;

pub const DEMO_RECIPE: &str = r#"description = "demo recipe"
platforms = ["linux"]

[params.greeting]
type = "string"
default = "hello"

[params.count]
type = "int"
default = 1

[params.token]
type = "secret"
default = { ssm = "/demo/token" }

[[step]]
name = "greet"
shell = { script = "greet.sh" }
timeout = "5m"

[[step]]
shell = { inline = "echo {{ params.count }} {{ secret(name='token') }}" }

[[step]]
file = { source = "files", destination = "app", template = true }

[[check]]
command = "cat {{ workdir }}/greeting"
stdout_contains = "{{ params.greeting }}"
"#;

pub const GREET_SH: &str = r#"#!/bin/bash
echo "{{ params.greeting }} from {{ image.name }}" > "{{ workdir }}/greeting"
"#;

pub const APP_CONF: &str = "name = {{ image.name }}\nversion = {{ image.version }}\n";

pub const WIN_RECIPE: &str = r#"description = "windows recipe"
platforms = ["windows"]

[params.server_url]
type = "string"
doc = "TeamCity server URL"

[[step]]
powershell = { inline = "Write-Output '{{ params.server_url }}'" }
"#;

pub const BAKERY_TOML: &str = r#"[targets.sandbox]
regions = ["us-east-1"]
endpoint_url = "http://127.0.0.1:5000"
ssh_host = "127.0.0.1"
ssh_port = 2222
"#;

/// The fixture files, path -> content.
pub fn fixture_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("images/base.toml", BASE_IMAGE),
        ("images/child.toml", CHILD_IMAGE),
        ("images/winimg.toml", WIN_IMAGE),
        ("recipes/demo/recipe.toml", DEMO_RECIPE),
        ("recipes/demo/greet.sh", GREET_SH),
        ("recipes/demo/files/app.conf", APP_CONF),
        ("recipes/win/recipe.toml", WIN_RECIPE),
        ("bakery.toml", BAKERY_TOML),
    ]
}

/// A temporary project with the given files.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, text) in files {
            write(dir.path(), rel, text);
        }
        Project { dir }
    }

    pub fn fixture() -> Self {
        let files: Vec<(&str, String)> = fixture_files()
            .into_iter()
            .map(|(p, t)| (p, t.to_string()))
            .collect();
        Self::new(&files)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        write(self.path(), rel, text);
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// The repository root (for the shipped catalog).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the shipped `images/` and `recipes/` into a temporary project.
pub fn shipped_copy() -> Project {
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["images", "recipes"] {
        copy_dir(&repo_root().join(sub), &dir.path().join(sub));
    }
    Project { dir }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).expect("copy");
        }
    }
}
