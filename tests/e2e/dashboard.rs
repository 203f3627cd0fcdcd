//! The dashboard in a real headless browser: Debian's chromium through
//! chromedriver, driven over WebDriver. It must load, show the
//! node's functions, and update while requests flow, without a reload.

use crate::harness::{Node, WAIT, free_port};
use crate::webdriver::Session;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A chromedriver process on a free port, killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is missing: `cargo xtask test` installs chromium and chromium-driver",
            );
        let url = format!("http://127.0.0.1:{port}");
        crate::harness::eventually("chromedriver listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        ChromeDriver { child, url }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn browser(driver: &ChromeDriver, profile: &std::path::Path) -> Session {
    Session::new(
        &driver.url,
        json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    // CI runs as root in a container: no sandbox, no /dev/shm.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }),
    )
}

/// What the page shows now, read from its DOM.
fn page_state(browser: &Session) -> Value {
    browser.execute(
        r#"
        const rows = {};
        for (const tr of document.querySelectorAll('#functions tr[data-function]')) {
            rows[tr.dataset.function] = {
                requests: tr.querySelector('td.requests')?.textContent.trim(),
                errors: tr.querySelector('td.errors')?.textContent.trim(),
                version: tr.querySelector('td.version')?.textContent.trim(),
                dot: tr.querySelector('.dot')?.className,
                err_pct: tr.querySelector('td.err-pct')?.textContent.trim(),
                rate: tr.querySelector('td.rate')?.textContent.trim(),
            };
        }
        const events = [...document.querySelectorAll('#events li')]
            .map(li => li.dataset.kind + ':' + li.dataset.function);
        return {
            polls: Number(document.body.dataset.polls || 0),
            rows,
            events,
            outbox: document.getElementById('outbox-records')?.textContent.trim(),
        };
    "#,
    )
}

/// Polls the page until `check` accepts its state.
fn wait_until(browser: &Session, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = page_state(browser);
        if check(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; page: {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_dashboard_shows_the_nodes_functions_and_updates_live() {
    let node = Node::start(&[("hello", "hello"), ("trap", "trap")]);
    for _ in 0..2 {
        assert_eq!(node.get("/hello").status, 200);
    }
    assert_eq!(node.get("/trap/panic").status, 500);
    let driver = ChromeDriver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = browser(&driver, profile.path());
    browser.goto(&format!("http://{}/", node.admin));
    assert!(browser.has_element("canvas#latency-chart"));
    assert!(browser.has_element("canvas#outbox-chart"));
    assert!(!browser.has_element("#no-such-thing"), "lookups can fail");
    let first = wait_until(&browser, "both functions with their counts", |s| {
        s["rows"]["hello"]["requests"] == "2" && s["rows"]["trap"]["errors"] == "1"
    });
    let version = node.admin_get("/functions", &[]).json()["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "hello")
        .unwrap()["version"]
        .clone();
    assert_eq!(first["rows"]["hello"]["version"], version);
    assert!(
        first["events"]
            .as_array()
            .unwrap()
            .contains(&json!("loaded:hello")),
        "{first}"
    );
    assert_eq!(first["outbox"], "0");

    // Live: more requests show up in the open page.
    for _ in 0..3 {
        assert_eq!(node.get("/hello").status, 200);
    }
    let polls = first["polls"].as_u64().unwrap();
    let seen = wait_until(&browser, "the new requests", |s| {
        s["rows"]["hello"]["requests"] == "5" && s["polls"].as_u64().unwrap() > polls
    });
    // Polls later, with no request in between, the rate still counts them
    // (it spans seconds, not one poll).
    let polls = seen["polls"].as_u64().unwrap();
    let later = wait_until(&browser, "three more polls", |s| {
        s["polls"].as_u64().unwrap() >= polls + 3
    });
    let rate = later["rows"]["hello"]["rate"].as_str().unwrap().to_owned();
    assert!(rate != "0.00" && rate != "–", "hello's req/s: {later}");

    // A function failing every request is red with its error share, not
    // green with none; a healthy one is green.
    let state = page_state(&browser);
    assert_eq!(state["rows"]["trap"]["dot"], "dot bad", "{state}");
    assert_eq!(state["rows"]["trap"]["err_pct"], "100%", "{state}");
    assert_eq!(state["rows"]["hello"]["dot"], "dot ok", "{state}");
    // A deleted function leaves the list (its events stay).
    std::fs::remove_file(node.module_path("trap")).unwrap();
    let gone = wait_until(&browser, "the deleted function gone", |s| {
        s["rows"].get("trap").is_none()
    });
    assert!(
        gone["events"]
            .as_array()
            .unwrap()
            .contains(&json!("removed:trap")),
        "{gone}"
    );
}
