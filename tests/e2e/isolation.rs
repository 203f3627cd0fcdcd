//! Data isolation and bounds: the cloud refuses what is not a proper batch,
//! and a cut-off node's outbox stops growing at its limit, visibly.

use crate::harness::{Cloud, Node, TOKEN, prepare, write_host_config, write_settings};
use std::io::{Read as _, Write as _};

fn post(cloud: &Cloud, body: &[u8]) -> (u16, String) {
    let response = ureq::post(&format!("{}/v1/ingest", cloud.url()))
        .set("authorization", &format!("Bearer {TOKEN}"))
        .send_bytes(body);
    match response {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_cloud_refuses_malformed_and_oversized_batches() {
    let cloud = Cloud::start();
    for body in [
        &b"not json"[..],
        br#"{"node":"a"}"#,
        br#"{"node":"a","epoch":1,"entries":[{"seq":1,"record":{"kind":"nope"}}]}"#,
        br#"{"node":"a","epoch":1,"entries":[{"seq":2,"record":{"kind":"event","topic":"t","payload":"!!","idempotency_key":null,"hlc":1}}]}"#,
    ] {
        let (status, answer) = post(&cloud, body);
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains("malformed-batch"), "{answer}");
    }
    // Out of order.
    let event = |seq| {
        format!(
            r#"{{"seq":{seq},"record":{{"kind":"event","topic":"t","payload":"eA==","idempotency_key":null,"hlc":1}}}}"#
        )
    };
    let body = format!(
        r#"{{"node":"a","epoch":1,"entries":[{},{}]}}"#,
        event(2),
        event(1)
    );
    assert_eq!(post(&cloud, body.as_bytes()).0, 400);

    // A declared length over the 32 MiB limit is refused before the body
    // is read, so none is sent: a client still writing when the server
    // answers and closes may see a reset instead of the answer.
    let mut stream = std::net::TcpStream::connect(cloud.url().trim_start_matches("http://"))
        .expect("connect to the cloud");
    write!(
        stream,
        "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        33 * 1024 * 1024
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.80}");
    assert!(answer.contains("too-large"), "{answer}");

    // Streamed without a length, it is cut off at the limit. That client
    // may see the 413 or, still writing, a reset; the cloud's log says
    // which limit refused it either way.
    let huge = std::io::Cursor::new(vec![b' '; 33 * 1024 * 1024]);
    let sent = ureq::post(&format!("{}/v1/ingest", cloud.url()))
        .set("authorization", &format!("Bearer {TOKEN}"))
        .send(huge);
    match sent {
        Err(ureq::Error::Status(code, _)) => assert_eq!(code, 413),
        Err(ureq::Error::Transport(_)) => {}
        Ok(r) => panic!("an oversized batch was accepted: {}", r.status()),
    }
    cloud.wait_log(r#"status=413 code="too-large" detail="""#);
    assert!(cloud.events("t").is_empty(), "nothing was applied");
}

#[test]
fn a_full_outbox_refuses_replicated_writes_and_says_so() {
    let dir = prepare(&[("kv", "kvtest")]);
    write_settings(
        &dir,
        "kv",
        "[kv]\nstores = [\"local\"]\nreplicated = [\"default\"]\n",
    );
    write_host_config(&dir, "max-outbox-bytes = 8192\n");
    // No cloud: everything replicated stays in the outbox.
    let node = Node::spawn(dir, Vec::new(), None);
    let payload = vec![b'p'; 1024];
    let mut accepted = 0;
    let refused = loop {
        let reply = node
            .request("POST", "/kv/_/enqueue?topic=t", &[], &payload)
            .json();
        if reply.get("ok").is_some() {
            accepted += 1;
            assert!(accepted < 100, "the outbox never filled");
            continue;
        }
        break reply;
    };
    assert_eq!(refused["error"], "outbox-full");
    assert!(accepted >= 4, "{accepted}");
    // Too big for what room is left.
    let reply = node
        .request("POST", "/kv/default/set?key=k", &[], &[b'v'; 4096])
        .json();
    assert_eq!(
        reply["error"], "outbox-full",
        "replicated store refused too"
    );
    let reply = node
        .request("POST", "/kv/local/set?key=k", &[], b"v")
        .json();
    assert_eq!(reply["ok"], true, "a local store keeps working");
    node.wait_log(r"the outbox is full");

    let health = node.get("/_outpost/health").json();
    assert_eq!(health["outbox"]["records"], accepted);
    assert!(health["outbox"]["bytes"].as_u64().unwrap() <= 8192);
}
