//! Reading and writing the registry in one region.

use semver::Version;

use super::tag;
use crate::catalog::model::ParentReq;
use crate::cloud::aws::Aws;
use crate::cloud::{CloudError, ImageInfo};

/// A registered version of an image in one region.
#[derive(Debug, Clone)]
pub struct Registered {
    pub version: Version,
    pub image: ImageInfo,
    pub revoked: bool,
}

/// Every registered version of `image` (AMIs owned by this account tagged with the image).
pub async fn versions(aws: &Aws, image: &str) -> Result<Vec<Registered>, CloudError> {
    let images = aws
        .describe_images(
            &["self".to_string()],
            &[(&format!("tag:{}", tag::IMAGE), vec![image.to_string()])],
        )
        .await?;
    let mut out: Vec<Registered> = images
        .into_iter()
        .filter(|i| i.tags.get(tag::IMAGE).map(String::as_str) == Some(image))
        .filter_map(|i| {
            let version = Version::parse(i.tags.get(tag::VERSION)?).ok()?;
            let revoked = i.tags.contains_key(tag::REVOKED);
            Some(Registered {
                version,
                image: i,
                revoked,
            })
        })
        .collect();
    out.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(out)
}

/// The parent version a requirement names, or an error that says what exists.
pub async fn resolve_parent(
    aws: &Aws,
    prefix: &str,
    image: &str,
    req: &ParentReq,
) -> Result<Registered, CloudError> {
    let all = versions(aws, image).await?;
    let chosen = match req {
        ParentReq::Channel(c) if c != "latest" => {
            let param = format!("{prefix}/{image}/channels/{c}");
            let ami = aws.get_parameter(&param).await?.ok_or_else(|| {
                CloudError::NotFound(format!("channel `{c}` of {image} does not exist ({param})"))
            })?;
            all.iter()
                .find(|r| r.image.id.as_str() == ami && !r.revoked)
                .cloned()
        }
        _ => super::resolve(
            req,
            all.iter()
                .filter(|r| r.image.state == "available")
                .map(|r| (&r.version, r.revoked)),
        )
        .and_then(|v| all.iter().find(|r| &r.version == v).cloned()),
    };
    chosen.ok_or_else(|| {
        let have: Vec<String> = all
            .iter()
            .map(|r| format!("{}{}", r.version, if r.revoked { " (revoked)" } else { "" }))
            .collect();
        CloudError::NotFound(format!(
            "no version of {image} matches `{req}` in {} (registered: {})",
            aws.region,
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        ))
    })
}
