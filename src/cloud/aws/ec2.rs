//! EC2 operations a bake needs, SDK types in, domain types out.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType, IpPermission,
    IpRange, ResourceType, Tag, TagSpecification, VolumeType,
};

use super::Aws;
use crate::cloud::{
    CloudError, ImageId, ImageInfo, InstanceId, InstanceInfo, KeyName, LaunchSpec, SecurityGroupId,
    SnapshotId, Tags,
};

/// RunInstances error codes that mean "try another instance type" (EC2 API error codes).
const CAPACITY_CODES: [&str; 3] = [
    "InsufficientInstanceCapacity",
    "Unsupported",
    "InstanceTypeNotSupported",
];

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
        tags: tags_of(i.tags()),
    })
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
                if err.code().is_some_and(|c| c.starts_with("InvalidAMIID")) {
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
            .filter_map(|i| {
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
                })
            })
            .collect())
    }

    /// Instance ids carrying `tag` = `value`, in any state but terminated.
    pub async fn instances_tagged(
        &self,
        tag: &str,
        value: &str,
    ) -> Result<Vec<InstanceInfo>, CloudError> {
        let out = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{tag}"))
                    .values(value)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("DescribeInstances", e))?;
        let ids: Vec<InstanceId> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.instance_id().map(|s| InstanceId(s.to_string())))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .describe_instances(&ids)
            .await?
            .into_iter()
            .filter(|i| i.state != "terminated")
            .collect())
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

    /// The default VPC of the region, if it has one.
    pub async fn default_vpc(&self) -> Result<Option<String>, CloudError> {
        let out = self
            .ec2
            .describe_vpcs()
            .filters(Filter::builder().name("is-default").values("true").build())
            .send()
            .await
            .map_err(|e| self.err("DescribeVpcs", e))?;
        Ok(out
            .vpcs()
            .first()
            .and_then(|v| v.vpc_id())
            .map(str::to_string))
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

    /// Key pair names carrying `tag` = `value`.
    pub async fn key_pairs_tagged(
        &self,
        tag: &str,
        value: &str,
    ) -> Result<Vec<KeyName>, CloudError> {
        let out = self
            .ec2
            .describe_key_pairs()
            .filters(
                Filter::builder()
                    .name(format!("tag:{tag}"))
                    .values(value)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("DescribeKeyPairs", e))?;
        Ok(out
            .key_pairs()
            .iter()
            .filter_map(|k| k.key_name())
            .map(|k| KeyName(k.to_string()))
            .collect())
    }

    /// A security group whose only ingress is `port` from `cidr`, tagged at creation.
    pub async fn create_security_group(
        &self,
        name: &str,
        vpc: &str,
        tags: &Tags,
    ) -> Result<SecurityGroupId, CloudError> {
        let out = self
            .ec2
            .create_security_group()
            .group_name(name)
            .description("bakery build instance: communicator port from the baking host only")
            .vpc_id(vpc)
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

    /// Security group ids carrying `tag` = `value`.
    pub async fn security_groups_tagged(
        &self,
        tag: &str,
        value: &str,
    ) -> Result<Vec<SecurityGroupId>, CloudError> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(
                Filter::builder()
                    .name(format!("tag:{tag}"))
                    .values(value)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("DescribeSecurityGroups", e))?;
        Ok(out
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .map(|g| SecurityGroupId(g.to_string()))
            .collect())
    }

    /// Launches one instance: IMDSv2 required, encrypted root volume, tags on instance and
    /// volumes at creation; on a capacity error tries the next instance type. Returns the id and
    /// the type that launched.
    pub async fn run_instance(
        &self,
        spec: &LaunchSpec,
    ) -> Result<(InstanceId, String), CloudError> {
        let mut last = None;
        for itype in &spec.instance_types {
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

    pub async fn stop_instance(&self, id: &InstanceId) -> Result<(), CloudError> {
        self.ec2
            .stop_instances()
            .instance_ids(id.as_str())
            .send()
            .await
            .map_err(|e| self.err("StopInstances", e))?;
        Ok(())
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

    /// CreateImage with tags on the image at creation (snapshots are tagged afterwards with
    /// `tag_resources`: the emulator rejects a snapshot TagSpecification, AWS accepts both).
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
            .tag_specifications(tag_spec(ResourceType::Image, tags))
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
                if err.code().is_some_and(|c| c.starts_with("InvalidAMIID")) {
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

    /// Snapshot ids carrying `tag` = `value` (owned by this account).
    pub async fn snapshots_tagged(
        &self,
        tag: &str,
        value: &str,
    ) -> Result<Vec<SnapshotId>, CloudError> {
        let out = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name(format!("tag:{tag}"))
                    .values(value)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("DescribeSnapshots", e))?;
        Ok(out
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id())
            .map(|s| SnapshotId(s.to_string()))
            .collect())
    }
}
