//! A minimal W3C WebDriver client over ureq: just what the dashboard test
//! needs (a session, navigation, script execution, element lookup). Chosen
//! over a full client crate, whose TLS stack made the test build pull in a
//! second crypto provider and dozens of crates for a loopback-only job.

use serde_json::{Value, json};

/// One browser session; deleted (browser closed) on drop.
pub struct Session {
    base: String,
    agent: ureq::Agent,
}

fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let request = agent.request(method, url);
    let response = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let answer: Value = match response {
        Ok(r) => r.into_json().map_err(|e| e.to_string())?,
        Err(ureq::Error::Status(code, r)) => {
            let body = r.into_string().unwrap_or_default();
            return Err(format!("{method} {url}: {code} {body}"));
        }
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    Ok(answer["value"].clone())
}

impl Session {
    /// Opens a session on the WebDriver server at `driver` (e.g.
    /// chromedriver's `http://127.0.0.1:PORT`).
    pub fn new(driver: &str, capabilities: Value) -> Session {
        let agent = ureq::AgentBuilder::new()
            .timeout(crate::harness::WAIT)
            .build();
        let created = call(
            &agent,
            "POST",
            &format!("{driver}/session"),
            Some(json!({ "capabilities": { "alwaysMatch": capabilities } })),
        )
        .expect("a WebDriver session");
        let id = created["sessionId"].as_str().expect("a session id");
        Session {
            base: format!("{driver}/session/{id}"),
            agent,
        }
    }

    pub fn goto(&self, url: &str) {
        call(
            &self.agent,
            "POST",
            &format!("{}/url", self.base),
            Some(json!({ "url": url })),
        )
        .expect("navigate");
    }

    /// Whether an element matches the CSS `selector`.
    pub fn has_element(&self, selector: &str) -> bool {
        let body = json!({ "using": "css selector", "value": selector });
        call(
            &self.agent,
            "POST",
            &format!("{}/element", self.base),
            Some(body),
        )
        .is_ok()
    }

    /// Runs `script` (a function body) in the page and returns its result.
    pub fn execute(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        call(
            &self.agent,
            "POST",
            &format!("{}/execute/sync", self.base),
            Some(body),
        )
        .expect("run a script in the page")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = call(&self.agent, "DELETE", &self.base, None);
    }
}
