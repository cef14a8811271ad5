//! Launch: the build instance with what reaches it (a fresh key pair and a /32 security group
//! for SSH; nothing inbound for SSM), IMDSv2, an encrypted root volume, tags at creation.

use std::sync::Arc;
use std::time::Duration;

use super::context::{wait_running, Bake, Failure};
use super::ledger::{Undo, When};
use super::preflight::Preflighted;
use crate::cloud::cancel::Cancel;
use crate::cloud::wait::{Poll, Wait};
use crate::cloud::{CloudError, InstanceId, KeyName, LaunchSpec, SecurityGroupId};
use crate::events::BakeEvent;
use crate::remote::ssh::{new_key, public_openssh, SshTarget};

/// How long EC2 may answer `InvalidGroup.NotFound` / `InvalidKeyPair.NotFound` for a group or key
/// pair it just created ("Eventual consistency in the Amazon EC2 API"; the SDK does not retry
/// these codes).
const CREATED_VISIBLE_WAIT: Duration = Duration::from_secs(60);
/// Error codes that mean "just created, not visible yet" right after a create.
const NOT_YET_VISIBLE: [&str; 2] = ["InvalidGroup.NotFound", "InvalidKeyPair.NotFound"];

/// The running build instance and how to reach it.
#[derive(Clone)]
pub(super) struct Launched {
    pub(super) instance: InstanceId,
    /// Where to log in over SSH (`None`: the SSM communicator, which needs no address).
    pub(super) ssh: Option<SshTarget>,
    /// What the test instance reuses: the same key pair and security group.
    pub(super) key_name: Option<KeyName>,
    pub(super) group: SecurityGroupId,
    /// Whether DescribeInstances showed it running. An address known without it (the target's
    /// `ssh_host`) skips that wait: the connect tries once at once and waits for `running`
    /// only if that fails.
    pub(super) seen_running: bool,
}

impl Bake<'_> {
    /// Key pair (SSH), security group, and the build instance, each journaled the moment AWS
    /// returns its id; waits until it runs.
    pub(super) async fn launch(
        &mut self,
        pre: &Preflighted,
        instance_types: &[String],
    ) -> Result<Launched, Failure> {
        let tags = self.tags();
        let region = self.region();
        let ssm = self.ssm();
        let port = self.target.ssh_port.unwrap_or(self.image.build.ssh.port);
        // The key pair and the security group do not depend on each other: both are created at
        // once, and each is journaled the moment AWS returns it (a failure of one still leaves
        // the other journaled for the cleanup).
        // (A Mutex, as the bake's future must be Send; `self.created` would borrow all of
        // `self`, the journal included.)
        let journal = std::sync::Mutex::new(&mut self.journal);
        let made = |undo: Undo, resource: String| -> Result<(), Failure> {
            journal
                .lock()
                .map_err(|_| Failure::new("journal lock poisoned"))?
                .push(undo, When::Always)?;
            self.events.emit(BakeEvent::Created {
                bake_id: self.bake_id.clone(),
                resource,
            });
            Ok(())
        };
        // Key pair (SSH only): generated here, only the public half goes to AWS.
        let key_pair = async {
            if ssm {
                return Ok(None);
            }
            let k = new_key().map_err(Failure::new)?;
            let key_name = KeyName(format!("bakery-{}", self.bake_id));
            let public = public_openssh(&k, &key_name.0).map_err(Failure::new)?;
            self.aws.import_key_pair(&key_name, &public, &tags).await?;
            made(
                Undo::DeleteKeyPair {
                    region: region.clone(),
                    name: key_name.clone(),
                },
                format!("key pair {key_name}"),
            )?;
            Ok::<_, Failure>(Some((key_name, k)))
        };
        // The security group: the target's, or a new one.
        let group = async {
            if let Some(id) = &self.target.security_group {
                return Ok(SecurityGroupId(id.clone()));
            }
            // The subnet's VPC, or (no subnet) the region's default VPC, which
            // CreateSecurityGroup picks itself.
            let vpc = match &self.target.subnet {
                Some(s) => Some(self.aws.subnet_vpc(s).await?),
                None => None,
            };
            // SSM needs no inbound port at all.
            let cidr = match (&self.target.ssh_cidr, ssm) {
                (_, true) => None,
                (Some(c), false) => Some(c.clone()),
                (None, false) => Some(caller_cidr().await.map_err(Failure::new)?),
            };
            let mut sg_tags = tags.clone();
            sg_tags.insert("Name".into(), format!("bakery-{}", self.bake_id));
            let id = match self
                .aws
                .create_security_group(
                    &format!("bakery-{}", self.bake_id),
                    vpc.as_deref(),
                    &sg_tags,
                )
                .await
            {
                Err(e) if e.code() == Some("VPCIdNotSpecified") => {
                    return Err(Failure::new(format!(
                        "{region} has no default VPC: name a subnet in the target"
                    )))
                }
                r => r?,
            };
            made(
                Undo::DeleteSecurityGroup {
                    region: region.clone(),
                    id: id.clone(),
                },
                format!("security group {id}"),
            )?;
            if let Some(cidr) = cidr {
                let (aws, port) = (&self.aws, self.image.build.ssh.port);
                once_visible(&format!("security group {id}"), &self.cancel, || async {
                    match aws.authorize_ingress(&id, port, &cidr).await {
                        // A retry after a lost answer finds the rule in place.
                        Err(e) if e.code() == Some("InvalidPermission.Duplicate") => Ok(()),
                        r => r,
                    }
                })
                .await?;
            }
            Ok(id)
        };
        // Both run to the end (each journals what it made); the key pair's error comes first.
        let (key_pair, group) = tokio::join!(key_pair, group);
        let (key_pair, sg) = (key_pair?, group?);
        let (key_name, key) = match key_pair {
            Some((name, k)) => (Some(name), Some(Arc::new(k))),
            None => (None, None),
        };
        let source = &pre.source;
        let mut itags = tags.clone();
        itags.insert(
            "Name".into(),
            format!("bakery {} {}", self.image.name, pre.version),
        );
        let spec = LaunchSpec {
            client_token: Some(self.bake_id.clone()),
            image: source.id.clone(),
            root_device_name: source
                .root_device_name
                .clone()
                .unwrap_or_else(|| "/dev/xvda".into()),
            instance_types: instance_types.to_vec(),
            key_name: key_name.clone(),
            security_group: Some(sg.clone()),
            subnet: self.target.subnet.clone(),
            instance_profile: self.target.instance_profile.clone(),
            user_data: self.plan.user_data.clone(),
            volume_size_gb: self.image.build.root_volume.size_gb,
            volume_type: format!("{:?}", self.image.build.root_volume.volume_type).to_lowercase(),
            kms_key: self
                .target
                .kms_keys
                .get(&region)
                .cloned()
                .or_else(|| self.target.kms_key.clone()),
            tags: itags,
        };
        let aws = &self.aws;
        let launched_at = std::time::Instant::now();
        let (id, itype) = once_visible("the new security group and key pair", &self.cancel, || {
            aws.run_instance(&spec)
        })
        .await?;
        self.journal.push(
            Undo::TerminateInstance {
                region: region.clone(),
                id: id.clone(),
            },
            When::Always,
        )?;
        self.created(format!("instance {id} ({itype})"));
        let gb = spec.volume_size_gb.map(u64::from).or(source.ebs_gb);
        self.instances
            .push(("build", itype.to_string(), gb, launched_at));
        let (host, seen_running) = self
            .address_of(&id, self.image.build.timeouts.launch)
            .await?;
        if ssm {
            return Ok(Launched {
                instance: id,
                ssh: None,
                key_name,
                group: sg,
                seen_running: true,
            });
        }
        let host = host.ok_or_else(|| Failure::new(format!("instance {id} has no IP address")))?;
        let ssh = SshTarget {
            host,
            port,
            user: self
                .target
                .ssh_user
                .clone()
                .unwrap_or_else(|| self.image.build.ssh.user.clone()),
            key: key.ok_or_else(|| Failure::new("no key"))?,
        };
        self.reach = Some(ssh.clone());
        Ok(Launched {
            instance: id,
            ssh: Some(ssh),
            key_name,
            group: sg,
            seen_running,
        })
    }

    /// Where to reach instance `id`, and whether DescribeInstances showed it running: the
    /// target's `ssh_host` at once (known before the instance runs; never for SSM), else its
    /// public or private address once it runs (`None`: it has none).
    pub(super) async fn address_of(
        &self,
        id: &InstanceId,
        timeout: Duration,
    ) -> Result<(Option<String>, bool), CloudError> {
        if let Some(host) = self.target.ssh_host.clone().filter(|_| !self.ssm()) {
            return Ok((Some(host), false));
        }
        let info = wait_running(&self.aws, id, timeout, &self.cancel).await?;
        Ok((info.public_ip.or(info.private_ip), true))
    }
}

/// Caller's address as a /32, from AWS's checkip service (plain HTTP: a spoofed answer could
/// only narrow the ingress to a wrong address).
async fn caller_cidr() -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect("checkip.amazonaws.com:80").await?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: checkip.amazonaws.com\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).to_string())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| {
            "checkip.amazonaws.com did not answer: set ssh_cidr in the target".to_string()
        })?
        .map_err(|e| format!("checkip.amazonaws.com: {e}; set ssh_cidr in the target"))?;
    let ip = text.rsplit("\r\n\r\n").next().unwrap_or("").trim();
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| {
        format!("checkip.amazonaws.com answered {ip:?}; set ssh_cidr in the target")
    })?;
    Ok(format!("{ip}/32"))
}

/// Runs `call` until EC2 stops answering that what it needs was not found: right after a create,
/// EC2 may not see a new group or key pair for a few seconds, and the SDK does not retry that.
async fn once_visible<T, F, Fut>(what: &str, cancel: &Cancel, mut call: F) -> Result<T, CloudError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CloudError>>,
{
    Wait::brief(what, "visible to EC2", CREATED_VISIBLE_WAIT)
        .until(cancel, || {
            let f = call();
            async move {
                match f.await {
                    Ok(v) => Ok(Poll::Ready(v)),
                    Err(e) if e.code().is_some_and(|c| NOT_YET_VISIBLE.contains(&c)) => {
                        Ok(Poll::Pending {
                            state: e.code().unwrap_or_default().to_string(),
                            reason: None,
                        })
                    }
                    Err(e) => Err(e),
                }
            }
        })
        .await
}
