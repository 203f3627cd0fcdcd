//! Outbound HTTP from guests: denied unless the function's settings allow
//! the host, counted per request. The upstream here is a second, real
//! Outpost node serving `hello`.

use crate::harness::{Node, encode, prepare, write_settings};

fn fetch(node: &Node, url: &str, times: u32) -> Vec<String> {
    let reply = node.get(&format!("/hostile/fetch?url={}&times={times}", encode(url)));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body.lines().map(str::to_owned).collect()
}

#[test]
fn outbound_calls_reach_only_allowed_hosts() {
    let upstream = Node::start(&[("hello", "hello")]);
    let allowed = upstream.url("/hello");
    let dir = prepare(&[("hostile", "hostile"), ("closed", "hostile")]);
    write_settings(
        &dir,
        "hostile",
        &format!(
            "[http]\nallowed-hosts = [\"127.0.0.1:{}\"]\n[limits]\nmax-outbound-requests = 2\n",
            upstream.addr.port()
        ),
    );
    let node = Node::spawn(dir, Vec::new(), None);

    assert_eq!(fetch(&node, &allowed, 1), ["200 Hello from Outpost!"]);

    // Deny is the default: a function without settings reaches nothing.
    let denied = node.get(&format!("/closed/fetch?url={}", encode(&allowed)));
    assert!(denied.body.contains("HttpRequestDenied"), "{}", denied.body);
    node.wait_log(r"outbound HTTP denied.*function=closed.*not in \[http\] allowed-hosts");

    // Same host, another port: not allowed either.
    let other_port = format!("http://127.0.0.1:{}/hello", upstream.addr.port() + 1);
    assert!(fetch(&node, &other_port, 1)[0].contains("HttpRequestDenied"));

    // Two per request, the third is refused.
    let three = fetch(&node, &allowed, 3);
    assert_eq!(
        three[..2],
        ["200 Hello from Outpost!", "200 Hello from Outpost!"]
    );
    assert!(three[2].contains("HttpRequestDenied"), "{three:?}");
    node.wait_log(r"over the per-request limit of outbound requests");
}

#[test]
fn a_slow_upstream_is_bounded_by_the_callers_deadline() {
    let upstream = Node::start(&[("slow", "slow")]);
    let dir = prepare(&[("hostile", "hostile")]);
    write_settings(
        &dir,
        "hostile",
        &format!(
            "[http]\nallowed-hosts = [\"127.0.0.1:{}\"]\n[limits]\ntimeout-ms = 1000\n",
            upstream.addr.port()
        ),
    );
    let node = Node::spawn(dir, Vec::new(), None);
    let url = upstream.url("/slow?ms=60000");
    let reply = node.get(&format!("/hostile/fetch?url={}", encode(&url)));
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(reply.json()["error"], "deadline");
}
