//! EC2 operations a bake needs, SDK types in, domain types out.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType, IpPermission,
    IpRange, ResourceType, Tag, TagSpecification, VolumeType,
};

use super::Aws;
use crate::cloud::{
    CloudError, ImageId, ImageInfo, InstanceId, InstanceInfo, KeyName, LaunchSpec, SecurityGroupId,
    SnapshotId, SnapshotInfo, TaggedResource, Tags,
};

/// RunInstances error codes that mean "try another instance type" (EC2 API error codes).
const CAPACITY_CODES: [&str; 3] = [
    "InsufficientInstanceCapacity",
    "Unsupported",
    "InstanceTypeNotSupported",
];

/// Values per DescribeImages `image-id` filter (EC2 accepts up to 200 filter values).
const IMAGE_IDS_PER_FILTER: usize = 200;
/// How long a deregistered image's snapshot may stay `InvalidSnapshot.InUse`.
const SNAPSHOT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2 * 60);

fn tags_of(ts: &[Tag]) -> Tags {
    ts.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// The filter for resources carrying `tag` = `value`, or `tag` with any value.
fn tag_filter(tag: &str, value: Option<&str>) -> Filter {
    match value {
        Some(v) => Filter::builder()
            .name(format!("tag:{tag}"))
            .values(v)
            .build(),
        None => Filter::builder().name("tag-key").values(tag).build(),
    }
}

fn tag_spec(kind: ResourceType, tags: &Tags) -> TagSpecification {
    let mut b = TagSpecification::builder().resource_type(kind);
    for (k, v) in tags {
        b = b.tags(Tag::builder().key(k).value(v).build());
    }
    b.build()
}

fn image_info(i: &aws_sdk_ec2::types::Image) -> Option<ImageInfo> {
    Some(ImageInfo {
        id: ImageId(i.image_id()?.to_string()),
        name: i.name().unwrap_or_default().to_string(),
        state: i
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        state_reason: i
            .state_reason()
            .and_then(|r| r.message())
            .map(str::to_string),
        creation_date: i.creation_date().unwrap_or_default().to_string(),
        root_device_name: i.root_device_name().map(str::to_string),
        architecture: i
            .architecture()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default(),
        // `platform()` is `Unknown("windows")` for Windows AMIs (aws/aws-sdk#797): use the string.
        platform: i
            .platform()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        snapshots: i
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs()?.snapshot_id())
            .map(|s| SnapshotId(s.to_string()))
            .collect(),
        ebs_gb: i
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs()?.volume_size())
            .map(|g| u64::try_from(g).unwrap_or(0))
            .reduce(|a, b| a + b),
        tags: tags_of(i.tags()),
        deprecation_time: i.deprecation_time().map(str::to_string),
        imds_support: i.imds_support().map(|v| v.as_str().to_string()),
    })
}

fn instance_info(i: &aws_sdk_ec2::types::Instance) -> Option<InstanceInfo> {
    Some(InstanceInfo {
        id: InstanceId(i.instance_id()?.to_string()),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        state_reason: i
            .state_reason()
            .and_then(|r| r.message())
            .map(str::to_string),
        public_ip: i.public_ip_address().map(str::to_string),
        private_ip: i.private_ip_address().map(str::to_string),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        tags: tags_of(i.tags()),
    })
}

/// The clients and region the shared pollers describe with (see `cloud::poller`). EC2 ids go in
/// as a filter, so one that is not visible yet is simply missing from the answer.
#[derive(Clone, Debug)]
pub(crate) struct Describer {
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) ssm: aws_sdk_ssm::Client,
    pub(crate) region: crate::catalog::model::Region,
}

impl Describer {
    fn err<E>(&self, op: &'static str, e: aws_sdk_ec2::error::SdkError<E>) -> CloudError
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        super::api_error(&self.region, op, e)
    }

    pub(crate) async fn instances(
        self,
        ids: Vec<InstanceId>,
    ) -> Result<Vec<(InstanceId, InstanceInfo)>, CloudError> {
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(ids.into_iter().map(|i| i.0).collect()))
                    .build(),
            )
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeInstances", e))?;
            out.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter_map(instance_info)
                    .map(|i| (i.id.clone(), i)),
            );
        }
        Ok(out)
    }

    pub(crate) async fn images(
        self,
        ids: Vec<ImageId>,
    ) -> Result<Vec<(ImageId, ImageInfo)>, CloudError> {
        let out = self
            .ec2
            .describe_images()
            .filters(
                Filter::builder()
                    .name("image-id")
                    .set_values(Some(ids.into_iter().map(|i| i.0).collect()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("DescribeImages", e))?;
        Ok(out
            .images()
            .iter()
            .filter_map(image_info)
            .map(|i| (i.id.clone(), i))
            .collect())
    }
}

impl Aws {
    /// One AMI by id, `None` if it does not exist.
    pub async fn describe_image(&self, id: &ImageId) -> Result<Option<ImageInfo>, CloudError> {
        match self
            .ec2
            .describe_images()
            .image_ids(id.as_str())
            .send()
            .await
        {
            Ok(out) => Ok(out.images().iter().find_map(image_info)),
            Err(e) => {
                let err = self.err("DescribeImages", e);
                if err.code() == Some("InvalidAMIID.NotFound") {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// AMIs matching `filters` (name -> values) owned by `owners` (all pages).
    pub async fn describe_images(
        &self,
        owners: &[String],
        filters: &[(&str, Vec<String>)],
    ) -> Result<Vec<ImageInfo>, CloudError> {
        let mut req = self
            .ec2
            .describe_images()
            .set_owners((!owners.is_empty()).then(|| owners.to_vec()));
        for (name, values) in filters {
            req = req.filters(
                Filter::builder()
                    .name(*name)
                    .set_values(Some(values.clone()))
                    .build(),
            );
        }
        let mut out = Vec::new();
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeImages", e))?;
            out.extend(page.images().iter().filter_map(image_info));
        }
        Ok(out)
    }

    /// Every AMI this account owns, disabled ones included (DescribeImages leaves those out
    /// unless asked): the sweep must see every version, whatever its state.
    pub async fn own_images(&self) -> Result<Vec<ImageInfo>, CloudError> {
        let mut pages = self
            .ec2
            .describe_images()
            .owners("self")
            .include_disabled(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeImages", e))?;
            out.extend(page.images().iter().filter_map(image_info));
        }
        Ok(out)
    }

    /// Which of `ids` exist (any owner, disabled included); an id filter, so a missing one is
    /// simply absent instead of failing the call.
    pub async fn existing_images(&self, ids: &[String]) -> Result<Vec<ImageId>, CloudError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IMAGE_IDS_PER_FILTER) {
            let page = self
                .ec2
                .describe_images()
                .include_disabled(true)
                .filters(
                    Filter::builder()
                        .name("image-id")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.err("DescribeImages", e))?;
            out.extend(page.images().iter().filter_map(image_info).map(|i| i.id));
        }
        Ok(out)
    }

    /// The newest available AMI whose name matches `pattern` (wildcards), owned by `owners`.
    pub async fn newest_image(
        &self,
        pattern: &str,
        owners: &[String],
        architecture: &str,
    ) -> Result<Option<ImageInfo>, CloudError> {
        let filters = [
            ("name", vec![pattern.to_string()]),
            ("architecture", vec![architecture.to_string()]),
            ("state", vec!["available".to_string()]),
        ];
        let found = self.describe_images(owners, &filters).await?;
        Ok(found
            .into_iter()
            .max_by(|a, b| a.creation_date.cmp(&b.creation_date)))
    }

    /// Instances by id.
    pub async fn describe_instances(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<InstanceInfo>, CloudError> {
        let out = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids.iter().map(|i| i.0.clone()).collect()))
            .send()
            .await
            .map_err(|e| self.err("DescribeInstances", e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(instance_info)
            .collect())
    }

    /// One instance; `None` while a new id is not yet visible (DescribeInstances is eventually
    /// consistent and answers InvalidInstanceID.NotFound for a moment after RunInstances).
    pub async fn describe_instance(
        &self,
        id: &InstanceId,
    ) -> Result<Option<InstanceInfo>, CloudError> {
        match self.describe_instances(std::slice::from_ref(id)).await {
            Ok(v) => Ok(v.into_iter().next()),
            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Instances carrying `tag` (= `value`, or with any value), terminated ones included (EC2
    /// lists them for about an hour; the sweep reads their ids), all pages.
    pub async fn instances_tagged(
        &self,
        tag: &str,
        value: Option<&str>,
    ) -> Result<Vec<InstanceInfo>, CloudError> {
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(tag_filter(tag, value))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeInstances", e))?;
            out.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter_map(instance_info),
            );
        }
        Ok(out)
    }

    pub async fn subnet_vpc(&self, subnet: &str) -> Result<String, CloudError> {
        let out = self
            .ec2
            .describe_subnets()
            .subnet_ids(subnet)
            .send()
            .await
            .map_err(|e| self.err("DescribeSubnets", e))?;
        out.subnets()
            .first()
            .and_then(|s| s.vpc_id())
            .map(str::to_string)
            .ok_or_else(|| {
                CloudError::NotFound(format!("subnet {subnet} not found in {}", self.region))
            })
    }

    pub async fn security_group_exists(&self, id: &str) -> Result<bool, CloudError> {
        match self
            .ec2
            .describe_security_groups()
            .group_ids(id)
            .send()
            .await
        {
            Ok(out) => Ok(!out.security_groups().is_empty()),
            Err(e) => {
                let err = self.err("DescribeSecurityGroups", e);
                if err.code() == Some("InvalidGroup.NotFound") {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Imports a public key (OpenSSH format) as a key pair, tagged at creation.
    pub async fn import_key_pair(
        &self,
        name: &KeyName,
        public_key: &str,
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.ec2
            .import_key_pair()
            .key_name(name.as_str())
            .public_key_material(aws_smithy_types::Blob::new(public_key.as_bytes()))
            .tag_specifications(tag_spec(ResourceType::KeyPair, tags))
            .send()
            .await
            .map_err(|e| self.err("ImportKeyPair", e))?;
        Ok(())
    }

    pub async fn delete_key_pair(&self, name: &KeyName) -> Result<(), CloudError> {
        self.ec2
            .delete_key_pair()
            .key_name(name.as_str())
            .send()
            .await
            .map_err(|e| self.err("DeleteKeyPair", e))?;
        Ok(())
    }

    /// Key pairs carrying `tag` (= `value`, or any value). DescribeKeyPairs has no pages.
    pub async fn key_pairs_tagged(
        &self,
        tag: &str,
        value: Option<&str>,
    ) -> Result<Vec<TaggedResource<KeyName>>, CloudError> {
        let out = self
            .ec2
            .describe_key_pairs()
            .filters(tag_filter(tag, value))
            .send()
            .await
            .map_err(|e| self.err("DescribeKeyPairs", e))?;
        Ok(out
            .key_pairs()
            .iter()
            .filter_map(|k| {
                Some(TaggedResource {
                    id: KeyName(k.key_name()?.to_string()),
                    tags: tags_of(k.tags()),
                })
            })
            .collect())
    }

    /// A security group whose only ingress is `port` from `cidr`, tagged at creation. Without a
    /// VPC it goes to the region's default VPC (CreateSecurityGroup: "If you do not specify a
    /// VPC, the default is to use the default VPC"; without one, EC2 answers
    /// `VPCIdNotSpecified`).
    pub async fn create_security_group(
        &self,
        name: &str,
        vpc: Option<&str>,
        tags: &Tags,
    ) -> Result<SecurityGroupId, CloudError> {
        let out = self
            .ec2
            .create_security_group()
            .group_name(name)
            .description("bakery build instance: communicator port from the baking host only")
            .set_vpc_id(vpc.map(str::to_string))
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags))
            .send()
            .await
            .map_err(|e| self.err("CreateSecurityGroup", e))?;
        let id = out
            .group_id()
            .ok_or_else(|| self.bad("CreateSecurityGroup", "no GroupId"))?;
        Ok(SecurityGroupId(id.to_string()))
    }

    pub async fn authorize_ingress(
        &self,
        sg: &SecurityGroupId,
        port: u16,
        cidr: &str,
    ) -> Result<(), CloudError> {
        self.ec2
            .authorize_security_group_ingress()
            .group_id(sg.as_str())
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(i32::from(port))
                    .to_port(i32::from(port))
                    .ip_ranges(
                        IpRange::builder()
                            .cidr_ip(cidr)
                            .description("bakery communicator")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("AuthorizeSecurityGroupIngress", e))?;
        Ok(())
    }

    pub async fn delete_security_group(&self, sg: &SecurityGroupId) -> Result<(), CloudError> {
        match self
            .ec2
            .delete_security_group()
            .group_id(sg.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.err("DeleteSecurityGroup", e);
                if err.code() == Some("InvalidGroup.NotFound") {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Security groups carrying `tag` (= `value`, or any value), all pages.
    pub async fn security_groups_tagged(
        &self,
        tag: &str,
        value: Option<&str>,
    ) -> Result<Vec<TaggedResource<SecurityGroupId>>, CloudError> {
        let mut pages = self
            .ec2
            .describe_security_groups()
            .filters(tag_filter(tag, value))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeSecurityGroups", e))?;
            out.extend(page.security_groups().iter().filter_map(|g| {
                Some(TaggedResource {
                    id: SecurityGroupId(g.group_id()?.to_string()),
                    tags: tags_of(g.tags()),
                })
            }));
        }
        Ok(out)
    }

    /// Launches one instance: IMDSv2 required, encrypted root volume, tags on instance and
    /// volumes at creation; on a capacity error tries the next instance type. Returns the id and
    /// the type that launched.
    pub async fn run_instance(
        &self,
        spec: &LaunchSpec,
    ) -> Result<(InstanceId, String), CloudError> {
        let mut last = None;
        for (n, itype) in spec.instance_types.iter().enumerate() {
            let mut ebs = EbsBlockDevice::builder()
                .encrypted(true)
                .delete_on_termination(true)
                .volume_type(VolumeType::from(spec.volume_type.as_str()))
                .set_kms_key_id(spec.kms_key.clone());
            if let Some(size) = spec.volume_size_gb {
                ebs = ebs.volume_size(size as i32);
            }
            let mut req = self
                .ec2
                .run_instances()
                .image_id(spec.image.as_str())
                .instance_type(InstanceType::from(itype.as_str()))
                .min_count(1)
                .max_count(1)
                // Idempotency: an SDK retry of this call must not launch a second instance.
                .set_client_token(spec.client_token.as_ref().map(|t| format!("{t}-{n}")))
                .set_key_name(spec.key_name.as_ref().map(|k| k.0.clone()))
                .set_subnet_id(spec.subnet.clone())
                .metadata_options(
                    InstanceMetadataOptionsRequest::builder()
                        .http_tokens(HttpTokensState::Required)
                        .http_endpoint(InstanceMetadataEndpointState::Enabled)
                        .build(),
                )
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name(&spec.root_device_name)
                        .ebs(ebs.build())
                        .build(),
                )
                .tag_specifications(tag_spec(ResourceType::Instance, &spec.tags))
                .tag_specifications(tag_spec(ResourceType::Volume, &spec.tags));
            if let Some(sg) = &spec.security_group {
                req = req.security_group_ids(sg.as_str());
            }
            if let Some(p) = &spec.instance_profile {
                req = req.iam_instance_profile(
                    IamInstanceProfileSpecification::builder().name(p).build(),
                );
            }
            if let Some(u) = &spec.user_data {
                req = req.user_data(aws_smithy_types::base64::encode(u.as_bytes()));
            }
            match req.send().await {
                Ok(out) => {
                    let id = out
                        .instances()
                        .first()
                        .and_then(|i| i.instance_id())
                        .ok_or_else(|| self.bad("RunInstances", "no instance in the answer"))?;
                    return Ok((InstanceId(id.to_string()), itype.clone()));
                }
                Err(e) => {
                    let err = self.err("RunInstances", e);
                    if err.code().is_some_and(|c| CAPACITY_CODES.contains(&c)) {
                        tracing::warn!(instance_type = %itype, error = %err, "no capacity, trying the next instance type");
                        last = Some(err);
                        continue;
                    }
                    return Err(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.bad("RunInstances", "no instance types to try")))
    }

    /// TerminateInstances for several instances in one call (already terminated ones are
    /// fine). AWS refuses the whole call when one id does not exist.
    pub async fn terminate_instances(&self, ids: &[InstanceId]) -> Result<(), CloudError> {
        self.ec2
            .terminate_instances()
            .set_instance_ids(Some(ids.iter().map(|i| i.to_string()).collect()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("TerminateInstances", e))
    }

    pub async fn terminate_instance(&self, id: &InstanceId) -> Result<(), CloudError> {
        match self
            .ec2
            .terminate_instances()
            .instance_ids(id.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.err("TerminateInstances", e);
                if err.code() == Some("InvalidInstanceID.NotFound") {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// CreateImage with tags on the image and its snapshots at creation (CreateImage API
    /// reference: TagSpecifications of `image` and `snapshot`), so an interrupt at any moment
    /// leaves nothing untagged for the sweep to miss.
    pub async fn create_image(
        &self,
        instance: &InstanceId,
        name: &str,
        description: &str,
        tags: &Tags,
    ) -> Result<ImageId, CloudError> {
        let out = self
            .ec2
            .create_image()
            .instance_id(instance.as_str())
            .name(name)
            .description(description)
            // The default, spelled out: EC2 shuts the instance down for consistent snapshots.
            .no_reboot(false)
            .tag_specifications(tag_spec(ResourceType::Image, tags))
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
            .send()
            .await
            .map_err(|e| self.err("CreateImage", e))?;
        let id = out
            .image_id()
            .ok_or_else(|| self.bad("CreateImage", "no ImageId"))?;
        Ok(ImageId(id.to_string()))
    }

    pub async fn tag_resources(&self, ids: &[String], tags: &Tags) -> Result<(), CloudError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut req = self.ec2.create_tags().set_resources(Some(ids.to_vec()));
        for (k, v) in tags {
            req = req.tags(Tag::builder().key(k).value(v).build());
        }
        req.send().await.map_err(|e| self.err("CreateTags", e))?;
        Ok(())
    }

    pub async fn deregister_image(&self, id: &ImageId) -> Result<(), CloudError> {
        match self
            .ec2
            .deregister_image()
            .image_id(id.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.err("DeregisterImage", e);
                if err.code() == Some("InvalidAMIID.NotFound") {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    pub async fn delete_snapshot(&self, id: &SnapshotId) -> Result<(), CloudError> {
        match self
            .ec2
            .delete_snapshot()
            .snapshot_id(id.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.err("DeleteSnapshot", e);
                if err.code() == Some("InvalidSnapshot.NotFound") {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Deletes a snapshot, waiting out `InvalidSnapshot.InUse`: EC2 answers it for a few seconds
    /// after the snapshot's image was deregistered.
    pub async fn delete_snapshot_released(
        &self,
        id: &SnapshotId,
        cancel: &crate::cloud::cancel::Cancel,
    ) -> Result<(), CloudError> {
        use crate::cloud::wait::{Poll, Wait};
        Wait::brief(
            format!("snapshot {id} in {}", self.region),
            "deletable",
            SNAPSHOT_RELEASE_WAIT,
        )
        .until(cancel, || async {
            match self.delete_snapshot(id).await {
                Ok(()) => Ok(Poll::Ready(())),
                Err(e) if e.code() == Some("InvalidSnapshot.InUse") => Ok(Poll::Pending {
                    state: "in use".into(),
                    reason: None,
                }),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Every snapshot this account owns, all pages (the sweep also needs untagged ones, whose
    /// description names the instance they were made from).
    pub async fn own_snapshots(&self) -> Result<Vec<SnapshotInfo>, CloudError> {
        let mut pages = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeSnapshots", e))?;
            out.extend(page.snapshots().iter().filter_map(|s| {
                Some(SnapshotInfo {
                    id: SnapshotId(s.snapshot_id()?.to_string()),
                    description: s.description().unwrap_or_default().to_string(),
                    tags: tags_of(s.tags()),
                })
            }));
        }
        Ok(out)
    }
}

/// Registry operations: distribution, sharing, deprecation, usage.
impl Aws {
    /// Copies `source` (in `source_region`) into this region, tags image and snapshots at
    /// creation, encrypted with `kms_key` when given. `client_token` makes a retry after a lost
    /// answer return the same copy instead of starting a second one. Returns the new AMI id.
    #[allow(clippy::too_many_arguments)]
    pub async fn copy_image(
        &self,
        source_region: &str,
        source: &ImageId,
        name: &str,
        description: &str,
        kms_key: Option<&str>,
        tags: &Tags,
        client_token: &str,
    ) -> Result<ImageId, CloudError> {
        let mut req = self
            .ec2
            .copy_image()
            .source_region(source_region)
            .source_image_id(source.as_str())
            .name(name)
            .description(description)
            .client_token(client_token)
            .copy_image_tags(true)
            .tag_specifications(tag_spec(ResourceType::Image, tags))
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags));
        if let Some(k) = kms_key {
            req = req.encrypted(true).kms_key_id(k);
        }
        let out = req.send().await.map_err(|e| self.err("CopyImage", e))?;
        let id = out
            .image_id()
            .ok_or_else(|| self.bad("CopyImage", "no ImageId"))?;
        Ok(ImageId(id.to_string()))
    }

    /// Adds launch permissions for accounts, organizations and OUs (by ARN).
    pub async fn share_image(
        &self,
        id: &ImageId,
        accounts: &[String],
        organizations: &[String],
        ous: &[String],
    ) -> Result<(), CloudError> {
        use aws_sdk_ec2::types::{LaunchPermission, LaunchPermissionModifications};
        let mut adds = Vec::new();
        for a in accounts {
            adds.push(LaunchPermission::builder().user_id(a).build());
        }
        for o in organizations {
            adds.push(LaunchPermission::builder().organization_arn(o).build());
        }
        for o in ous {
            adds.push(
                LaunchPermission::builder()
                    .organizational_unit_arn(o)
                    .build(),
            );
        }
        if adds.is_empty() {
            return Ok(());
        }
        self.ec2
            .modify_image_attribute()
            .image_id(id.as_str())
            .launch_permission(
                LaunchPermissionModifications::builder()
                    .set_add(Some(adds))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("ModifyImageAttribute", e))?;
        Ok(())
    }

    /// The KMS key EBS encrypts new volumes with in this region when none is named
    /// (`alias/aws/ebs` unless the account changed it).
    pub async fn ebs_default_kms_key(&self) -> Result<String, CloudError> {
        let out = self
            .ec2
            .get_ebs_default_kms_key_id()
            .send()
            .await
            .map_err(|e| self.err("GetEbsDefaultKmsKeyId", e))?;
        out.kms_key_id()
            .map(str::to_string)
            .ok_or_else(|| self.bad("GetEbsDefaultKmsKeyId", "no KmsKeyId in the answer"))
    }

    /// Marks an AMI IMDSv2-only (`ImdsSupport = v2.0`): instances launched from it require
    /// session tokens for the metadata service. AWS cannot undo it.
    pub async fn require_imdsv2(&self, id: &ImageId) -> Result<(), CloudError> {
        self.ec2
            .modify_image_attribute()
            .image_id(id.as_str())
            .imds_support(
                aws_sdk_ec2::types::AttributeValue::builder()
                    .value("v2.0")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("ModifyImageAttribute", e))?;
        Ok(())
    }

    /// Enables EC2 Fast Launch on a Windows AMI (pre-provisioned snapshots, `count` of them, made
    /// by up to `parallel` instances, from `template`'s latest version when given); the state
    /// AWS answers (`enabling`, or `enabled` when it already was).
    pub async fn enable_fast_launch(
        &self,
        id: &ImageId,
        parallel: u32,
        count: u32,
        template: Option<&str>,
    ) -> Result<String, CloudError> {
        use aws_sdk_ec2::types::{
            FastLaunchLaunchTemplateSpecificationRequest, FastLaunchSnapshotConfigurationRequest,
        };
        let mut req = self
            .ec2
            .enable_fast_launch()
            .image_id(id.as_str())
            .resource_type("snapshot")
            .max_parallel_launches(i32::try_from(parallel).unwrap_or(i32::MAX))
            .snapshot_configuration(
                FastLaunchSnapshotConfigurationRequest::builder()
                    .target_resource_count(i32::try_from(count).unwrap_or(i32::MAX))
                    .build(),
            );
        if let Some(t) = template {
            req = req.launch_template(
                FastLaunchLaunchTemplateSpecificationRequest::builder()
                    .launch_template_id(t)
                    .version("$Latest")
                    .build(),
            );
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.err("EnableFastLaunch", e))?;
        Ok(out.state().map_or("enabling", |s| s.as_str()).to_string())
    }

    /// Disables EC2 Fast Launch on an AMI (its pre-provisioned snapshots are cleaned up).
    pub async fn disable_fast_launch(&self, id: &ImageId) -> Result<(), CloudError> {
        self.ec2
            .disable_fast_launch()
            .image_id(id.as_str())
            .send()
            .await
            .map_err(|e| self.err("DisableFastLaunch", e))?;
        Ok(())
    }

    /// The Fast Launch state of each of `ids` that has Fast Launch (one paged call for all).
    pub async fn fast_launch_states(
        &self,
        ids: &[ImageId],
    ) -> Result<std::collections::BTreeMap<ImageId, String>, CloudError> {
        let mut out = std::collections::BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_fast_launch_images()
                .set_image_ids(Some(ids.iter().map(|i| i.to_string()).collect()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.err("DescribeFastLaunchImages", e))?;
            for i in page.fast_launch_images() {
                if let (Some(id), Some(state)) = (i.image_id(), i.state()) {
                    out.insert(ImageId(id.to_string()), state.as_str().to_string());
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Lets accounts create volumes from a snapshot (needed to launch a shared encrypted AMI).
    pub async fn share_snapshot(
        &self,
        id: &SnapshotId,
        accounts: &[String],
    ) -> Result<(), CloudError> {
        use aws_sdk_ec2::types::{CreateVolumePermission, CreateVolumePermissionModifications};
        if accounts.is_empty() {
            return Ok(());
        }
        let adds = accounts
            .iter()
            .map(|a| CreateVolumePermission::builder().user_id(a).build())
            .collect();
        self.ec2
            .modify_snapshot_attribute()
            .snapshot_id(id.as_str())
            .create_volume_permission(
                CreateVolumePermissionModifications::builder()
                    .set_add(Some(adds))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("ModifySnapshotAttribute", e))?;
        Ok(())
    }

    /// Accounts an AMI is shared with (launch permissions).
    pub async fn image_launch_accounts(&self, id: &ImageId) -> Result<Vec<String>, CloudError> {
        let out = self
            .ec2
            .describe_image_attribute()
            .image_id(id.as_str())
            .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .map_err(|e| self.err("DescribeImageAttribute", e))?;
        Ok(out
            .launch_permissions()
            .iter()
            .filter_map(|p| p.user_id())
            .map(str::to_string)
            .collect())
    }

    /// Marks an AMI deprecated at `at` (RFC 3339, UTC, whole minutes per the EC2 API).
    pub async fn enable_image_deprecation(
        &self,
        id: &ImageId,
        at: std::time::SystemTime,
    ) -> Result<(), CloudError> {
        self.ec2
            .enable_image_deprecation()
            .image_id(id.as_str())
            .deprecate_at(aws_smithy_types::DateTime::from(at))
            .send()
            .await
            .map_err(|e| self.err("EnableImageDeprecation", e))?;
        Ok(())
    }

    /// Instances (any state but terminated) launched from `image`.
    pub async fn instances_using(
        &self,
        images: &[ImageId],
    ) -> Result<Vec<(ImageId, InstanceId)>, CloudError> {
        let mut out = Vec::new();
        // One call (a page or a few) for many AMIs: their ids as one `image-id` filter.
        for chunk in images.chunks(IMAGE_IDS_PER_FILTER) {
            let mut pages = self
                .ec2
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name("image-id")
                        .set_values(Some(chunk.iter().map(|i| i.to_string()).collect()))
                        .build(),
                )
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.err("DescribeInstances", e))?;
                for i in page.reservations().iter().flat_map(|r| r.instances()) {
                    let state = i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str())
                        .unwrap_or("");
                    if state != "terminated" {
                        if let (Some(id), Some(ami)) = (i.instance_id(), i.image_id()) {
                            out.push((ImageId(ami.to_string()), InstanceId(id.to_string())));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// AMI ids named by any version of any launch template (an Auto Scaling group or a
    /// TeamCity cloud profile may pin an old version, not only `$Default` / `$Latest`): one
    /// listing, then the versions of each template, paged.
    pub async fn launch_template_images(&self) -> Result<Vec<(String, ImageId)>, CloudError> {
        let mut out = Vec::new();
        let mut pages = self.ec2.describe_launch_templates().into_paginator().send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeLaunchTemplates", e))?;
            names.extend(
                page.launch_templates()
                    .iter()
                    .filter_map(|t| t.launch_template_id().map(str::to_string)),
            );
        }
        for id in names {
            let mut pages = self
                .ec2
                .describe_launch_template_versions()
                .launch_template_id(&id)
                // Templates may name `resolve:ssm:/bakery/...`: ask for the AMI it resolves to.
                .resolve_alias(true)
                .into_paginator()
                .send();
            let mut versions = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.err("DescribeLaunchTemplateVersions", e))?;
                versions.extend(page.launch_template_versions().iter().cloned());
            }
            for ver in &versions {
                if let Some(ami) = ver.launch_template_data().and_then(|d| d.image_id()) {
                    let label = format!(
                        "{} v{}",
                        ver.launch_template_name().unwrap_or(&id),
                        ver.version_number().unwrap_or_default()
                    );
                    out.push((label, ImageId(ami.to_string())));
                }
            }
        }
        Ok(out)
    }
}
