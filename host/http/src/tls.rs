//! TLS with rustls (the `ring` provider): a server configuration from PEM
//! files for [`crate::listener::run_tls`], and the client side an edge and
//! the operator's CLI use to reach the cloud ([`client_config`],
//! [`connector`]).
//!
//! The provider is named in every configuration instead of relying on a
//! process-wide default, so a second provider linked in by some other
//! crate can never make a builder panic or silently switch.
//!
//! Clients trust the Mozilla root set that `webpki-roots` compiles in, or,
//! when a CA file is given, only that file's certificates: an edge image
//! then needs no system certificate store, and a private cloud CA pins the
//! cloud instead of adding to what is trusted.

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a TLS configuration could not be built; each names the file. The
/// cause is part of the message, not a `source`, so a chain prints it once.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read the TLS {what} file {path}: {error}")]
    Read {
        /// Which file: "certificate", "key" or "CA".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not PEM, or holds none of what it should.
    #[error("{path} holds no usable PEM {what}: {message}")]
    Pem {
        /// What was looked for: "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        message: String,
    },
    /// A CA certificate that rustls does not accept as a trust anchor.
    #[error("{path}: a certificate is not a usable CA: {error}")]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        error: rustls::Error,
    },
    /// The certificate and key do not make a server identity (a key of
    /// another certificate, an unsupported key type).
    #[error("the TLS certificate {cert} and key {key} cannot be used together: {error}")]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        error: rustls::Error,
    },
    /// The provider refused the protocol versions (never with ring).
    #[error("TLS setup failed: {0}")]
    Setup(rustls::Error),
}

/// The ALPN protocols the listener offers, most preferred first.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

/// Every certificate in the PEM file `path`, in order; at least one.
pub fn load_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
            path: path.to_owned(),
            message: "no CERTIFICATE section".into(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file `path`.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// A server configuration from a PEM certificate chain (leaf first) and
/// its PEM private key, offering HTTP/2 and HTTP/1.1 by ALPN. Fails when
/// either file is missing or unreadable, or when the key is not the
/// certificate's.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certificates("certificate", cert)?;
    let private = load_private_key(key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        // Checks that the key's public half is the leaf certificate's.
        .with_single_cert(chain, private)
        .map_err(|error| TlsError::Identity {
            cert: cert.to_owned(),
            key: key.to_owned(),
            error,
        })?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration that verifies servers against the certificates
/// in the PEM file `ca` only, or, without one, against the `webpki-roots`
/// set. It offers HTTP/1.1 by ALPN: the clients of the cloud send one
/// request at a time per connection.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in load_certificates("CA", path)? {
                roots.add(cert).map_err(|error| TlsError::BadCa {
                    path: path.to_owned(),
                    error,
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What [`connector`] makes: TLS for `https://` URLs, plain TCP for
/// `http://` ones.
pub type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A connector for hyper-util's client that speaks TLS with `config` to
/// `https://` URLs and plain HTTP to `http://` ones, giving up on a TCP
/// connect after `connect_timeout`.
pub fn connector(config: Arc<ClientConfig>, connect_timeout: Duration) -> HttpsConnector {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_nodelay(true);
    // By default it refuses any scheme but http; the TLS layer above it
    // decides which URLs get TLS.
    tcp.enforce_http(false);
    hyper_rustls::HttpsConnector::from((tcp, config))
}

/// Whether `host` (as in a URL, IPv6 in brackets or not) names this
/// machine: `localhost`, `*.localhost`, or a loopback address. A
/// credential sent in clear to any other host crosses a network.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lower = host.to_ascii_lowercase();
    let name = lower.trim_end_matches('.');
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The message of `error` and of each error under it, joined with ": ":
/// hyper's client error alone says only "client error (Connect)", and the
/// certificate problem is further down.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let part = e.to_string();
        // io::Error repeats its inner error's message; say it once.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

/// Whether a rustls error is somewhere under `error`: the TLS handshake
/// failed (an untrusted or mismatched certificate, no common protocol),
/// not the network.
pub fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        next = match e.downcast_ref::<std::io::Error>() {
            // io::Error's `source` skips the error it wraps, and
            // tokio-rustls and hyper-rustls each wrap one.
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "cloud.localhost",
            "127.0.0.1",
            "127.3.4.5",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "cloud.example.com",
            "10.0.0.1",
            "192.168.1.1",
            "[2001:db8::1]",
            "localhost.example.com",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn missing_files_name_the_file() {
        let err = server_config(Path::new("/nonexistent/cert.pem"), Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.to_string().contains("CA file"), "{err}");
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let dir = std::env::temp_dir().join(format!("outpost-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-pem.txt");
        std::fs::write(&path, "hello").unwrap();
        let err = client_config(Some(&path)).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        let err = server_config(&path, &path).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rustls_error_is_found_under_wrapped_io_errors() {
        let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let outer = std::io::Error::other(inner);
        assert!(is_tls_error(&outer));
        assert_eq!(
            error_chain(&outer),
            "invalid peer certificate: UnknownIssuer"
        );
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_tls_error(&std::io::Error::other(plain)));
    }

    #[test]
    fn the_default_client_config_builds_and_offers_http1() {
        let config = client_config(None).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }
}
