//! `outpost cloud --config FILE`: the cloud's settings in a TOML file, for
//! what an operator would rather keep in a file than on a command line.
//! A flag or its env var wins over the file, and the file over the
//! defaults. Tokens are not read from it (give them by env or flag, or let
//! the cloud keep its admin token): a settings file is copied around more
//! than a secret should be.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The keys a cloud settings file may hold (each one a `--flag` of the
/// same name, `-` written `_`); any other key is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudFile {
    pub listen: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub database: Option<String>,
    pub database_pool: Option<usize>,
    pub database_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_value_bytes: Option<usize>,
    pub max_clock_skew_ms: Option<u64>,
    pub min_free_bytes: Option<u64>,
}

impl CloudFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the cloud config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("bad cloud config {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }
}

/// Where a setting came from: given (flag or env) wins over the file.
pub fn pick<T>(given: Option<T>, file: Option<T>) -> Option<T> {
    given.or(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_names_the_database_and_unknown_keys_are_errors() {
        let file = CloudFile::parse(
            "database = \"postgres://u@db:5432/outpost\"\ndatabase_pool = 8\nlisten = \"0.0.0.0:9090\"\n",
        )
        .unwrap();
        assert_eq!(
            file.database.as_deref(),
            Some("postgres://u@db:5432/outpost")
        );
        assert_eq!(file.database_pool, Some(8));
        assert!(
            CloudFile::parse("databse = \"x\"\n").is_err(),
            "a typo is caught"
        );
        assert!(
            CloudFile::parse("admin_token = \"x\"\n").is_err(),
            "no secrets"
        );
        assert_eq!(pick(Some(1), Some(2)), Some(1));
        assert_eq!(pick(None, Some(2)), Some(2));
    }
}
