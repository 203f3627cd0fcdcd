//! The kv capability's settings: the host's limits (`[kv]` in
//! `outpost.toml`) and a function's `[kv]` section in `NAME.toml`.

use super::mode::{Mode, StoreWrite};
use outpost_wire::names::is_shared_store_name;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Highest value limit a config may set: a record of this size, base64 in
/// JSON, still fits the cloud's batch limit alone.
pub const MAX_VALUE_BYTES_CAP: usize = 16 * 1024 * 1024;

/// Highest key limit a config may set.
pub const MAX_KEY_BYTES_CAP: usize = 64 * 1024;

/// Size limits on keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KvLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value (and queue payload), in bytes.
    pub max_value_bytes: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 512,
            max_value_bytes: 1024 * 1024,
        }
    }
}

/// `[kv]` in a function's `NAME.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KvSection {
    /// Shared stores granted to the function, by name.
    #[serde(default)]
    pub stores: Vec<String>,
    /// Stores that replicate: `"default"` and/or names from `stores`.
    #[serde(default)]
    pub replicated: Vec<String>,
    /// The function's key limit, instead of the host's.
    pub max_key_bytes: Option<usize>,
    /// The function's value limit, instead of the host's.
    pub max_value_bytes: Option<usize>,
    /// Write modes by store (`"default"` or a name from `stores`):
    /// `[kv.write.NAME]`; a store not listed takes the host's, else
    /// `local`.
    #[serde(default)]
    pub write: BTreeMap<String, StoreWrite>,
    /// Add `x-outpost-replication-lag-ms` (how far behind the cloud's feed
    /// the node may be) to every response of this function.
    #[serde(default)]
    pub lag_header: bool,
}

/// Why a `[kv]` section was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KvSettingsError {
    /// A granted store name that breaks the store-name rule.
    #[error("store name {0:?} is not valid (use [a-z0-9][a-z0-9_-]*, and not \"default\")")]
    BadStoreName(String),
    /// A replicated store the function was not granted.
    #[error("replicated store {0:?} is neither \"default\" nor listed in [kv] stores")]
    NotGranted(String),
    /// A write mode for a store the function was not granted.
    #[error("[kv.write.{0}]: {0:?} is neither \"default\" nor listed in [kv] stores")]
    WriteNotGranted(String),
    /// `forward` on a store the function does not replicate.
    #[error(
        "[kv.write.{0}] mode = \"forward\" needs the store in [kv] replicated (a local store has no cloud to forward to)"
    )]
    ForwardNotReplicated(String),
    /// A write setting out of range.
    #[error("[kv.write.{store}] {reason}")]
    BadWrite {
        /// The store.
        store: String,
        /// What is wrong.
        reason: String,
    },
    /// A function's limit above the host's: a function may only lower them.
    #[error("[kv] {key} = {value} is above the host's limit of {host}")]
    AboveHost {
        /// The setting.
        key: &'static str,
        /// What the function asked for.
        value: usize,
        /// The host's limit.
        host: usize,
    },
    /// A limit above what the system can carry.
    #[error("{key} = {value} is over the cap of {cap}")]
    OverCap {
        /// The setting.
        key: &'static str,
        /// What it asked for.
        value: usize,
        /// The most it may be.
        cap: usize,
    },
}

impl KvSection {
    /// Checks names, grants and caps.
    pub fn validate(&self) -> Result<(), KvSettingsError> {
        self.validate_grants()?;
        self.validate_caps()
    }

    /// Checks store names and that every replicated store is granted.
    pub fn validate_grants(&self) -> Result<(), KvSettingsError> {
        for store in &self.stores {
            if !is_shared_store_name(store) {
                return Err(KvSettingsError::BadStoreName(store.clone()));
            }
        }
        for store in &self.replicated {
            if store != "default" && !self.stores.contains(store) {
                return Err(KvSettingsError::NotGranted(store.clone()));
            }
        }
        for (store, write) in &self.write {
            if store != "default" && !self.stores.contains(store) {
                return Err(KvSettingsError::WriteNotGranted(store.clone()));
            }
            if write.mode == Mode::Forward && !self.replicated.contains(store) {
                return Err(KvSettingsError::ForwardNotReplicated(store.clone()));
            }
            write
                .validate()
                .map_err(|reason| KvSettingsError::BadWrite {
                    store: store.clone(),
                    reason,
                })?;
        }
        Ok(())
    }

    /// Checks the limits against what the system can carry.
    pub fn validate_caps(&self) -> Result<(), KvSettingsError> {
        check_cap("max-value-bytes", self.max_value_bytes, MAX_VALUE_BYTES_CAP)?;
        check_cap("max-key-bytes", self.max_key_bytes, MAX_KEY_BYTES_CAP)
    }
}

impl KvSection {
    /// The function's limits: its own where it sets them (only ever lower
    /// than the host's), else the host's.
    pub fn limits(&self, host: KvLimits) -> Result<KvLimits, KvSettingsError> {
        let narrow = |key, own: Option<usize>, host: usize| match own {
            Some(value) if value > host => Err(KvSettingsError::AboveHost { key, value, host }),
            Some(value) => Ok(value),
            None => Ok(host),
        };
        Ok(KvLimits {
            max_key_bytes: narrow("max-key-bytes", self.max_key_bytes, host.max_key_bytes)?,
            max_value_bytes: narrow(
                "max-value-bytes",
                self.max_value_bytes,
                host.max_value_bytes,
            )?,
        })
    }
}

/// Refuses a limit above what the system can carry.
pub fn check_cap(
    key: &'static str,
    value: Option<usize>,
    cap: usize,
) -> Result<(), KvSettingsError> {
    match value {
        Some(value) if value > cap => Err(KvSettingsError::OverCap { key, value, cap }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(stores: &[&str], replicated: &[&str]) -> KvSection {
        KvSection {
            stores: stores.iter().map(|s| s.to_string()).collect(),
            replicated: replicated.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_function_may_only_lower_the_hosts_limits() {
        let host = KvLimits::default();
        let lower = KvSection {
            max_value_bytes: Some(10),
            ..Default::default()
        };
        assert_eq!(lower.limits(host).unwrap().max_value_bytes, 10);
        assert_eq!(
            lower.limits(host).unwrap().max_key_bytes,
            host.max_key_bytes
        );
        let higher = KvSection {
            max_key_bytes: Some(host.max_key_bytes + 1),
            ..Default::default()
        };
        assert!(matches!(
            higher.limits(host),
            Err(KvSettingsError::AboveHost {
                key: "max-key-bytes",
                ..
            })
        ));
    }

    #[test]
    fn write_modes_need_a_granted_replicated_store() {
        let parse = |s: &str| toml::from_str::<KvSection>(s).unwrap().validate();
        assert_eq!(
            parse("stores = [\"b\"]\nreplicated = [\"b\"]\n[write.b]\nmode = \"forward\""),
            Ok(())
        );
        assert_eq!(
            parse(
                "replicated = [\"default\"]\n[write.default]\nmode = \"forward\"\nfallback = \"queue\""
            ),
            Ok(())
        );
        assert_eq!(
            parse("[write.default]\nmode = \"forward\""),
            Err(KvSettingsError::ForwardNotReplicated("default".into()))
        );
        assert_eq!(
            parse("[write.other]\nmode = \"local\""),
            Err(KvSettingsError::WriteNotGranted("other".into()))
        );
        assert!(matches!(
            parse(
                "replicated = [\"default\"]\n[write.default]\nmode = \"forward\"\ntimeout-ms = 0"
            ),
            Err(KvSettingsError::BadWrite { .. })
        ));
    }

    #[test]
    fn grants_and_replication_are_checked() {
        assert_eq!(section(&["s"], &["default", "s"]).validate(), Ok(()));
        assert_eq!(
            section(&["default"], &[]).validate(),
            Err(KvSettingsError::BadStoreName("default".into()))
        );
        assert_eq!(
            section(&[], &["other"]).validate(),
            Err(KvSettingsError::NotGranted("other".into()))
        );
        let over = KvSection {
            max_value_bytes: Some(MAX_VALUE_BYTES_CAP + 1),
            ..Default::default()
        };
        assert!(matches!(
            over.validate(),
            Err(KvSettingsError::OverCap {
                key: "max-value-bytes",
                ..
            })
        ));
    }
}
