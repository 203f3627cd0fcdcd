//! TLS between edges and the cloud: a cloud serving HTTPS with a
//! certificate from a CA made for the test, an edge (and the operator's
//! CLI) that verify it with that CA, an edge without the CA that refuses
//! to send its credential, plain HTTP to the TLS port getting no answer,
//! and a cloud with unusable certificate files refusing to start.

use crate::harness::{Cloud, Node, encode, eventually, free_port, outpost_bin, prepare};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA and a cloud certificate it signed for 127.0.0.1 and localhost, as
/// PEM files (`ca.pem`, `cert.pem`, `key.pem`).
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "outpost test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A cloud serving HTTPS with `certs`, per-node credentials only.
fn tls_cloud(certs: &Certs, extra: &[&str]) -> Cloud {
    let (cert, key) = (certs.arg("cert.pem"), certs.arg("key.pem"));
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
    args.extend(extra);
    let cloud = Cloud::start_secure(&args);
    cloud.wait_log(&format!("cloud listening on https://{}", cloud.addr));
    cloud
}

fn https_url(cloud: &Cloud) -> String {
    format!("https://{}", cloud.addr)
}

/// A ureq agent that trusts only the CA in `ca`.
fn agent(ca: &Path) -> ureq::Agent {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(config))
        .timeout(Duration::from_secs(30))
        .build()
}

/// GET `url` with `token`: status and body.
fn get(agent: &ureq::Agent, url: &str, token: &str) -> (u16, String) {
    let response = match agent
        .get(url)
        .set("authorization", &format!("Bearer {token}"))
        .call()
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    (response.status(), response.into_string().unwrap())
}

/// The cloud's value of `key` in `store`, read over HTTPS.
fn cloud_value(cloud: &Cloud, agent: &ureq::Agent, store: &str, key: &str) -> Option<String> {
    let url = format!(
        "{}/v1/kv?store={}&key={}",
        https_url(cloud),
        encode(store),
        encode(key)
    );
    let (status, body) = get(agent, &url, &cloud.admin_token());
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value["value"].as_str()?)
        .unwrap();
    Some(String::from_utf8(bytes).unwrap())
}

fn edge(node_id: &str, cloud_url: &str, token: &str, extra: &[&str]) -> Node {
    crate::harness::replicating_edge(node_id, cloud_url, token, extra)
}

fn set(node: &Node, key: &str, value: &str) {
    let reply = node.request(
        "POST",
        &format!("/kv/default/set?key={}", encode(key)),
        &[],
        value.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// `outpost cloud ARGS --cloud URL --ca CA --data DIR`: its stdout.
fn manage(cloud: &Cloud, ca: &Path, args: &[&str]) -> String {
    let output = Command::new(outpost_bin())
        .arg("cloud")
        .args(args)
        .arg("--cloud")
        .arg(https_url(cloud))
        .arg("--ca")
        .arg(ca)
        .arg("--data")
        .arg(cloud.dir.path())
        .output()
        .expect("run outpost cloud");
    assert!(
        output.status.success(),
        "outpost cloud {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn an_edge_ships_over_tls_to_a_cloud_it_verifies_with_its_ca() {
    let certs = Certs::new();
    let cloud = tls_cloud(&certs, &[]);
    let ca = certs.path("ca.pem");
    // The operator's CLI enrols the edge over HTTPS too.
    let token = manage(&cloud, &ca, &["enrol", "edge-tls"]);
    assert!(!token.is_empty());
    let node = edge(
        "edge-tls",
        &https_url(&cloud),
        &token,
        &["--cloud-ca", &certs.arg("ca.pem")],
    );
    assert!(
        node.log_matches("credential sent in clear").is_empty(),
        "no clear-text warning for https"
    );
    set(&node, "k", "over-tls");
    let https = agent(&ca);
    eventually("the value at the cloud", || {
        (cloud_value(&cloud, &https, "@kv", "k").as_deref() == Some("over-tls")).then_some(())
    });
    // The credentials listing, over HTTPS, shows the edge.
    let listing: Value = serde_json::from_str(&manage(&cloud, &ca, &["credentials"])).unwrap();
    assert!(listing.to_string().contains("edge-tls"), "{listing}");
}

#[test]
fn an_edge_without_the_ca_refuses_the_untrusted_certificate_and_keeps_its_writes() {
    let certs = Certs::new();
    let cloud = tls_cloud(&certs, &["--dev-token", "test-token"]);
    let node = edge("edge-untrusted", &https_url(&cloud), "test-token", &[]);
    set(&node, "k", "kept");
    // rustls' own words for a certificate from an unknown CA.
    node.wait_log("cannot ship to the cloud.*TLS.*invalid peer certificate.*--cloud-ca");
    let outbox = node.admin_get("/outbox", &[]).json();
    assert_eq!(outbox["records"], 1, "{outbox}");
    assert_eq!(outbox["quarantined"], 0, "{outbox}");
    let https = agent(&certs.path("ca.pem"));
    assert_eq!(cloud_value(&cloud, &https, "@kv", "k"), None);
    // The edge gave up in the handshake, before sending any request (and
    // so its token).
    cloud.wait_log("TLS handshake failed");
}

#[test]
fn plain_http_to_the_tls_port_gets_no_answer() {
    let certs = Certs::new();
    let cloud = tls_cloud(&certs, &["--dev-token", "test-token"]);
    let https = agent(&certs.path("ca.pem"));
    let (status, _) = get(
        &https,
        &format!("{}/_outpost/health", https_url(&cloud)),
        "test-token",
    );
    assert_eq!(status, 200, "HTTPS is served");
    let plain = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    match plain
        .get(&format!("http://{}/_outpost/health", cloud.addr))
        .call()
    {
        Err(ureq::Error::Transport(_)) => {}
        other => panic!("plain HTTP got an answer: {other:?}"),
    }
    // An edge given http:// for the TLS port ships nothing either.
    let node = edge(
        "edge-plain",
        &format!("http://{}", cloud.addr),
        "test-token",
        &[],
    );
    set(&node, "k", "v");
    node.wait_log("cannot ship to the cloud");
    assert_eq!(cloud_value(&cloud, &https, "@kv", "k"), None);
}

/// Runs `outpost cloud` with `args` and returns its exit code and stderr;
/// panics if it is still running (serving) after a while.
fn cloud_start_fails(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Cloud::command(free_port(), dir.path(), true)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("outpost cloud {args:?} started instead of failing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

#[test]
fn a_cloud_with_unusable_tls_files_does_not_start() {
    let certs = Certs::new();
    let missing = certs.path("missing.pem").display().to_string();
    let (cert, key) = (certs.arg("cert.pem"), certs.arg("key.pem"));
    let other_key = certs.path("other-key.pem");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let other_key = other_key.display().to_string();
    for (args, says) in [
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            missing.as_str(),
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &missing],
            missing.as_str(),
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            "cannot be used together",
        ),
        (
            vec!["--tls-cert", &key, "--tls-key", &key],
            "no usable PEM certificate",
        ),
        (vec!["--tls-cert", &cert], "--tls-key"),
    ] {
        let (code, stderr) = cloud_start_fails(&args);
        assert_ne!(code, Some(0), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
        assert!(!stderr.contains("cloud listening"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_edge_with_an_unreadable_cloud_ca_stops_before_loading_anything() {
    let dir = prepare(&[("hello", "hello")]);
    let missing = dir.path().join("no-such-ca.pem");
    let args: Vec<String> = [
        "--cloud",
        "https://127.0.0.1:1",
        "--cloud-token",
        "t",
        "--cloud-ca",
        missing.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let output = Node::command(&dir, &args, None)
        .stdin(Stdio::null())
        .output()
        .expect("run outpost serve");
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("no-such-ca.pem"), "{log}");
    assert!(
        !log.contains("outpost: ready") && !log.contains("outpost::deployer"),
        "it stopped before loading: {log}"
    );
}
