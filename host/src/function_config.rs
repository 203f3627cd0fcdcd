//! Per-function settings: the optional `modules/NAME.toml` beside
//! `NAME.wasm`.
//!
//! ```toml
//! [kv]
//! stores = ["sessions"]              # shared stores this function may open
//! replicated = ["default", "sessions"] # which of its stores replicate
//! max-value-bytes = 65536            # tighter than the host's limit
//! ```

use crate::names;
use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FunctionConfig {
    #[serde(default)]
    pub kv: KvSection,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KvSection {
    /// Shared stores granted to the function, by name.
    #[serde(default)]
    pub stores: Vec<String>,
    /// Stores that replicate: `"default"` and/or names from `stores`.
    #[serde(default)]
    pub replicated: Vec<String>,
    pub max_key_bytes: Option<usize>,
    pub max_value_bytes: Option<usize>,
}

/// Why a function's settings were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FunctionConfigError {
    #[error("invalid settings file: {0}")]
    Parse(String),
    #[error("store name {0:?} is not valid (use [a-z0-9][a-z0-9_-]*, and not \"default\")")]
    BadStoreName(String),
    #[error("replicated store {0:?} is neither \"default\" nor listed in [kv] stores")]
    NotGranted(String),
    #[error("{key} = {value} is over the cap of {cap}")]
    OverCap {
        key: &'static str,
        value: usize,
        cap: usize,
    },
}

impl FunctionConfig {
    pub fn parse(text: &str) -> Result<Self, FunctionConfigError> {
        let config: Self =
            toml::from_str(text).map_err(|e| FunctionConfigError::Parse(e.to_string()))?;
        for store in &config.kv.stores {
            if !is_shared_store_name(store) {
                return Err(FunctionConfigError::BadStoreName(store.clone()));
            }
        }
        for store in &config.kv.replicated {
            if store != "default" && !config.kv.stores.contains(store) {
                return Err(FunctionConfigError::NotGranted(store.clone()));
            }
        }
        check_cap(
            "max-value-bytes",
            config.kv.max_value_bytes,
            crate::kv::MAX_VALUE_BYTES_CAP,
        )?;
        check_cap(
            "max-key-bytes",
            config.kv.max_key_bytes,
            crate::kv::MAX_KEY_BYTES_CAP,
        )?;
        Ok(config)
    }
}

/// Refuses a limit above what the system can carry.
pub fn check_cap(
    key: &'static str,
    value: Option<usize>,
    cap: usize,
) -> Result<(), FunctionConfigError> {
    match value {
        Some(value) if value > cap => Err(FunctionConfigError::OverCap { key, value, cap }),
        _ => Ok(()),
    }
}

/// Shared store names follow the function-name rule; `default` is taken.
pub fn is_shared_store_name(name: &str) -> bool {
    name != "default" && names::is_valid(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grants_and_replication() {
        let config = FunctionConfig::parse(
            "[kv]\nstores = [\"sessions\"]\nreplicated = [\"default\", \"sessions\"]\nmax-value-bytes = 10\n",
        )
        .unwrap();
        assert_eq!(config.kv.stores, ["sessions"]);
        assert_eq!(config.kv.replicated, ["default", "sessions"]);
        assert_eq!(config.kv.max_value_bytes, Some(10));
        assert_eq!(
            FunctionConfig::parse("").unwrap(),
            FunctionConfig::default()
        );
    }

    #[test]
    fn refuses_bad_settings() {
        assert!(matches!(
            FunctionConfig::parse("[kv]\nstorez = []"),
            Err(FunctionConfigError::Parse(_))
        ));
        assert_eq!(
            FunctionConfig::parse("[kv]\nstores = [\"default\"]"),
            Err(FunctionConfigError::BadStoreName("default".into()))
        );
        assert_eq!(
            FunctionConfig::parse("[kv]\nstores = [\"@x\"]"),
            Err(FunctionConfigError::BadStoreName("@x".into()))
        );
        assert_eq!(
            FunctionConfig::parse("[kv]\nreplicated = [\"other\"]"),
            Err(FunctionConfigError::NotGranted("other".into()))
        );
        assert!(matches!(
            FunctionConfig::parse("[kv]\nmax-value-bytes = 99999999999"),
            Err(FunctionConfigError::OverCap { .. })
        ));
    }
}
