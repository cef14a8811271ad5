//! Reading live inputs (`[inputs.<name>]`) at plan and bake time: the sha256 of what a URL
//! serves (streamed, never held in memory; a conditional request with the ETag and
//! Last-Modified of the last read skips the download when nothing changed) and the value of an
//! SSM parameter (one GetParameters for all). A failure names the input: never a silent
//! "unchanged".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::model::{InputKind, Region, Target};
use crate::cloud::aws::Aws;
use crate::plan::{InputValue, InputValues, LiveInput};

/// How long one URL may take to answer and send its body.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a `body = "text"` URL may take to answer in full (a few bytes).
const TEXT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the last read of a URL saw, to ask "changed since?" next time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Seen {
    etag: Option<String>,
    last_modified: Option<String>,
    sha256: String,
}

/// `.bakery/inputs.json`: URL -> what its last read saw. Losing it costs one download.
fn cache_path(project: &Path) -> PathBuf {
    project.join(".bakery").join("inputs.json")
}

fn read_cache(project: &Path) -> BTreeMap<String, Seen> {
    std::fs::read(cache_path(project))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_cache(project: &Path, cache: &BTreeMap<String, Seen>) {
    let path = cache_path(project);
    let tmp = path.with_extension("json.tmp");
    let ok = path
        .parent()
        .map(std::fs::create_dir_all)
        .transpose()
        .and_then(|_| std::fs::write(&tmp, serde_json::to_vec_pretty(cache).unwrap_or_default()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = ok {
        // A cache that cannot be written costs a download next time, nothing else.
        tracing::warn!(error = %e, path = %path.display(), "cannot write the input cache");
    }
}

/// Reads every input of `wanted` (deduplicated by source); `project` holds the cache.
pub async fn resolve(
    project: &Path,
    target: &Target,
    wanted: &[LiveInput],
) -> Result<InputValues, String> {
    let mut out = InputValues::new();
    let mut urls: BTreeMap<(InputKind, &str), (&str, Option<&str>)> = BTreeMap::new();
    let mut params: BTreeMap<&str, &str> = BTreeMap::new();
    for l in wanted {
        match l.kind {
            InputKind::Http | InputKind::HttpText => {
                urls.entry((l.kind, l.source.as_str()))
                    .or_insert((&l.name, l.token_env.as_deref()));
            }
            InputKind::SsmParameter => {
                params.entry(&l.source).or_insert(&l.name);
            }
        }
    }
    if !urls.is_empty() {
        let mut cache = read_cache(project);
        let client = client()?;
        for ((kind, url), (name, token_env)) in &urls {
            let token = match token_env {
                Some(_) if !may_carry_token(url) => {
                    return Err(format!("input {name}: {url} is plain http: bakery sends the token of bearer_token_env only over https (or to this machine, 127.0.0.1 / localhost)"));
                }
                Some(var) => Some(bearer(var).map_err(|e| format!("input {name}: {e}"))?),
                None => None,
            };
            let fail = |e: String| format!("input {name}: GET {url}: {e}");
            let value = if *kind == InputKind::HttpText {
                let text = fetch_text(&client, url, token.as_ref())
                    .await
                    .map_err(fail)?;
                InputValue {
                    sha256: hex::encode(Sha256::digest(text.as_bytes())),
                    value: text,
                }
            } else {
                let seen = fetch(&client, url, token.as_ref(), cache.get(*url))
                    .await
                    .map_err(fail)?;
                let v = InputValue {
                    sha256: seen.sha256.clone(),
                    value: url.to_string(),
                };
                cache.insert(url.to_string(), seen);
                v
            };
            out.insert((*kind, url.to_string()), value);
        }
        write_cache(project, &cache);
    }
    if !params.is_empty() {
        let region = target
            .regions
            .first()
            .cloned()
            .unwrap_or_else(|| Region("us-east-1".into()));
        let aws = Aws::connect(target, &region).await;
        let names: Vec<String> = params.keys().map(|s| s.to_string()).collect();
        let got = aws.get_parameters(&names).await.map_err(|e| {
            let which: Vec<&str> = params.values().copied().collect();
            format!("input {}: {e}", which.join(", "))
        })?;
        for (p, name) in &params {
            let v = got.get(*p).ok_or_else(|| {
                format!("input {name}: SSM parameter {p} does not exist in {region}")
            })?;
            out.insert(
                (InputKind::SsmParameter, p.to_string()),
                InputValue {
                    sha256: hex::encode(Sha256::digest(v.as_bytes())),
                    value: v.clone(),
                },
            );
        }
    }
    Ok(out)
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

fn client() -> Result<Client, String> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .map_err(|e| format!("TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// Whether a request to `url` may carry a token: over https, or plain http to this machine only
/// (a token sent in clear over a network is a token given away).
fn may_carry_token(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => matches!(
            uri.host(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        ),
        _ => false,
    }
}

/// The most a `body = "text"` input may serve.
const MAX_TEXT: usize = 4096;

/// The `Authorization` header for the token in environment variable `var`, marked sensitive
/// (the token is never logged nor part of an error).
fn bearer(var: &str) -> Result<hyper::header::HeaderValue, String> {
    let token = std::env::var(var).unwrap_or_default();
    let token = token.trim();
    if token.is_empty() {
        return Err(format!(
            "environment variable {var} (bearer_token_env) is not set: it must hold the token the request needs"
        ));
    }
    let mut v = hyper::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        format!(
            "environment variable {var} (bearer_token_env) holds characters a header cannot carry"
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A GET of `url` (with the bearer token when there is one).
fn request(
    url: &str,
    token: Option<&hyper::header::HeaderValue>,
) -> Result<http::request::Builder, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let mut req = hyper::Request::get(uri)
        .header("user-agent", concat!("bakery/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, t.clone());
    }
    Ok(req)
}

/// The error of a request that got no answer, with its causes.
fn unanswered(e: hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// Streams `body` to `each`, a chunk at a time (never held whole); `each` may stop it.
async fn each_chunk(
    mut body: hyper::body::Incoming,
    mut each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            each(data)?;
        }
    }
    Ok(())
}

/// GETs `url` and returns its body as text, trimmed (at most `MAX_TEXT` bytes of UTF-8).
async fn fetch_text(
    client: &Client,
    url: &str,
    token: Option<&hyper::header::HeaderValue>,
) -> Result<String, String> {
    let req = request(url, token)?
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let work = async {
        let resp = client.request(req).await.map_err(unanswered)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let mut bytes = Vec::new();
        each_chunk(resp.into_body(), |data| {
            bytes.extend_from_slice(data);
            if bytes.len() > MAX_TEXT {
                return Err(format!(
                    "answered more than {MAX_TEXT} bytes: body = \"text\" is for short values such as a version (use the default body = \"sha256\" for files)"
                ));
            }
            Ok(())
        })
        .await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| "answered a body that is not UTF-8 text (body = \"text\")".to_string())?;
        Ok(text.trim().to_string())
    };
    within(TEXT_TIMEOUT, work).await
}

/// GETs `url` (conditionally when `last` is known), hashing the body as it streams in.
async fn fetch(
    client: &Client,
    url: &str,
    token: Option<&hyper::header::HeaderValue>,
    last: Option<&Seen>,
) -> Result<Seen, String> {
    let mut req = request(url, token)?;
    if let Some(s) = last {
        if let Some(e) = &s.etag {
            req = req.header("if-none-match", e);
        }
        if let Some(m) = &s.last_modified {
            req = req.header("if-modified-since", m);
        }
    }
    let req = req
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let work = async {
        let resp = client.request(req).await.map_err(unanswered)?;
        let status = resp.status();
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (etag, last_modified) = (header("etag"), header("last-modified"));
        if status == hyper::StatusCode::NOT_MODIFIED {
            return match last {
                Some(s) => Ok(s.clone()),
                None => {
                    Err("answered 304 Not Modified to a request that was not conditional".into())
                }
            };
        }
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let mut h = Sha256::new();
        each_chunk(resp.into_body(), |data| {
            h.update(data);
            Ok(())
        })
        .await?;
        Ok(Seen {
            etag,
            last_modified,
            sha256: hex::encode(h.finalize()),
        })
    };
    within(HTTP_TIMEOUT, work).await
}

/// `work`, or an error once `limit` has passed without a complete answer.
async fn within<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("no complete answer within {}s", limit.as_secs()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_over_https_or_to_this_machine_only() {
        assert!(may_carry_token(
            "https://teamcity.example.com/app/rest/server/version"
        ));
        assert!(may_carry_token(
            "http://127.0.0.1:8111/app/rest/server/version"
        ));
        assert!(may_carry_token("http://localhost/v"));
        assert!(!may_carry_token(
            "http://teamcity.example.com/app/rest/server/version"
        ));
        assert!(!may_carry_token("http://127.0.0.1.example.com/v"));
        assert!(!may_carry_token("ftp://127.0.0.1/v"));
        assert!(!may_carry_token("not a url"));
    }

    #[test]
    fn the_token_header_is_sensitive_and_never_in_an_error() {
        // A variable name no other test uses.
        std::env::set_var("BAKERY_TEST_BEARER_5C1E", " tok-123 ");
        let v = bearer("BAKERY_TEST_BEARER_5C1E").expect("header");
        assert!(v.is_sensitive());
        assert_eq!(v.to_str().unwrap(), "Bearer tok-123");
        assert!(!format!("{v:?}").contains("tok-123"));
        let e = bearer("BAKERY_TEST_BEARER_UNSET_5C1E").unwrap_err();
        assert!(
            e.contains("BAKERY_TEST_BEARER_UNSET_5C1E") && e.contains("is not set"),
            "{e}"
        );
        std::env::set_var("BAKERY_TEST_BEARER_5C1E", "s3cr3t\n123");
        let e = bearer("BAKERY_TEST_BEARER_5C1E").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
        std::env::remove_var("BAKERY_TEST_BEARER_5C1E");
    }
}
