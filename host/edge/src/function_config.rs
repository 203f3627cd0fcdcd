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
//!
//! [env]                              # environment + wasi:config/store
//! GREETING = "hello"
//!
//! [secrets]                          # wasi:config/store only, read on the host
//! API_TOKEN = { env = "ORDERS_API_TOKEN" }
//! DB_PASSWORD = { file = "/run/secrets/db" }
//! ```

//!
//! Each capability parses and checks its own section (`outpost_caps`);
//! this file only puts them together.

use crate::function_env::{EnvSection, EnvSettingsError, SecretsSection};
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
    /// `[env]`: the guest's environment variables.
    #[serde(default)]
    pub env: EnvSection,
    /// `[secrets]`: where on the host each secret is read from (never a
    /// value: those are read by the loader, see [`crate::function_env`]).
    #[serde(default)]
    pub secrets: SecretsSection,
    /// `[cache]`: whether the node's HTTP cache answers for it.
    #[serde(default)]
    pub cache: CacheSection,
}

/// `[cache]` in a function's `NAME.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheSection {
    /// Whether the node's cache answers for this function (default true;
    /// a function's responses are stored only when they say they may be).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether entries made by a previous version keep serving after a
    /// deploy (default false: a new version starts with an empty cache).
    #[serde(default)]
    pub keep_on_deploy: bool,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            enabled: true,
            keep_on_deploy: false,
        }
    }
}

fn yes() -> bool {
    true
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
    /// `[env]` or `[secrets]` refused.
    #[error(transparent)]
    Env(#[from] EnvSettingsError),
}

impl FunctionConfig {
    /// Parses and checks a settings file's text.
    pub fn parse(text: &str) -> Result<Self, FunctionConfigError> {
        let config: Self =
            toml::from_str(text).map_err(|e| FunctionConfigError::Parse(e.to_string()))?;
        // The order of the checks decides which error a file with several
        // faults reports: grants, then hosts, then caps, then env.
        config.kv.validate_grants()?;
        config.http.validate()?;
        config.kv.validate_caps()?;
        config.env.validate()?;
        config.secrets.validate(&config.env)?;
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
    use crate::function_env::SecretSource;

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
    fn parses_env_and_secrets() {
        let config = FunctionConfig::parse(
            "[env]\nGREETING = \"hello\"\n\"lower.case\" = \"\"\n\n[secrets]\nTOKEN = { env = \"HOST_TOKEN\" }\nDB = { file = \"/run/secrets/db\" }\n",
        )
        .unwrap();
        assert_eq!(config.env.0["GREETING"], "hello");
        assert_eq!(config.env.0["lower.case"], "");
        assert_eq!(
            config.secrets.0["TOKEN"],
            SecretSource {
                env: Some("HOST_TOKEN".into()),
                file: None
            }
        );
        assert_eq!(
            config.secrets.0["DB"].file.as_deref(),
            Some(std::path::Path::new("/run/secrets/db"))
        );
    }

    #[test]
    fn refuses_bad_env_and_secrets() {
        let refused = |text: &str| FunctionConfig::parse(text).unwrap_err();
        // Values are strings; sources are tables with known keys.
        assert!(matches!(
            refused("[env]\nPORT = 8080"),
            FunctionConfigError::Parse(_)
        ));
        assert!(matches!(
            refused("[secrets]\nT = \"literal\""),
            FunctionConfigError::Parse(_)
        ));
        assert!(matches!(
            refused("[secrets]\nT = { vault = \"x\" }"),
            FunctionConfigError::Parse(_)
        ));
        assert_eq!(
            refused("[env]\n\"A=B\" = \"x\""),
            FunctionConfigError::Env(EnvSettingsError::BadName {
                section: "env",
                name: "A=B".into()
            })
        );
        assert!(matches!(
            refused("[secrets]\nT = { file = \"relative\" }"),
            FunctionConfigError::Env(EnvSettingsError::BadSource { .. })
        ));
        assert!(matches!(
            refused("[secrets]\nT = { env = \"A\", file = \"/a\" }"),
            FunctionConfigError::Env(EnvSettingsError::BadSource { .. })
        ));
        assert!(matches!(
            refused("[secrets]\nT = {}"),
            FunctionConfigError::Env(EnvSettingsError::BadSource { .. })
        ));
        assert_eq!(
            refused("[env]\nT = \"x\"\n[secrets]\nT = { env = \"A\" }"),
            FunctionConfigError::Env(EnvSettingsError::Duplicate { name: "T".into() })
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
                    Just("[env]".to_string()),
                    Just("[secrets]".to_string()),
                    "[A-Za-z_=-]{0,8} = \\{ (env|file) = \"[A-Za-z_/=]{0,12}\" \\}",
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
                for name in config.env.0.keys().chain(config.secrets.0.keys()) {
                    prop_assert!(!name.is_empty() && !name.contains('='));
                }
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
