//! IAM: only what preflight needs (the build instance's profile must exist before launch).

use super::Aws;
use crate::cloud::CloudError;

impl Aws {
    /// Whether an instance profile of this name exists.
    pub async fn instance_profile_exists(&self, name: &str) -> Result<bool, CloudError> {
        match self
            .iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err("GetInstanceProfile", e)),
        }
    }
}
