//! The ledger of undo actions, written to the journal (`.bakery/bakes/<bake-id>.json`) after
//! every change, so a crash, a second Ctrl-C or a `--on-error keep` can be cleaned up later with
//! `bakery cleanup <bake-id>`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cloud::{ImageId, InstanceId, KeyName, SecurityGroupId, SnapshotId};

/// One way to remove something a bake created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Undo {
    TerminateInstance {
        region: String,
        id: InstanceId,
    },
    DeleteKeyPair {
        region: String,
        name: KeyName,
    },
    DeleteSecurityGroup {
        region: String,
        id: SecurityGroupId,
    },
    /// Deregisters the AMI and deletes its snapshots.
    DeregisterImage {
        region: String,
        id: ImageId,
    },
    DeleteSnapshot {
        region: String,
        id: SnapshotId,
    },
    /// Puts a parameter back as it was (`previous: None` deletes it), but only while it still
    /// holds `ours`, what this bake wrote (a newer runner's write is left alone).
    RestoreParameter {
        region: String,
        name: String,
        previous: Option<String>,
        #[serde(default)]
        ours: Option<String>,
    },
    /// Deletes the private key file kept for `--on-error keep`.
    DeleteKeyFile {
        path: PathBuf,
    },
    /// Deletes every object under the bake's prefix of the target's bucket (files sent to the
    /// instance, command output).
    DeleteS3Prefix {
        region: String,
        bucket: String,
        prefix: String,
    },
}

impl Undo {
    /// The region the resource is in (none for a local file).
    pub fn region(&self) -> Option<&str> {
        match self {
            Undo::TerminateInstance { region, .. }
            | Undo::DeleteKeyPair { region, .. }
            | Undo::DeleteSecurityGroup { region, .. }
            | Undo::DeregisterImage { region, .. }
            | Undo::DeleteSnapshot { region, .. }
            | Undo::RestoreParameter { region, .. }
            | Undo::DeleteS3Prefix { region, .. } => Some(region),
            Undo::DeleteKeyFile { .. } => None,
        }
    }

    /// Where a sweep runs this undo: instances first (they hold security groups), then
    /// parameters (nothing may go on naming an AMI about to be removed), groups, key pairs,
    /// images, snapshots, objects, files.
    pub fn order(&self) -> u8 {
        match self {
            Undo::TerminateInstance { .. } => 0,
            Undo::RestoreParameter { .. } => 1,
            Undo::DeleteSecurityGroup { .. } => 2,
            Undo::DeleteKeyPair { .. } => 3,
            Undo::DeregisterImage { .. } => 4,
            Undo::DeleteSnapshot { .. } => 5,
            Undo::DeleteS3Prefix { .. } => 6,
            Undo::DeleteKeyFile { .. } => 7,
        }
    }
}

impl std::fmt::Display for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undo::TerminateInstance { region, id } => write!(f, "instance {id} ({region})"),
            Undo::DeleteKeyPair { region, name } => write!(f, "key pair {name} ({region})"),
            Undo::DeleteSecurityGroup { region, id } => write!(f, "security group {id} ({region})"),
            Undo::DeregisterImage { region, id } => {
                write!(f, "image {id} and its snapshots ({region})")
            }
            Undo::DeleteSnapshot { region, id } => write!(f, "snapshot {id} ({region})"),
            Undo::RestoreParameter {
                region,
                name,
                previous: None,
                ..
            } => write!(f, "parameter {name} ({region})"),
            Undo::RestoreParameter {
                region,
                name,
                previous: Some(_),
                ..
            } => {
                write!(f, "parameter {name} ({region}, to be restored)")
            }
            Undo::DeleteKeyFile { path } => write!(f, "key file {}", path.display()),
            Undo::DeleteS3Prefix { bucket, prefix, .. } => {
                write!(f, "objects under s3://{bucket}/{prefix}")
            }
        }
    }
}

/// When an entry is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Temporary things: removed at the end of every bake.
    Always,
    /// The artifact: removed only if the bake fails.
    OnFailure,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub undo: Undo,
    pub when: When,
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    /// The artifact is registered: from here on only temporary things may be undone.
    Published,
    Succeeded,
    Failed,
    Cancelled,
    /// Failed and kept for debugging (`--on-error keep`).
    Kept,
}

/// The journal of one bake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub bake_id: String,
    pub image: String,
    pub target: String,
    pub version: Option<String>,
    pub state: State,
    pub entries: Vec<Entry>,
    #[serde(skip)]
    path: PathBuf,
    /// Instances whose TerminateInstances AWS already accepted in this process: undoing them
    /// only waits for them to go. Not saved: a cleanup elsewhere sends the call again, which is
    /// harmless for an instance on its way out.
    #[serde(skip)]
    pub terminating: std::collections::BTreeSet<crate::cloud::InstanceId>,
}

impl Journal {
    /// The journal file of a bake under a project.
    pub fn path_for(project: &Path, bake_id: &str) -> PathBuf {
        project
            .join(".bakery")
            .join("bakes")
            .join(format!("{bake_id}.json"))
    }

    pub fn create(
        project: &Path,
        bake_id: &str,
        image: &str,
        target: &str,
    ) -> std::io::Result<Self> {
        let j = Journal {
            bake_id: bake_id.to_string(),
            image: image.to_string(),
            target: target.to_string(),
            version: None,
            state: State::Running,
            entries: Vec::new(),
            path: Self::path_for(project, bake_id),
            terminating: Default::default(),
        };
        j.save()?;
        Ok(j)
    }

    pub fn load(project: &Path, bake_id: &str) -> std::io::Result<Self> {
        Self::read(&Self::path_for(project, bake_id))
    }

    /// Reads a journal file.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let path = path.to_path_buf();
        let text = std::fs::read_to_string(&path)?;
        let mut j: Journal = serde_json::from_str(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        j.path = path;
        Ok(j)
    }

    /// Writes the journal atomically (temp file + rename).
    pub fn save(&self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Records an undo the moment AWS returned the id.
    pub fn push(&mut self, undo: Undo, when: When) -> std::io::Result<()> {
        self.entries.push(Entry {
            undo,
            when,
            done: false,
        });
        self.save()
    }

    pub fn mark_done(&mut self, undo: &Undo) -> std::io::Result<()> {
        for e in self.entries.iter_mut().filter(|e| &e.undo == undo) {
            e.done = true;
        }
        self.save()
    }

    pub fn set_state(&mut self, s: State) -> std::io::Result<()> {
        self.state = s;
        self.save()
    }

    /// What is still to undo after a failure (everything not done), newest first.
    pub fn pending(&self, failed: bool) -> Vec<Undo> {
        self.entries
            .iter()
            .rev()
            .filter(|e| !e.done && (failed || e.when == When::Always))
            .map(|e| e.undo.clone())
            .collect()
    }

    /// Whether the artifact was registered (its entries must never be undone).
    pub fn published(&self) -> bool {
        matches!(self.state, State::Published | State::Succeeded)
    }

    /// Pending entries of one kind, newest first.
    pub fn pending_when(&self, when: When) -> Vec<Undo> {
        self.entries
            .iter()
            .rev()
            .filter(|e| !e.done && e.when == when)
            .map(|e| e.undo.clone())
            .collect()
    }

    /// Forgets an entry whose resource was never created (the call that would create it failed).
    pub fn forget(&mut self, undo: &Undo) -> std::io::Result<()> {
        self.entries.retain(|e| &e.undo != undo);
        self.save()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_is_reverse_and_respects_when() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "b1", "img", "t").unwrap();
        let kp = Undo::DeleteKeyPair {
            region: "r".into(),
            name: KeyName("k".into()),
        };
        let inst = Undo::TerminateInstance {
            region: "r".into(),
            id: InstanceId("i-1".into()),
        };
        let ami = Undo::DeregisterImage {
            region: "r".into(),
            id: ImageId("ami-1".into()),
        };
        j.push(kp.clone(), When::Always).unwrap();
        j.push(inst.clone(), When::Always).unwrap();
        j.push(ami.clone(), When::OnFailure).unwrap();
        assert_eq!(j.pending(false), vec![inst.clone(), kp.clone()]);
        assert_eq!(j.pending(true), vec![ami.clone(), inst.clone(), kp.clone()]);
        j.mark_done(&inst).unwrap();
        let back = Journal::load(dir.path(), "b1").unwrap();
        assert_eq!(back.pending(true), vec![ami, kp]);
    }
}
