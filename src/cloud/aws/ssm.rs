//! SSM Parameter Store (source AMIs from parameters, the registry's version parameters) and Run
//! Command (SendCommand, GetCommandInvocation, DescribeInstanceInformation).

use aws_sdk_ssm::types::{InstanceInformationStringFilter, ParameterType};

use super::{Aws, Describer};
use crate::cloud::{CloudError, InstanceId, Invocation, ManagedNode};

/// The data type that makes SSM validate a value as an AMI id (SSM PutParameter docs).
pub const AMI_DATA_TYPE: &str = "aws:ec2:image";

impl Aws {
    /// The value of a parameter, or `None` if it does not exist.
    pub async fn get_parameter(&self, name: &str) -> Result<Option<String>, CloudError> {
        match self.ssm.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_string)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err("GetParameter", e)),
        }
    }

    /// Writes an AMI id under `name` with the `aws:ec2:image` data type. Returns the version the
    /// write made (see `put_string_parameter`).
    pub async fn put_image_parameter(
        &self,
        name: &str,
        ami: &str,
        overwrite: bool,
    ) -> Result<i64, CloudError> {
        let out = self
            .ssm
            .put_parameter()
            .name(name)
            .value(ami)
            .r#type(ParameterType::String)
            .data_type(AMI_DATA_TYPE)
            .overwrite(overwrite)
            .send()
            .await
            .map_err(|e| self.err("PutParameter", e))?;
        Ok(out.version())
    }

    pub async fn delete_parameter(&self, name: &str) -> Result<(), CloudError> {
        match self.ssm.delete_parameter().name(name).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.err("DeleteParameter", e)),
        }
    }

    /// DeleteParameters, 10 names a call (SSM API reference); names that do not exist are
    /// fine (AWS lists them as InvalidParameters, not as an error).
    pub async fn delete_parameters(&self, names: &[String]) -> Result<(), CloudError> {
        for chunk in names.chunks(GET_PARAMETERS_BATCH) {
            self.ssm
                .delete_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.err("DeleteParameters", e))?;
        }
        Ok(())
    }

    /// Names and values of every parameter under `path` (recursive).
    pub async fn parameters_by_path(
        &self,
        path: &str,
    ) -> Result<Vec<(String, String)>, CloudError> {
        let mut out = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .ssm
                .get_parameters_by_path()
                .path(path)
                .recursive(true)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| self.err("GetParametersByPath", e))?;
            for p in page.parameters() {
                if let (Some(n), Some(v)) = (p.name(), p.value()) {
                    out.push((n.to_string(), v.to_string()));
                }
            }
            next = page.next_token().map(str::to_string);
            if next.is_none() {
                return Ok(out);
            }
        }
    }
}

impl Aws {
    /// Values a parameter has had, oldest first (SSM keeps the last 100 versions).
    pub async fn parameter_history(&self, name: &str) -> Result<Vec<String>, CloudError> {
        Ok(self
            .parameter_versions(name)
            .await?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Writes a plain string parameter (overwriting). Returns the version the write made (SSM
    /// numbers a parameter's writes 1, 2, ...; 0 if the answer lacks it).
    pub async fn put_string_parameter(&self, name: &str, value: &str) -> Result<i64, CloudError> {
        let out = self
            .ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| self.err("PutParameter", e))?;
        Ok(out.version())
    }

    /// (version, value) of every write of a parameter SSM still keeps (the last 100), oldest
    /// first; nothing for a parameter that does not exist.
    pub async fn parameter_versions(&self, name: &str) -> Result<Vec<(i64, String)>, CloudError> {
        let mut out = Vec::new();
        let mut next = None;
        loop {
            let page = match self
                .ssm
                .get_parameter_history()
                .name(name)
                .set_next_token(next)
                .send()
                .await
            {
                Ok(p) => p,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_parameter_not_found()) =>
                {
                    return Ok(Vec::new())
                }
                Err(e) => return Err(self.err("GetParameterHistory", e)),
            };
            out.extend(
                page.parameters()
                    .iter()
                    .filter_map(|p| Some((p.version(), p.value()?.to_string()))),
            );
            next = page.next_token().map(str::to_string);
            if next.is_none() {
                return Ok(out);
            }
        }
    }
}

/// GetParameters takes at most 10 names per call (SSM API reference).
pub const GET_PARAMETERS_BATCH: usize = 10;

impl Aws {
    /// Values of many parameters, batched; missing ones are absent from the map.
    pub async fn get_parameters(
        &self,
        names: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, CloudError> {
        Ok(self
            .get_parameters_versioned(names)
            .await?
            .into_iter()
            .map(|(n, (v, _))| (n, v))
            .collect())
    }

    /// `get_parameters` with each value's version (how many writes made it; see
    /// `put_string_parameter`).
    pub async fn get_parameters_versioned(
        &self,
        names: &[String],
    ) -> Result<std::collections::BTreeMap<String, (String, i64)>, CloudError> {
        let mut out = std::collections::BTreeMap::new();
        // Many images share a source parameter: ask for each name once.
        let unique: Vec<String> = names
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect();
        for chunk in unique.chunks(GET_PARAMETERS_BATCH) {
            let page = self
                .ssm
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.err("GetParameters", e))?;
            for p in page.parameters() {
                if let (Some(n), Some(v)) = (p.name(), p.value()) {
                    out.insert(n.to_string(), (v.to_string(), p.version()));
                }
            }
        }
        Ok(out)
    }
}

/// What SendCommand should run.
#[derive(Debug, Clone)]
pub struct CommandSpec<'a> {
    /// `AWS-RunShellScript` or `AWS-RunPowerShellScript`.
    pub document: &'a str,
    pub commands: Vec<String>,
    /// The document's `executionTimeout` (how long the script may run on the instance).
    pub execution_timeout: std::time::Duration,
    /// How long the command may wait to be delivered (`TimeoutSeconds`).
    pub delivery_timeout: std::time::Duration,
    pub comment: String,
    /// Full output goes here (`OutputS3BucketName` / `OutputS3KeyPrefix`).
    pub output_s3: Option<(String, String)>,
}

/// SendCommand's `TimeoutSeconds` bounds (SSM API reference).
pub const DELIVERY_TIMEOUT_MIN: u64 = 30;
pub const DELIVERY_TIMEOUT_MAX: u64 = 2_592_000;
/// `executionTimeout` bounds of AWS-RunShellScript / AWS-RunPowerShellScript (document schema).
pub const EXECUTION_TIMEOUT_MAX: u64 = 172_800;

impl Aws {
    /// Sends one command to one instance; the command id.
    pub async fn send_command(
        &self,
        instance: &InstanceId,
        spec: &CommandSpec<'_>,
    ) -> Result<String, CloudError> {
        let exec = spec
            .execution_timeout
            .as_secs()
            .clamp(1, EXECUTION_TIMEOUT_MAX);
        let delivery = spec
            .delivery_timeout
            .as_secs()
            .clamp(DELIVERY_TIMEOUT_MIN, DELIVERY_TIMEOUT_MAX);
        let mut comment: String = spec.comment.chars().take(100).collect();
        comment.truncate(100);
        let mut req = self
            .ssm
            .send_command()
            .document_name(spec.document)
            .instance_ids(instance.as_str())
            .parameters("commands", spec.commands.clone())
            .parameters("executionTimeout", vec![exec.to_string()])
            .timeout_seconds(delivery as i32)
            .comment(comment);
        if let Some((bucket, prefix)) = &spec.output_s3 {
            req = req
                .output_s3_bucket_name(bucket)
                .output_s3_key_prefix(prefix)
                .output_s3_region(self.region.as_str());
        }
        let out = req.send().await.map_err(|e| self.err("SendCommand", e))?;
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_string)
            .ok_or_else(|| self.bad("SendCommand", "no command id in the answer"))
    }

    /// Asks the agent to stop command `command_id` on `instance` (CancelCommand).
    pub async fn cancel_command(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> Result<(), CloudError> {
        self.ssm
            .cancel_command()
            .command_id(command_id)
            .instance_ids(instance.as_str())
            .send()
            .await
            .map_err(|e| self.err("CancelCommand", e))?;
        Ok(())
    }
}

/// Run Command for the shared pollers (see `ec2::Describer`).
impl Describer {
    /// Invocations (command id, instance), one GetCommandInvocation each (the API takes one).
    pub(crate) async fn invocations(
        self,
        keys: Vec<(String, InstanceId)>,
    ) -> Result<Vec<((String, InstanceId), Invocation)>, CloudError> {
        let mut out = Vec::new();
        for (cmd, id) in keys {
            if let Some(i) = self.invocation(&cmd, &id).await? {
                out.push(((cmd, id), i));
            }
        }
        Ok(out)
    }

    /// One invocation; `None` while SSM does not know it yet (`InvocationDoesNotExist` is
    /// normal for a moment right after SendCommand).
    async fn invocation(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> Result<Option<Invocation>, CloudError> {
        match self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance.as_str())
            .send()
            .await
        {
            Ok(o) => Ok(Some(Invocation {
                status: o
                    .status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                details: o.status_details().unwrap_or_default().to_string(),
                response_code: o.response_code(),
                stdout: o.standard_output_content().unwrap_or_default().to_string(),
                stderr: o.standard_error_content().unwrap_or_default().to_string(),
                stdout_url: o
                    .standard_output_url()
                    .filter(|u| !u.is_empty())
                    .map(str::to_string),
                stderr_url: o
                    .standard_error_url()
                    .filter(|u| !u.is_empty())
                    .map(str::to_string),
            })),
            Err(e) => {
                let e = super::api_error(&self.region, "GetCommandInvocation", e);
                if e.code() == Some("InvocationDoesNotExist") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The instances Systems Manager knows, of `ids` (at most 50 per call).
    pub(crate) async fn nodes(
        self,
        ids: Vec<InstanceId>,
    ) -> Result<Vec<(InstanceId, ManagedNode)>, CloudError> {
        let mut out = Vec::new();
        let mut pages = self
            .ssm
            .describe_instance_information()
            .filters(
                InstanceInformationStringFilter::builder()
                    .key("InstanceIds")
                    .set_values(Some(ids.iter().map(|i| i.0.clone()).collect()))
                    .build()
                    .map_err(|e| CloudError::BadAnswer {
                        op: "DescribeInstanceInformation",
                        region: self.region.to_string(),
                        message: e.to_string(),
                    })?,
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| super::api_error(&self.region, "DescribeInstanceInformation", e))?;
            out.extend(page.instance_information_list().iter().filter_map(|i| {
                let id = InstanceId(i.instance_id()?.to_string());
                Some((
                    id.clone(),
                    ManagedNode {
                        id,
                        ping_status: i
                            .ping_status()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default(),
                        platform: i
                            .platform_type()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default(),
                    },
                ))
            }));
        }
        Ok(out)
    }
}
