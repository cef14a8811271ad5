//! EC2 Auto Scaling: which launch configurations name an AMI, and which groups launch from
//! them or from a launch template (retention asks this in every consumer account).

use super::Aws;
use crate::cloud::{CloudError, ImageId};

/// What Auto Scaling launches from, for retention.
#[derive(Debug, Default, Clone)]
pub struct AutoScaling {
    /// Launch configuration name -> the AMI it names.
    pub configurations: Vec<(String, ImageId)>,
    /// Group name -> its launch configuration or launch template (by name).
    pub groups: Vec<(String, String)>,
}

impl Aws {
    /// Every launch configuration and group of the region (paged: one call per page, whatever
    /// the number of AMIs asked about).
    pub async fn auto_scaling(&self) -> Result<AutoScaling, CloudError> {
        let mut out = AutoScaling::default();
        let mut pages = self
            .autoscaling
            .describe_launch_configurations()
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeLaunchConfigurations", e))?;
            for c in page.launch_configurations() {
                if let (Some(n), Some(ami)) = (c.launch_configuration_name(), c.image_id()) {
                    out.configurations
                        .push((n.to_string(), ImageId(ami.to_string())));
                }
            }
        }
        let mut pages = self
            .autoscaling
            .describe_auto_scaling_groups()
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeAutoScalingGroups", e))?;
            for g in page.auto_scaling_groups() {
                let Some(name) = g.auto_scaling_group_name() else {
                    continue;
                };
                let template = g
                    .launch_template()
                    .or_else(|| {
                        g.mixed_instances_policy()
                            .and_then(|m| m.launch_template())
                            .and_then(|t| t.launch_template_specification())
                    })
                    .and_then(|t| t.launch_template_name().or(t.launch_template_id()));
                if let Some(from) = g.launch_configuration_name().or(template) {
                    out.groups.push((name.to_string(), from.to_string()));
                }
            }
        }
        Ok(out)
    }
}
