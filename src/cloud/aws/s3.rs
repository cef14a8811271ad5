//! S3 for the SSM communicator: files too large to inline in a command go through the target's
//! bucket under a per-bake prefix (the instance fetches them with its instance role), and full
//! command output lands there (`OutputS3BucketName`). The prefix is removed through the ledger.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::Aws;
use crate::cloud::CloudError;

/// DeleteObjects takes at most 1,000 keys per call (S3 API reference).
const DELETE_BATCH: usize = 1000;

impl Aws {
    /// Whether the bucket exists and can be reached (HeadBucket).
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool, CloudError> {
        match self.s3.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(self.err("HeadBucket", e)),
        }
    }

    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        bytes: &[u8],
    ) -> Result<(), CloudError> {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map_err(|e| self.err("PutObject", e))?;
        Ok(())
    }

    /// The object's bytes, `None` if there is no such key.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, CloudError> {
        match self.s3.get_object().bucket(bucket).key(key).send().await {
            Ok(o) => {
                let data = o
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.bad("GetObject", e.to_string()))?;
                Ok(Some(data.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.err("GetObject", e)),
        }
    }

    /// Keys of every object under `prefix` (all pages, 1,000 keys each).
    pub async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, CloudError> {
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("ListObjectsV2", e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        Ok(keys)
    }

    /// Deletes every object under `prefix`.
    pub async fn delete_prefix(&self, bucket: &str, prefix: &str) -> Result<(), CloudError> {
        let keys = self.list_keys(bucket, prefix).await?;
        for chunk in keys.chunks(DELETE_BATCH) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.bad("DeleteObjects", e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| self.bad("DeleteObjects", e.to_string()))?;
            let out = self
                .s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.err("DeleteObjects", e))?;
            if let Some(e) = out.errors().first() {
                return Err(self.bad(
                    "DeleteObjects",
                    format!(
                        "{}: {}",
                        e.key().unwrap_or_default(),
                        e.message().unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }
}
