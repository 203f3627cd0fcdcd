//! The operator's side of `/v1/credentials`: what `outpost cloud enrol`,
//! `reader`, `credentials` and `revoke` call on a running cloud.

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Sends one credentials request to the cloud at `base` with the admin
/// token and returns the JSON answer (an error for any non-2xx).
pub async fn call(
    base: &str,
    admin_token: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Full<Bytes>>(hyper_util::client::legacy::connect::HttpConnector::new());
    let request = Request::builder()
        .method(method)
        .uri(&url)
        .header(header::AUTHORIZATION, format!("Bearer {admin_token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))?;
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within 30 s"))??;
    let text = String::from_utf8_lossy(&bytes);
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {text}");
    Ok(serde_json::from_slice(&bytes)?)
}
