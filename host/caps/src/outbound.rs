//! The outbound HTTP capability: `wasi:http/outgoing-handler`, allowed only
//! to the hosts a function's settings list (`[http] allowed-hosts`), at
//! most `max-outbound-requests` per request, with connect and read
//! timeouts. Deny is the default.
//!
//! Its settings are `[http]` in `NAME.toml` ([`HttpSection`]), its policy
//! the parsed allow list ([`HostPattern`]s), its per-request context
//! [`Outbound`], which wasmtime-wasi-http calls as its hooks.

use http::uri::Scheme;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Longest wait for a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the response head, and between body frames.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `[http]` in a function's `NAME.toml`: outbound requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpSection {
    /// Hosts the function may call; none by default.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// An `allowed-hosts` entry that is not a host pattern.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("[http] allowed-hosts: {0}")]
pub struct BadHost(pub String);

impl HttpSection {
    /// Checks every entry of `allowed-hosts`.
    pub fn validate(&self) -> Result<(), BadHost> {
        for host in &self.allowed_hosts {
            HostPattern::parse(host).map_err(BadHost)?;
        }
        Ok(())
    }

    /// The parsed allow list (valid entries; see [`Self::validate`]).
    pub fn allowed_hosts(&self) -> Vec<HostPattern> {
        self.allowed_hosts
            .iter()
            .filter_map(|h| HostPattern::parse(h).ok())
            .collect()
    }
}

/// One entry of `allowed-hosts`: `example.com`, `*.example.com` (any
/// subdomain, not the domain itself), optionally with `:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase host, or the suffix (with its leading dot) of a wildcard.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    /// Parses one entry; the error says what was wrong.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let bad = || format!("{pattern:?} is not HOST, *.DOMAIN or either with :PORT");
        let (host, port) = match pattern.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse::<u16>().map_err(|_| bad())?)),
            None => (pattern, None),
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(suffix) => (format!(".{suffix}"), true),
            None => (host.to_string(), false),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        };
        if !valid(host.trim_start_matches('.')) {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }

    /// Whether a request to `host:port` is allowed by this entry.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let host_ok = if self.wildcard {
            host.ends_with(&self.host)
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// Per-request outbound state: what is allowed, and what is left.
pub struct Outbound {
    /// The function's name, for log lines.
    pub function: Arc<str>,
    /// The function version's allow list.
    pub allowed: Arc<[HostPattern]>,
    /// Requests still allowed in this request.
    pub remaining: u32,
}

impl Outbound {
    /// Why `uri` may not be fetched, if it may not.
    fn refusal(&self, uri: &http::Uri) -> Option<String> {
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTPS);
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Some(format!("scheme {scheme} is not allowed"));
        }
        let Some(host) = uri.host() else {
            return Some("no host".into());
        };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
        if !self.allowed.iter().any(|p| p.matches(host, port)) {
            return Some(format!("{host}:{port} is not in [http] allowed-hosts"));
        }
        if self.remaining == 0 {
            return Some("over the per-request limit of outbound requests".into());
        }
        None
    }
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        if let Some(reason) = self.refusal(request.uri()) {
            tracing::warn!(target: "outpost::outbound", function = %self.function, uri = %request.uri(), reason = %reason, "outbound HTTP denied");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        self.remaining -= 1;
        // The guest may ask for shorter timeouts, never longer ones.
        let cap = |asked: Option<Duration>, max: Duration| Some(asked.map_or(max, |a| a.min(max)));
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: cap(options.connect_timeout, CONNECT_TIMEOUT),
            first_byte_timeout: cap(options.first_byte_timeout, READ_TIMEOUT),
            between_bytes_timeout: cap(options.between_bytes_timeout, READ_TIMEOUT),
        };
        tracing::debug!(target: "outpost::outbound", function = %self.function, uri = %request.uri(), "outbound HTTP");
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_hosts_and_ports() {
        let exact = HostPattern::parse("API.example.com").unwrap();
        assert!(exact.matches("api.example.com", 443));
        assert!(!exact.matches("x.api.example.com", 443));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com", 80));
        assert!(wild.matches("a.b.example.com", 80));
        assert!(!wild.matches("example.com", 80));
        assert!(!wild.matches("badexample.com", 80));
        let port = HostPattern::parse("127.0.0.1:8080").unwrap();
        assert!(port.matches("127.0.0.1", 8080));
        assert!(!port.matches("127.0.0.1", 8081));
        for bad in ["", "a b", "*.", "host:99999", "http://x"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deny_is_the_default_and_the_count_is_enforced() {
        let mut outbound = Outbound {
            function: Arc::from("f"),
            allowed: Arc::from(vec![HostPattern::parse("ok.test").unwrap()]),
            remaining: 1,
        };
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        assert!(outbound.refusal(&uri("https://other.test/")).is_some());
        assert!(outbound.refusal(&uri("ftp://ok.test/")).is_some());
        assert!(outbound.refusal(&uri("https://ok.test/")).is_none());
        outbound.remaining = 0;
        assert!(outbound.refusal(&uri("https://ok.test/")).is_some());
    }
}
