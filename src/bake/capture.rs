//! Capture: the build instance becomes an AMI in the build region.

use semver::Version;

use super::context::{wait_available, Bake, Failure, Link};
use super::launch::Launched;
use super::ledger::{Undo, When};
use super::preflight::{Preflighted, MAX_NAME_TRIES};
use crate::cloud::{ImageId, SnapshotId};
use crate::registry::{self, tag};

/// The AMI in the build region, and the version it was registered as.
pub(super) struct Captured {
    pub(super) image: ImageId,
    pub(super) version: Version,
    /// Its snapshots, as DescribeImages listed them once it was available.
    pub(super) snapshots: Vec<SnapshotId>,
}

impl Bake<'_> {
    /// Creates the AMI, tagged with its snapshots at creation; another runner's name moves it
    /// to the next patch. The bake neither stops the instance nor waits for `stopped`:
    /// CreateImage without NoReboot powers a running instance down itself ("By default, when
    /// Amazon EC2 creates the new AMI, it reboots the instance so that it can take snapshots of
    /// the attached volumes while data is at rest, in order to ensure a consistent state",
    /// CreateImage API reference), and a sysprepped Windows instance is stopped already (its
    /// shutdown step waited for that). The instance boots again afterwards; the test phase
    /// terminates it with the test instance.
    pub(super) async fn capture(
        &mut self,
        pre: &Preflighted,
        l: &Launched,
        link: &mut Link,
    ) -> Result<Captured, Failure> {
        if let Some(conn) = link.0.take() {
            conn.close().await;
        }
        let id = l.instance.clone();
        let region = self.region();
        let aws = self.aws.clone();
        let timeout = self.image.build.timeouts.capture;
        let version = pre.version.clone();
        let name = registry::ami_name(self.image.name.as_str(), &version);
        let tags = self.image_tags(pre, &name, &version);
        let description = format!(
            "{} {} baked by bakery ({})",
            self.image.name, version, self.bake_id
        );
        // AWS refuses a second AMI with a taken name (another runner chose the same version):
        // re-read the registry and take the next patch.
        let mut version = version;
        let mut name = name;
        let mut tags = tags;
        let mut description = description;
        let mut tries = 0;
        let ami = loop {
            match aws.create_image(&id, &name, &description, &tags).await {
                Ok(a) => break a,
                Err(e)
                    if e.code() == Some("InvalidAMIName.Duplicate") && tries < MAX_NAME_TRIES =>
                {
                    // An SDK retry after a lost answer finds our own image under the name.
                    let taken = aws
                        .describe_images(&["self".into()], &[("name", vec![name.clone()])])
                        .await?;
                    if let Some(own) = taken
                        .into_iter()
                        .find(|i| i.tags.get(tag::BAKE_ID) == Some(&self.bake_id))
                    {
                        break own.id;
                    }
                    tries += 1;
                    let taken: Vec<Version> =
                        registry::aws::versions(&aws, self.image.name.as_str())
                            .await?
                            .into_iter()
                            .map(|r| r.version)
                            .collect();
                    version = registry::next_version(&taken, self.image.version).max(Version::new(
                        version.major,
                        version.minor,
                        version.patch + 1,
                    ));
                    name = registry::ami_name(self.image.name.as_str(), &version);
                    tags = self.image_tags(pre, &name, &version);
                    description = format!(
                        "{} {} baked by bakery ({})",
                        self.image.name, version, self.bake_id
                    );
                    self.journal.version = Some(version.to_string());
                    self.journal.save()?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.journal.push(
            Undo::DeregisterImage {
                region: region.clone(),
                id: ami.clone(),
            },
            When::OnFailure,
        )?;
        self.created(format!("image {ami} ({name})"));
        if !tags.contains_key(tag::INPUTS) {
            self.warn(
                "fingerprint inputs too many to record on the AMI: plan will not name the changed files"
                    .into(),
            );
        }
        let info = wait_available(&aws, &ami, timeout, &self.cancel).await?;
        Ok(Captured {
            image: ami,
            version,
            snapshots: info.snapshots,
        })
    }
}
