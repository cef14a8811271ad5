//! The EC2 client's HTTP client: every request (each retry too) first takes a token from the
//! region's `Limiter`, by the `Action` in its Query-protocol body.

use std::sync::Arc;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use crate::cloud::limit::{query_action, Limiter};

#[derive(Debug, Clone)]
pub(super) struct Limited {
    inner: SharedHttpClient,
    limiter: Arc<Limiter>,
}

impl Limited {
    pub(super) fn new(inner: SharedHttpClient, limiter: Arc<Limiter>) -> Self {
        Self { inner, limiter }
    }
}

impl HttpClient for Limited {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(LimitedConnector {
            inner: self.inner.http_connector(settings, components),
            limiter: self.limiter.clone(),
        })
    }
}

#[derive(Debug)]
struct LimitedConnector {
    inner: SharedHttpConnector,
    limiter: Arc<Limiter>,
}

impl HttpConnector for LimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let action = request
            .body()
            .bytes()
            .and_then(query_action)
            .unwrap_or("Unknown")
            .to_string();
        let limiter = self.limiter.clone();
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            limiter.acquire(&action).await;
            inner.call(request).await
        })
    }
}
