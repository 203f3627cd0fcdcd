//! What one function version may do with KV, built once per version from
//! its `[kv]` settings and the host's limits.

use super::catalog::own_store_id;
use super::mode::StoreWrite;
use super::settings::{KvLimits, KvSection, KvSettingsError};
use crate::bindings::kv::Error;
use outpost_wire::names::is_shared_store_name;
use std::collections::{HashMap, HashSet};

/// What one function version may do with KV, from its settings.
#[derive(Debug, Clone)]
pub struct KvPolicy {
    /// Store id of the function's `default` store.
    pub own_store: String,
    /// Shared store names the function may open.
    pub grants: HashSet<String>,
    /// Store ids this function declares replicated.
    pub replicated: HashSet<String>,
    /// Key and value limits: the function's where it sets them (never above
    /// the host's), else the host's.
    pub limits: KvLimits,
    /// Write modes the function sets, by store id.
    pub writes: HashMap<String, StoreWrite>,
    /// Responses carry `x-outpost-replication-lag-ms`.
    pub lag_header: bool,
}

impl KvPolicy {
    /// The policy of function `function` under `section`; refused if the
    /// section raises a host limit.
    pub fn new(
        function: &str,
        section: &KvSection,
        host_limits: KvLimits,
    ) -> Result<Self, KvSettingsError> {
        let own_store = own_store_id(function);
        let id = |name: &String| {
            if name == "default" {
                own_store.clone()
            } else {
                name.clone()
            }
        };
        let replicated = section.replicated.iter().map(id).collect();
        let writes = section
            .write
            .iter()
            .map(|(name, write)| (id(name), *write))
            .collect();
        Ok(Self {
            grants: section.stores.iter().cloned().collect(),
            replicated,
            writes,
            lag_header: section.lag_header,
            limits: section.limits(host_limits)?,
            own_store,
        })
    }

    /// The store id `name` opens for this function.
    pub fn resolve(&self, name: &str) -> Result<String, Error> {
        if name == "default" {
            Ok(self.own_store.clone())
        } else if !is_shared_store_name(name) {
            Err(Error::NoSuchStore)
        } else if self.grants.contains(name) {
            Ok(name.to_owned())
        } else {
            Err(Error::AccessDenied)
        }
    }

    /// Whether `key` is a key this function may use.
    pub fn check_key(&self, key: &str) -> Result<(), Error> {
        if key.is_empty() || key.len() > self.limits.max_key_bytes {
            Err(Error::InvalidKey)
        } else {
            Ok(())
        }
    }

    /// Whether `value` is within this function's value limit.
    pub fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.limits.max_value_bytes {
            Err(Error::ValueTooLarge)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(stores: &[&str], replicated: &[&str]) -> KvPolicy {
        let section = KvSection {
            stores: stores.iter().map(|s| s.to_string()).collect(),
            replicated: replicated.iter().map(|s| s.to_string()).collect(),
            max_value_bytes: Some(10),
            ..Default::default()
        };
        KvPolicy::new("shop", &section, KvLimits::default()).unwrap()
    }

    #[test]
    fn default_is_the_functions_own_store_and_grants_open_shared_ones() {
        let p = policy(&["carts"], &[]);
        assert_eq!(p.resolve("default"), Ok("@shop".into()));
        assert_eq!(p.resolve("carts"), Ok("carts".into()));
        assert_eq!(p.resolve("sessions"), Err(Error::AccessDenied));
        // Another function's own store cannot even be named.
        assert_eq!(p.resolve("@other"), Err(Error::NoSuchStore));
        assert_eq!(p.resolve("Bad Name"), Err(Error::NoSuchStore));
    }

    #[test]
    fn replicated_default_means_the_own_store() {
        let p = policy(&["carts"], &["default", "carts"]);
        assert!(p.replicated.contains("@shop"));
        assert!(p.replicated.contains("carts"));
        assert!(!p.replicated.contains("default"));
    }

    #[test]
    fn the_functions_limits_replace_the_hosts() {
        let p = policy(&[], &[]);
        assert_eq!(p.limits.max_value_bytes, 10);
        assert_eq!(p.limits.max_key_bytes, KvLimits::default().max_key_bytes);
        assert_eq!(p.check_value(&[0; 10]), Ok(()));
        assert_eq!(p.check_value(&[0; 11]), Err(Error::ValueTooLarge));
        assert_eq!(p.check_key(""), Err(Error::InvalidKey));
        assert_eq!(p.check_key(&"k".repeat(513)), Err(Error::InvalidKey));
        assert_eq!(p.check_key("k"), Ok(()));
    }
}
