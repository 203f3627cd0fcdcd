//! Components from other toolchains (componentize-py, componentize-js),
//! built against the plain `wasi:http/proxy` world, load and serve as they are.

use crate::harness::Node;

#[test]
fn python_and_javascript_components_serve() {
    let node = Node::start(&[("py", "foreign/python"), ("js", "foreign/javascript")]);
    let reply = node.get("/py/some/path?q=1");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "python saw /py/some/path?q=1\n")
    );
    let reply = node.get("/js/some/path?q=1");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "javascript saw /js/some/path?q=1\n")
    );
    // componentize-js 0.23 targets wasi 0.2.10: an older 0.2.x than the host's.
    node.wait_log(r"component imports function=js.*wasi:http/types@0\.2\.10");
}
