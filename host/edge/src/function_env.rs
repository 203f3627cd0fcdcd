//! A function's environment and config values: `[env]` and `[secrets]` in
//! `modules/NAME.toml`, the secrets read from the host when the settings
//! are applied, and the two WASI interfaces that show them to the guest
//! (`wasi:cli/environment` and `wasi:config/store`).
//!
//! ```toml
//! [env]                        # the guest's environment, and wasi:config
//! GREETING = "hello"
//!
//! [secrets]                    # wasi:config only, never the environment
//! API_TOKEN = { env = "API_TOKEN_FOR_ORDERS" }   # a host env var
//! DB_PASSWORD = { file = "/run/secrets/db" }     # a host file
//! ```
//!
//! Secrets stay out of the guest's environment because environments leak:
//! libraries dump them into error reports and debug output, and a guest
//! cannot read one variable without being handed all of them. A
//! `wasi:config/store.get` names the one value it wants.
//!
//! Secret values are never logged, never in an error message and never in
//! a `Debug` output: only their names are.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::p2::bindings::cli::environment;
use wasmtime_wasi_config::WasiConfigVariables;

/// Longest variable or secret name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest single value (an env value, a secret, a secret file), in bytes:
/// room for a PEM key or a certificate chain.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most `[env]` plus `[secrets]` entries one function may have.
pub const MAX_ENTRIES: usize = 256;
/// Most bytes of names and values together, `[env]` plus secrets: each
/// `get-environment` or `get-all` copies all of them into the guest.
pub const MAX_TOTAL_BYTES: usize = 256 * 1024;
/// Host environment variables a secret may not name: the host's own
/// settings, its cloud and admin tokens among them.
const HOST_SETTINGS_PREFIX: &str = "OUTPOST_";

/// `[env]`: variables the guest sees in its environment and through
/// `wasi:config/store`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct EnvSection(pub BTreeMap<String, String>);

/// `[secrets]`: values read on the host when the settings are applied,
/// shown to this function through `wasi:config/store` only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretsSection(pub BTreeMap<String, SecretSource>);

/// Where one secret's value comes from: exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A host environment variable, read from `outpost serve`'s own
    /// environment.
    pub env: Option<String>,
    /// An absolute path to a file on the host; one trailing newline is
    /// dropped (`echo value > file` writes one).
    pub file: Option<PathBuf>,
}

/// Why `[env]` or `[secrets]` was refused, before anything is read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvSettingsError {
    /// Empty, too long, or with `=` or NUL: not a name an environment can hold.
    #[error(
        "[{section}] name {name:?} is not valid: 1 to {MAX_NAME_BYTES} bytes, without `=` or NUL"
    )]
    BadName { section: &'static str, name: String },
    /// An `[env]` value holds NUL, which no environment can carry.
    #[error("[env] {name}: the value holds a NUL byte")]
    ValueHasNul { name: String },
    /// An `[env]` value is over [`MAX_VALUE_BYTES`].
    #[error("[env] {name}: the value is {bytes} bytes, over the limit of {MAX_VALUE_BYTES}")]
    ValueTooLong { name: String, bytes: usize },
    /// More than [`MAX_ENTRIES`] variables and secrets.
    #[error("{count} [env] and [secrets] entries, over the limit of {MAX_ENTRIES}")]
    TooMany { count: usize },
    /// `[env]` names and values over [`MAX_TOTAL_BYTES`].
    #[error("[env] holds {bytes} bytes, over the limit of {MAX_TOTAL_BYTES}")]
    TooLarge { bytes: usize },
    /// A name in both `[env]` and `[secrets]`: `wasi:config/store` would
    /// have two values for it.
    #[error("{name:?} is in both [env] and [secrets]")]
    Duplicate { name: String },
    /// Not exactly one of `env` and `file`, a relative path, or a host
    /// variable a secret may not name.
    #[error("[secrets] {name}: {reason}")]
    BadSource { name: String, reason: &'static str },
}

/// Why a secret could not be read when the settings were applied. The
/// message names the secret and where it was looked for, never a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Neither `env` nor `file` (settings that skipped validation).
    #[error("secret {name}: no `env` or `file` to read it from")]
    NoSource { name: String },
    /// The host environment variable is not set.
    #[error("secret {name}: the host environment variable {var} is not set")]
    EnvUnset { name: String, var: String },
    /// The host environment variable is not UTF-8.
    #[error("secret {name}: the host environment variable {var} is not UTF-8")]
    EnvNotUnicode { name: String, var: String },
    /// The file cannot be opened or read.
    #[error("secret {name}: cannot read {}: {error}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        error: String,
    },
    /// The file is not UTF-8 (`wasi:config` values are strings).
    #[error("secret {name}: {} is not UTF-8", path.display())]
    NotUtf8 { name: String, path: PathBuf },
    /// The value holds NUL.
    #[error("secret {name}: the value holds a NUL byte")]
    HasNul { name: String },
    /// The value is over [`MAX_VALUE_BYTES`].
    #[error("secret {name}: the value is over the limit of {MAX_VALUE_BYTES} bytes")]
    TooLong { name: String },
    /// `[env]` and the secrets together are over [`MAX_TOTAL_BYTES`].
    #[error("[env] and [secrets] hold {bytes} bytes, over the limit of {MAX_TOTAL_BYTES}")]
    TooLarge { bytes: usize },
}

/// Whether `name` can be an environment variable's (or a secret's) name.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.contains(['=', '\0'])
}

impl EnvSection {
    /// Checks names and values; run by [`crate::function_config`].
    pub fn validate(&self) -> Result<(), EnvSettingsError> {
        let mut total = 0;
        for (name, value) in &self.0 {
            if !valid_name(name) {
                return Err(EnvSettingsError::BadName {
                    section: "env",
                    name: name.clone(),
                });
            }
            if value.contains('\0') {
                return Err(EnvSettingsError::ValueHasNul { name: name.clone() });
            }
            if value.len() > MAX_VALUE_BYTES {
                return Err(EnvSettingsError::ValueTooLong {
                    name: name.clone(),
                    bytes: value.len(),
                });
            }
            total += name.len() + value.len();
        }
        if total > MAX_TOTAL_BYTES {
            return Err(EnvSettingsError::TooLarge { bytes: total });
        }
        Ok(())
    }
}

impl SecretsSection {
    /// Checks names and sources (nothing is read yet), and that no name is
    /// also in `env`.
    pub fn validate(&self, env: &EnvSection) -> Result<(), EnvSettingsError> {
        let count = self.0.len() + env.0.len();
        if count > MAX_ENTRIES {
            return Err(EnvSettingsError::TooMany { count });
        }
        for (name, source) in &self.0 {
            if !valid_name(name) {
                return Err(EnvSettingsError::BadName {
                    section: "secrets",
                    name: name.clone(),
                });
            }
            if env.0.contains_key(name) {
                return Err(EnvSettingsError::Duplicate { name: name.clone() });
            }
            let bad = |reason| EnvSettingsError::BadSource {
                name: name.clone(),
                reason,
            };
            match (&source.env, &source.file) {
                (Some(var), None) => {
                    if !valid_name(var) {
                        return Err(bad("`env` is not a valid variable name"));
                    }
                    if var.starts_with(HOST_SETTINGS_PREFIX) {
                        return Err(bad(
                            "`env` may not name an OUTPOST_* variable: those are the host's own settings",
                        ));
                    }
                }
                (None, Some(path)) => {
                    if !path.is_absolute() {
                        return Err(bad("`file` must be an absolute path"));
                    }
                }
                _ => return Err(bad("give exactly one of `env` and `file`")),
            }
        }
        Ok(())
    }
}

/// What one function version sees: its `[env]` as its environment, and
/// `[env]` plus its secrets through `wasi:config/store`. Built once per
/// settings change and shared by every request of the version.
#[derive(Default)]
pub struct FunctionEnv {
    /// `[env]` in name order: what `get-environment` returns.
    environment: Vec<(String, String)>,
    /// `[env]` and the secrets' values.
    config: WasiConfigVariables,
    /// For `Debug` and diagnostics: never the values.
    secret_names: Vec<String>,
}

impl fmt::Debug for FunctionEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: a policy may be printed, and secrets must not be.
        f.debug_struct("FunctionEnv")
            .field(
                "env",
                &self.environment.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("secrets", &self.secret_names)
            .finish()
    }
}

impl FunctionEnv {
    /// Reads the secrets from the host process's environment and files.
    /// `env` and `secrets` must have been validated (by
    /// [`crate::function_config::FunctionConfig::parse`]).
    pub fn resolve(env: &EnvSection, secrets: &SecretsSection) -> Result<Self, SecretError> {
        Self::resolve_with(env, secrets, |var| std::env::var_os(var))
    }

    /// [`Self::resolve`] with `host_env` for the host's environment, so
    /// tests need not change the test process's own.
    fn resolve_with(
        env: &EnvSection,
        secrets: &SecretsSection,
        host_env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, SecretError> {
        let environment: Vec<(String, String)> =
            env.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut total: usize = environment.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut config: WasiConfigVariables = environment.iter().cloned().collect();
        for (name, source) in &secrets.0 {
            let value = match (&source.env, &source.file) {
                (Some(var), _) => match host_env(var) {
                    None => {
                        return Err(SecretError::EnvUnset {
                            name: name.clone(),
                            var: var.clone(),
                        });
                    }
                    Some(value) => value
                        .into_string()
                        .map_err(|_| SecretError::EnvNotUnicode {
                            name: name.clone(),
                            var: var.clone(),
                        })?,
                },
                (None, Some(path)) => read_secret_file(name, path)?,
                (None, None) => return Err(SecretError::NoSource { name: name.clone() }),
            };
            if value.contains('\0') {
                return Err(SecretError::HasNul { name: name.clone() });
            }
            if value.len() > MAX_VALUE_BYTES {
                return Err(SecretError::TooLong { name: name.clone() });
            }
            total += name.len() + value.len();
            config.insert(name.clone(), value);
        }
        if total > MAX_TOTAL_BYTES {
            return Err(SecretError::TooLarge { bytes: total });
        }
        Ok(Self {
            environment,
            config,
            secret_names: secrets.0.keys().cloned().collect(),
        })
    }

    /// The `[env]` names, in order.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.environment.iter().map(|(k, _)| k.as_str())
    }

    /// The secrets' names, in order (never their values).
    pub fn secret_names(&self) -> &[String] {
        &self.secret_names
    }

    /// What `wasi:config/store` answers from.
    pub fn config(&self) -> &WasiConfigVariables {
        &self.config
    }
}

/// Reads a secret file, at most one byte over the cap (a huge file costs
/// nothing), dropping one trailing newline.
fn read_secret_file(name: &str, path: &Path) -> Result<String, SecretError> {
    let read_error = |e: std::io::Error| SecretError::Read {
        name: name.to_owned(),
        path: path.to_owned(),
        error: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_VALUE_BYTES as u64 + 2)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(SecretError::TooLong {
            name: name.to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 {
        name: name.to_owned(),
        path: path.to_owned(),
    })
}

/// The host side of `wasi:cli/environment` for one request: the
/// function's `[env]`, no arguments, no working directory.
pub struct EnvView<'a>(pub &'a FunctionEnv);

impl environment::Host for EnvView<'_> {
    fn get_environment(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        // Copied only when the guest asks (Rust's std asks on the first
        // `env::var`), not for every request.
        Ok(self.0.environment.clone())
    }

    fn get_arguments(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn initial_cwd(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
}

struct HasEnv;

impl HasData for HasEnv {
    type Data<'a> = EnvView<'a>;
}

/// Replaces the `wasi:cli/environment` that `wasmtime_wasi` linked (it
/// would copy the whole environment into every request's `WasiCtx`) with
/// one that reads the version's shared [`FunctionEnv`].
pub fn add_environment_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> EnvView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = environment::add_to_linker::<T, HasEnv>(linker, view);
    linker.allow_shadowing(false);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvSection {
        EnvSection(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn secret_env(var: &str) -> SecretSource {
        SecretSource {
            env: Some(var.into()),
            file: None,
        }
    }

    fn secret_file(path: &Path) -> SecretSource {
        SecretSource {
            env: None,
            file: Some(path.into()),
        }
    }

    fn secrets(pairs: Vec<(&str, SecretSource)>) -> SecretsSection {
        SecretsSection(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    #[test]
    fn names_and_values_are_checked() {
        assert_eq!(env(&[("GREETING", "hi"), ("EMPTY", "")]).validate(), Ok(()));
        for bad in ["", "A=B", "A\0B", &"N".repeat(MAX_NAME_BYTES + 1)] {
            assert_eq!(
                env(&[(bad, "x")]).validate(),
                Err(EnvSettingsError::BadName {
                    section: "env",
                    name: bad.into()
                })
            );
        }
        assert_eq!(
            env(&[(&"N".repeat(MAX_NAME_BYTES), "x")]).validate(),
            Ok(())
        );
        assert_eq!(
            env(&[("A", "x\0y")]).validate(),
            Err(EnvSettingsError::ValueHasNul { name: "A".into() })
        );
        let long = "v".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(
            env(&[("A", &long)]).validate(),
            Err(EnvSettingsError::ValueTooLong {
                name: "A".into(),
                bytes: MAX_VALUE_BYTES + 1
            })
        );
        let max = "v".repeat(MAX_VALUE_BYTES);
        assert_eq!(env(&[("A", &max)]).validate(), Ok(()));
        let names: Vec<String> = (0..5).map(|i| format!("V{i}")).collect();
        let big: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), max.as_str())).collect();
        assert!(matches!(
            env(&big).validate(),
            Err(EnvSettingsError::TooLarge { .. })
        ));
    }

    #[test]
    fn secret_sources_are_checked() {
        let none = EnvSection::default();
        assert_eq!(
            secrets(vec![("TOKEN", secret_env("MY_TOKEN"))]).validate(&none),
            Ok(())
        );
        let bad_source = |name: &str, source| secrets(vec![(name, source)]).validate(&none);
        for source in [
            SecretSource::default(),
            SecretSource {
                env: Some("A".into()),
                file: Some("/a".into()),
            },
            secret_env("A=B"),
            secret_env(""),
            secret_env("OUTPOST_CLOUD_TOKEN"),
            secret_file(Path::new("relative/path")),
        ] {
            assert!(
                matches!(
                    bad_source("S", source.clone()),
                    Err(EnvSettingsError::BadSource { .. })
                ),
                "{source:?}"
            );
        }
        assert_eq!(
            bad_source("", secret_env("A")),
            Err(EnvSettingsError::BadName {
                section: "secrets",
                name: "".into()
            })
        );
        assert_eq!(
            secrets(vec![("GREETING", secret_env("A"))]).validate(&env(&[("GREETING", "hi")])),
            Err(EnvSettingsError::Duplicate {
                name: "GREETING".into()
            })
        );
        let many: Vec<String> = (0..MAX_ENTRIES).map(|i| format!("S{i}")).collect();
        let many = secrets(many.iter().map(|n| (n.as_str(), secret_env("A"))).collect());
        assert_eq!(many.validate(&none), Ok(()));
        assert_eq!(
            many.validate(&env(&[("ONE_MORE", "x")])),
            Err(EnvSettingsError::TooMany {
                count: MAX_ENTRIES + 1
            })
        );
    }

    #[test]
    fn secrets_resolve_from_host_env_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db");
        std::fs::write(&file, "file-secret\n").unwrap();
        let host = |var: &str| (var == "HOST_TOKEN").then(|| OsString::from("env-secret"));
        let resolved = FunctionEnv::resolve_with(
            &env(&[("GREETING", "hi")]),
            &secrets(vec![
                ("TOKEN", secret_env("HOST_TOKEN")),
                ("DB", secret_file(&file)),
            ]),
            host,
        )
        .unwrap();
        assert_eq!(resolved.environment, [("GREETING".into(), "hi".into())]);
        assert_eq!(resolved.secret_names(), ["DB", "TOKEN"]);
        let debug = format!("{resolved:?}");
        assert!(
            debug.contains("TOKEN") && debug.contains("GREETING"),
            "{debug}"
        );
        assert!(
            !debug.contains("env-secret")
                && !debug.contains("file-secret")
                && !debug.contains("hi\""),
            "{debug}"
        );
    }

    #[test]
    fn unreadable_secrets_are_errors_without_values() {
        let dir = tempfile::tempdir().unwrap();
        let none = EnvSection::default();
        let host = |var: &str| match var {
            "SET" => Some(OsString::from("x\0y")),
            _ => None,
        };
        assert_eq!(
            FunctionEnv::resolve_with(&none, &secrets(vec![("T", secret_env("UNSET"))]), host)
                .unwrap_err(),
            SecretError::EnvUnset {
                name: "T".into(),
                var: "UNSET".into()
            }
        );
        assert_eq!(
            FunctionEnv::resolve_with(&none, &secrets(vec![("T", secret_env("SET"))]), host)
                .unwrap_err(),
            SecretError::HasNul { name: "T".into() }
        );
        let missing = dir.path().join("missing");
        let err =
            FunctionEnv::resolve_with(&none, &secrets(vec![("T", secret_file(&missing))]), host)
                .unwrap_err();
        assert!(matches!(err, SecretError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            FunctionEnv::resolve_with(&none, &secrets(vec![("T", secret_file(&binary))]), host),
            Err(SecretError::NotUtf8 { .. })
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, "s".repeat(MAX_VALUE_BYTES + 1)).unwrap();
        assert_eq!(
            FunctionEnv::resolve_with(&none, &secrets(vec![("T", secret_file(&big))]), host)
                .unwrap_err(),
            SecretError::TooLong { name: "T".into() }
        );
        // Exactly the cap plus the newline `echo` adds is fine.
        std::fs::write(&big, format!("{}\n", "s".repeat(MAX_VALUE_BYTES))).unwrap();
        assert!(
            FunctionEnv::resolve_with(&none, &secrets(vec![("T", secret_file(&big))]), host)
                .is_ok()
        );
        // Secrets count towards the total.
        let max = "v".repeat(MAX_VALUE_BYTES);
        let names: Vec<String> = (0..3).map(|i| format!("V{i}")).collect();
        let env_vars = env(&names
            .iter()
            .map(|n| (n.as_str(), max.as_str()))
            .collect::<Vec<_>>());
        std::fs::write(&big, &max).unwrap();
        assert!(matches!(
            FunctionEnv::resolve_with(
                &env_vars,
                &secrets(vec![("T", secret_file(&big)), ("U", secret_file(&big))]),
                host
            ),
            Err(SecretError::TooLarge { .. })
        ));
    }
}
