//! The operator's side of `/v1/credentials`: what `outpost cloud enrol`,
//! `reader`, `credentials` and `revoke` call on a running cloud, over https
//! (verified against the `webpki-roots` set or a given CA) or plain http.

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::time::Duration;

/// Sends one credentials request to the cloud at `base` with the admin
/// token and returns the JSON answer (an error for any non-2xx). An https
/// cloud is verified against the certificates in the PEM file `ca`, or
/// without one against the `webpki-roots` set.
pub async fn call(
    base: &str,
    ca: Option<&Path>,
    admin_token: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context as _;
    let base = base.trim_end_matches('/');
    let uri: http::Uri = base
        .parse()
        .with_context(|| format!("{base:?} is not a URL"))?;
    let host = uri.host().unwrap_or_default().to_owned();
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            anyhow::ensure!(ca.is_none(), "--ca is given, but {base} is not https://");
            if !outpost_http::tls::is_loopback_host(&host) {
                tracing::warn!(target: "outpost::cloud", cloud = %base, "credential sent in clear: the admin token goes over plain http to another machine; use https://");
            }
        }
        _ => anyhow::bail!("{base:?}: use https://HOST[:PORT] (or http:// on this machine)"),
    }
    let url = format!("{base}{path}");
    let tls = outpost_http::tls::client_config(ca)?;
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Full<Bytes>>(outpost_http::tls::connector(tls, Duration::from_secs(10)));
    let request = Request::builder()
        .method(method)
        .uri(&url)
        .header(header::AUTHORIZATION, format!("Bearer {admin_token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            anyhow::anyhow!("cannot reach {url}: {}", outpost_http::tls::error_chain(&e))
        })?;
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
