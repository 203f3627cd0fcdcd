//! Names whose latest files failed to load and that serve no earlier
//! version: the deployer's memory of each failure (so an unchanged bad
//! file is not retried and re-logged on every event), and what the public
//! listener answers for such a name (503 `load-failed`, not a 404 that
//! says nothing was ever there).

use std::collections::HashMap;
use std::sync::Mutex;

/// One name's last failed load.
#[derive(Debug, Clone)]
struct Failure {
    /// Module and settings hashes (`sha256+settings`) of the files that
    /// failed, when they could be read.
    identity: Option<String>,
}

/// Failed loads by function name; shared by the deployer and the listener.
#[derive(Debug, Default)]
pub struct LoadFailures {
    by_name: Mutex<HashMap<String, Failure>>,
}

impl LoadFailures {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failure>> {
        self.by_name.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `name`'s files (`identity`, if they could be read) failed to load.
    pub fn record(&self, name: &str, identity: Option<String>) {
        self.map().insert(name.to_owned(), Failure { identity });
    }

    /// `name` loaded, was removed, or is back to what serves; whether a
    /// failure stood.
    pub fn clear(&self, name: &str) -> bool {
        self.map().remove(name).is_some()
    }

    /// Whether exactly these files already failed for `name`.
    pub fn already_failed(&self, name: &str, identity: &str) -> bool {
        self.map()
            .get(name)
            .is_some_and(|f| f.identity.as_deref() == Some(identity))
    }

    /// Whether `name`'s latest files failed to load.
    pub fn contains(&self, name: &str) -> bool {
        self.map().contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_remembered_by_identity_until_cleared() {
        let failures = LoadFailures::default();
        assert!(!failures.contains("a"));
        failures.record("a", Some("h1".into()));
        assert!(failures.contains("a"));
        assert!(failures.already_failed("a", "h1"));
        assert!(!failures.already_failed("a", "h2"));
        failures.record("b", None);
        assert!(failures.contains("b"));
        assert!(!failures.already_failed("b", "h1"));
        failures.clear("a");
        assert!(!failures.contains("a"));
    }
}
