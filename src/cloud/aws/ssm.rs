//! SSM Parameter Store: source AMIs from parameters, and the registry's version parameters.

use aws_sdk_ssm::types::ParameterType;

use super::Aws;
use crate::cloud::CloudError;

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

    /// Writes an AMI id under `name` with the `aws:ec2:image` data type.
    pub async fn put_image_parameter(
        &self,
        name: &str,
        ami: &str,
        overwrite: bool,
    ) -> Result<(), CloudError> {
        self.ssm
            .put_parameter()
            .name(name)
            .value(ami)
            .r#type(ParameterType::String)
            .data_type(AMI_DATA_TYPE)
            .overwrite(overwrite)
            .send()
            .await
            .map_err(|e| self.err("PutParameter", e))?;
        Ok(())
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
                    .filter_map(|p| p.value())
                    .map(str::to_string),
            );
            next = page.next_token().map(str::to_string);
            if next.is_none() {
                return Ok(out);
            }
        }
    }

    /// Writes a plain string parameter (overwriting).
    pub async fn put_string_parameter(&self, name: &str, value: &str) -> Result<(), CloudError> {
        self.ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| self.err("PutParameter", e))?;
        Ok(())
    }
}

/// GetParameters takes at most 10 names per call (SSM API reference).
const GET_PARAMETERS_BATCH: usize = 10;

impl Aws {
    /// Values of many parameters, batched; missing ones are absent from the map.
    pub async fn get_parameters(
        &self,
        names: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, CloudError> {
        let mut out = std::collections::BTreeMap::new();
        for chunk in names.chunks(GET_PARAMETERS_BATCH) {
            let page = self
                .ssm
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.err("GetParameters", e))?;
            for p in page.parameters() {
                if let (Some(n), Some(v)) = (p.name(), p.value()) {
                    out.insert(n.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }
}
