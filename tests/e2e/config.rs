//! Per-function `[env]` and `[secrets]`: what the guest sees through
//! `wasi:cli/environment` and `wasi:config/store`, that a secret's value
//! reaches nothing but its own function, that a missing secret is a load
//! error, and that a settings change needs no recompile.

use crate::harness::{Node, eventually, prepare, write_settings};
use serde_json::{Value, json};
use std::sync::Once;

/// The host environment variable the secret tests read: unique to this
/// test process, so nothing else sets it.
fn host_var() -> String {
    format!("CONFIGTEST_API_TOKEN_{}", std::process::id())
}

/// The value of [`host_var`]: unlikely to appear anywhere by chance.
fn host_secret() -> String {
    format!("env-secret-{}-d41d8cd98f00", std::process::id())
}

/// Puts [`host_var`] into this test process's environment, once, so every
/// `outpost serve` it starts inherits it (the harness offers no per-node
/// environment).
fn set_host_secret() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        // SAFETY: std serializes its own environment access (`set_var`,
        // `Command` capturing the environment to spawn) behind one lock,
        // and this test process reads the environment only through std;
        // glibc never frees an old `environ` array for a racing `getenv`.
        unsafe { std::env::set_var(host_var(), host_secret()) };
    });
}

/// GET `/name?key=KEY` on the configtest guest, as JSON.
fn report(node: &Node, name: &str, key: &str) -> Value {
    let reply = node.get(&format!("/{name}?key={key}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

#[test]
fn env_and_secrets_reach_only_their_function_and_never_the_log_or_admin() {
    set_host_secret();
    let dir = prepare(&[("app", "configtest"), ("other", "configtest")]);
    let file_secret = format!("file-secret-{}-0cc175b9c0f1", std::process::id());
    let secret_path = dir.path().join("db-password");
    // `echo` style: the trailing newline is not part of the value.
    std::fs::write(&secret_path, format!("{file_secret}\n")).unwrap();
    write_settings(
        &dir,
        "app",
        &format!(
            "[env]\nGREETING = \"hello from env\"\n\n[secrets]\nAPI_TOKEN = {{ env = \"{}\" }}\nDB_PASSWORD = {{ file = \"{}\" }}\n",
            host_var(),
            secret_path.display()
        ),
    );
    write_settings(&dir, "other", "[env]\nOTHER = \"x\"\n");
    let node = Node::spawn(dir, Vec::new(), None);

    // [env]: the environment (std::env) and wasi:config both.
    let app = report(&node, "app", "GREETING");
    assert_eq!(app["env"], json!({ "GREETING": "hello from env" }), "{app}");
    assert_eq!(app["env_var"], "hello from env");
    assert_eq!(app["get"], "hello from env");
    // Secrets: wasi:config only, never the environment.
    assert_eq!(
        app["config"],
        json!({
            "GREETING": "hello from env",
            "API_TOKEN": host_secret(),
            "DB_PASSWORD": file_secret,
        }),
        "{app}"
    );
    let token = report(&node, "app", "API_TOKEN");
    assert_eq!(token["get"], host_secret());
    assert_eq!(token["env_var"], Value::Null);
    assert_eq!(report(&node, "app", "DB_PASSWORD")["get"], file_secret);
    assert_eq!(report(&node, "app", "MISSING")["get"], Value::Null);

    // Another function sees its own settings only.
    let other = report(&node, "other", "API_TOKEN");
    assert_eq!(other["env"], json!({ "OTHER": "x" }), "{other}");
    assert_eq!(other["config"], json!({ "OTHER": "x" }), "{other}");
    assert_eq!(other["get"], Value::Null);
    assert_eq!(report(&node, "other", "GREETING")["get"], Value::Null);

    // Neither the admin listener nor the log ever shows a secret's value.
    for path in [
        "/functions",
        "/events?limit=100",
        "/metrics",
        "/outbox",
        "/",
    ] {
        let reply = node.admin_get(path, &[]);
        for secret in [host_secret(), file_secret.clone()] {
            assert!(
                !reply.body.contains(&secret),
                "{path} shows a secret: {}",
                reply.body
            );
        }
    }
    for line in node.log_lines() {
        assert!(
            !line.contains(&host_secret()) && !line.contains(&file_secret),
            "the log shows a secret: {line}"
        );
    }
}

#[test]
fn a_missing_secret_is_a_load_error_and_the_previous_version_keeps_serving() {
    set_host_secret();
    let dir = prepare(&[("app", "configtest")]);
    write_settings(&dir, "app", "[env]\nVERSION = \"1\"\n");
    let node = Node::spawn(dir, Vec::new(), None);
    assert_eq!(report(&node, "app", "VERSION")["get"], "1");

    let gone = node.dir.path().join("no-such-secret");
    let unset = format!("CONFIGTEST_UNSET_{}", std::process::id());
    for (source, reason) in [
        (
            format!("{{ file = \"{}\" }}", gone.display()),
            "secret GONE: cannot read",
        ),
        (
            format!("{{ env = \"{unset}\" }}"),
            "secret GONE: the host environment variable .* is not set",
        ),
    ] {
        let mark = node.log_len();
        node.write_settings(
            "app",
            &format!("[env]\nVERSION = \"2\"\n[secrets]\nGONE = {source}\n"),
        );
        let line = node.wait_log_after("load failed", mark);
        assert!(
            regex::Regex::new(reason).unwrap().is_match(&line),
            "{reason}: {line}"
        );
        assert!(line.contains("keeps serving"), "{line}");
        assert_eq!(report(&node, "app", "VERSION")["get"], "1");
    }
    let functions = node.admin_get("/functions", &[]).json();
    let app = &functions["functions"][0];
    assert_eq!(app["serving"], true, "{functions}");
    assert!(
        app["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("secret GONE")),
        "{functions}"
    );

    // A first version with a missing secret is not served at all.
    // Settings first: a module without them would load and serve.
    let mark = node.log_len();
    node.write_settings(
        "fresh",
        &format!("[secrets]\nGONE = {{ env = \"{unset}\" }}\n"),
    );
    std::fs::copy(node.module_path("app"), node.module_path("fresh")).unwrap();
    let line = node.wait_log_after(
        "function=fresh.*load failed|load failed.*function=fresh",
        mark,
    );
    assert!(line.contains("not served"), "{line}");
    // No guest answers it: the name's file failed to load.
    let fresh = node.get("/fresh");
    assert_eq!(fresh.status, 503, "{fresh:?}");
    assert_eq!(fresh.json()["error"], "load-failed");
    // The secret appears, the files stay the same: a touch loads it.
    let late = node.dir.path().join("late-secret");
    node.write_settings(
        "fresh",
        &format!("[secrets]\nGONE = {{ file = \"{}\" }}\n", late.display()),
    );
    node.wait_log(r"secret GONE: cannot read.*late-secret|late-secret.*secret GONE");
    std::fs::write(&late, "now").unwrap();
    let settings = node.modules_dir().join("fresh.toml");
    let file = std::fs::File::options()
        .append(true)
        .open(&settings)
        .unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    drop(file);
    eventually("fresh served after the touch", || {
        let reply = node.get("/fresh?key=GONE");
        (reply.status == 200 && reply.json()["get"] == "now").then_some(())
    });

    // Once the settings are good again, the new values serve.
    node.write_settings("app", "[env]\nVERSION = \"3\"\n");
    eventually("the fixed settings", || {
        (report(&node, "app", "VERSION")["get"] == "3").then_some(())
    });
}

#[test]
fn changing_env_or_a_secret_takes_effect_without_a_new_module() {
    let dir = prepare(&[("app", "configtest")]);
    let secret_path = dir.path().join("token");
    std::fs::write(&secret_path, "first").unwrap();
    let settings = |greeting: &str| {
        format!(
            "[env]\nGREETING = \"{greeting}\"\n[secrets]\nTOKEN = {{ file = \"{}\" }}\n",
            secret_path.display()
        )
    };
    write_settings(&dir, "app", &settings("one"));
    let node = Node::spawn(dir, Vec::new(), None);
    let first = report(&node, "app", "TOKEN");
    assert_eq!(first["env_var"], Value::Null);
    assert_eq!(first["get"], "first");
    assert_eq!(first["env"]["GREETING"], "one");
    let sha256 =
        |node: &Node| node.admin_get("/functions", &[]).json()["functions"][0]["sha256"].clone();
    let module = sha256(&node);

    // The secret file is read when the settings are applied: a new value
    // arrives with the next change to NAME.toml.
    std::fs::write(&secret_path, "second").unwrap();
    node.write_settings("app", &settings("two"));
    eventually("the new settings", || {
        let now = report(&node, "app", "TOKEN");
        (now["env"]["GREETING"] == "two").then_some(())
    });
    let now = report(&node, "app", "TOKEN");
    assert_eq!(now["get"], "second");
    // Same code, new settings: a settings event, not a reload.
    assert_eq!(sha256(&node), module);
    let events = node.admin_get("/events?limit=10", &[]).json()["events"].clone();
    assert_eq!(events[0]["kind"], "settings", "{events}");
}
