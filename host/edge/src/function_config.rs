//! Per-function settings: the optional `modules/NAME.toml` beside
//! `NAME.wasm`.
//!
//! ```toml
//! [kv]
//! stores = ["sessions"]              # shared stores this function may open
//! replicated = ["default", "sessions"] # which of its stores replicate
//! max-value-bytes = 65536            # tighter than the host's limit
//!
//! [http]
//! allowed-hosts = ["api.example.com", "*.example.org:443"]
//!
//! [limits]                           # each may only be lower than the host's
//! timeout-ms = 5000
//! max-memory-bytes = 33554432
//! ```

//!
//! Each capability parses and checks its own section (`outpost_caps`);
//! this file only puts them together.

use crate::limits::LimitsSection;
use outpost_caps::kv::{KvSection, KvSettingsError};
use outpost_caps::outbound::{BadHost, HostPattern, HttpSection};
use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
/// A function's settings file, parsed and checked.
pub struct FunctionConfig {
    #[serde(default)]
    pub kv: KvSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub limits: LimitsSection,
}

/// Why a function's settings were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FunctionConfigError {
    /// Not TOML, or a key that does not exist.
    #[error("invalid settings file: {0}")]
    Parse(String),
    /// `[kv]` refused.
    #[error(transparent)]
    Kv(#[from] KvSettingsError),
    /// `[http]` refused.
    #[error(transparent)]
    Http(#[from] BadHost),
}

impl FunctionConfig {
    /// Parses and checks a settings file's text.
    pub fn parse(text: &str) -> Result<Self, FunctionConfigError> {
        let config: Self =
            toml::from_str(text).map_err(|e| FunctionConfigError::Parse(e.to_string()))?;
        // The order of the checks decides which error a file with several
        // faults reports: grants, then hosts, then caps.
        config.kv.validate_grants()?;
        config.http.validate()?;
        config.kv.validate_caps()?;
        Ok(config)
    }

    /// The parsed `[http] allowed-hosts` (validated by [`Self::parse`]).
    pub fn allowed_hosts(&self) -> Vec<HostPattern> {
        self.http.allowed_hosts()
    }
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
            Err(FunctionConfigError::Kv(KvSettingsError::BadStoreName(
                "default".into()
            )))
        );
        assert_eq!(
            FunctionConfig::parse("[kv]\nstores = [\"@x\"]"),
            Err(FunctionConfigError::Kv(KvSettingsError::BadStoreName(
                "@x".into()
            )))
        );
        assert_eq!(
            FunctionConfig::parse("[kv]\nreplicated = [\"other\"]"),
            Err(FunctionConfigError::Kv(KvSettingsError::NotGranted(
                "other".into()
            )))
        );
        assert!(matches!(
            FunctionConfig::parse("[kv]\nmax-value-bytes = 99999999999"),
            Err(FunctionConfigError::Kv(KvSettingsError::OverCap { .. }))
        ));
        assert!(matches!(
            FunctionConfig::parse("[http]\nallowed-hosts = [\"http://x\"]"),
            Err(FunctionConfigError::Http(_))
        ));
        assert!(matches!(
            FunctionConfig::parse("[limits]\ntimeout = 5"),
            Err(FunctionConfigError::Parse(_))
        ));
    }
}

/// Fuzzing of the settings parser (proptest as the fuzzer, so it runs
/// bounded in the normal test suite).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = FunctionConfig::parse(&text);
        }

        #[test]
        fn toml_shaped_text_never_panics(
            lines in prop::collection::vec(
                prop_oneof![
                    Just("[kv]".to_string()),
                    Just("[http]".to_string()),
                    Just("[limits]".to_string()),
                    "[a-z-]{1,20} = [0-9]{1,25}",
                    "[a-z-]{1,20} = \"[^\"\\\\]{0,20}\"",
                    "[a-z-]{1,20} = \\[(\"[a-z0-9*.:@-]{0,12}\", ?){0,3}\\]",
                ],
                0..12,
            )
        ) {
            let text = lines.join("\n");
            if let Ok(config) = FunctionConfig::parse(&text) {
                // Whatever parses is valid by construction.
                for store in &config.kv.stores {
                    prop_assert!(outpost_wire::names::is_shared_store_name(store));
                }
                prop_assert_eq!(config.allowed_hosts().len(), config.http.allowed_hosts.len());
            }
        }

        #[test]
        fn valid_settings_round_trip(
            stores in prop::collection::btree_set("[a-z][a-z0-9_-]{0,10}", 0..4),
            replicate_default in any::<bool>(),
            max_value in prop::option::of(1usize..outpost_caps::kv::MAX_VALUE_BYTES_CAP),
        ) {
            let stores: Vec<_> = stores.into_iter().filter(|s| s != "default").collect();
            let mut replicated: Vec<String> = stores.iter().take(1).cloned().collect();
            if replicate_default {
                replicated.push("default".into());
            }
            let quote = |v: &[String]| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
            let mut text = format!("[kv]\nstores = [{}]\nreplicated = [{}]\n", quote(&stores), quote(&replicated));
            if let Some(max) = max_value {
                text.push_str(&format!("max-value-bytes = {max}\n"));
            }
            let config = FunctionConfig::parse(&text).unwrap();
            prop_assert_eq!(config.kv.stores, stores);
            prop_assert_eq!(config.kv.replicated, replicated);
            prop_assert_eq!(config.kv.max_value_bytes, max_value);
        }
    }
}
