//! The modules folder: which files are functions, and reading one safely.

use outpost_wire::names;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Largest module file accepted; bigger files are refused before they are
/// read. Interpreted-language components (Python, JS) run to tens of MiB.
pub const MAX_MODULE_BYTES: u64 = 256 * 1024 * 1024;

/// Largest settings file (`NAME.toml`) accepted.
pub const MAX_SETTINGS_BYTES: u64 = 64 * 1024;

/// What a directory entry is, judged by its file name alone.
#[derive(Debug, PartialEq, Eq)]
pub enum FileKind<'a> {
    /// `NAME.wasm` with a valid name.
    Function(&'a str),
    /// `NAME.toml`: a function's settings (read by later features).
    Settings(&'a str),
    /// A `.wasm` file whose stem is not a valid function name.
    BadName,
    /// Anything else (editor swap files, notes, ...).
    Other,
}

pub fn classify(file_name: &OsStr) -> FileKind<'_> {
    let Some(file_name) = file_name.to_str() else {
        return FileKind::BadName;
    };
    if let Some(stem) = file_name.strip_suffix(".wasm") {
        if names::is_valid(stem) {
            FileKind::Function(stem)
        } else {
            FileKind::BadName
        }
    } else if let Some(stem) = file_name.strip_suffix(".toml")
        && names::is_valid(stem)
    {
        FileKind::Settings(stem)
    } else {
        FileKind::Other
    }
}

/// A file in the modules folder that is no function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: String,
    /// A `.wasm` whose name is no function name (worth a warning); else
    /// anything else (`notes.txt`, cargo's `deps/` when `--modules` is a
    /// target folder), mentioned at debug only.
    pub looks_like_a_function: bool,
}

/// Logs why `file` is not served: a `.wasm` with a bad name at WARN (with
/// the rule), anything else at debug.
pub fn log_skipped(target_is_watcher: bool, file: &str, looks_like_a_function: bool) {
    let rule = outpost_wire::names::RULE;
    match (looks_like_a_function, target_is_watcher) {
        (true, true) => {
            tracing::warn!(target: "outpost::watcher", file = %file, "skipping: a function is NAME.wasm, and NAME is {rule}")
        }
        (true, false) => {
            tracing::warn!(target: "outpost::deployer", file = %file, "skipping: a function is NAME.wasm, and NAME is {rule}")
        }
        (false, true) => {
            tracing::debug!(target: "outpost::watcher", file = %file, "skipping: not a .wasm or .toml file")
        }
        (false, false) => {
            tracing::debug!(target: "outpost::deployer", file = %file, "skipping: not a .wasm or .toml file")
        }
    }
}

/// Why a module file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path} resolves outside the modules folder (to {target})")]
    Escapes { path: PathBuf, target: PathBuf },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is {size} bytes, over the {max}-byte limit")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The modules folder, resolved once so symlink checks compare like with like.
#[derive(Debug, Clone)]
pub struct ModulesDir {
    /// As configured, for messages.
    dir: PathBuf,
    /// Canonical form; every module must resolve inside it.
    canonical: PathBuf,
}

impl ModulesDir {
    /// Opens the modules folder, creating it if missing: a first run works
    /// from an empty directory, but a mistyped `--modules` must not pass
    /// for an empty folder in silence, so its creation is a warning.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            tracing::warn!(target: "outpost::modules", dir = %dir.display(),
                "the modules folder {} did not exist and was created, empty: no function is served until one is put there (check --modules / OUTPOST_MODULES if you expected functions)",
                dir.display());
        }
        Ok(Self {
            dir: dir.to_owned(),
            canonical: dir.canonicalize()?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn module_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.wasm"))
    }

    /// Reads `NAME.wasm`: `Ok(None)` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, ReadError> {
        self.read_file(&format!("{name}.wasm"), MAX_MODULE_BYTES)
    }

    /// Reads the settings file `NAME.toml`: `Ok(None)` when there is none.
    pub fn read_settings(&self, name: &str) -> Result<Option<Vec<u8>>, ReadError> {
        self.read_file(&format!("{name}.toml"), MAX_SETTINGS_BYTES)
    }

    /// Reads a file of the folder, at most `max` bytes. A symlink may point
    /// elsewhere inside the folder, never outside it.
    fn read_file(&self, file_name: &str, max: u64) -> Result<Option<Vec<u8>>, ReadError> {
        let path = self.dir.join(file_name);
        let io = |source| ReadError::Io {
            path: path.clone(),
            source,
        };
        let target = match path.canonicalize() {
            Ok(target) => target,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if !target.starts_with(&self.canonical) {
            return Err(ReadError::Escapes { path, target });
        }
        // Non-blocking, so a FIFO (or a device) named like a module cannot
        // hang the open; regular files ignore the flag. The type is checked
        // on the opened file, and the resolved path is not followed again,
        // so a swap after the checks changes nothing.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&target)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(ReadError::NotAFile { path });
        }
        if meta.len() > max {
            return Err(ReadError::TooLarge {
                path,
                size: meta.len(),
                max,
            });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // `take` bounds a file that grows while being read.
        file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > max {
            return Err(ReadError::TooLarge {
                path,
                size: bytes.len() as u64,
                max,
            });
        }
        Ok(Some(bytes))
    }

    /// Names of all `NAME.wasm` files present, plus the names of files that
    /// are neither a function nor its settings (skipped, with a warning).
    pub fn list(&self) -> std::io::Result<(Vec<String>, Vec<Skipped>)> {
        let mut functions = Vec::new();
        let mut skipped = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let file_name = entry?.file_name();
            match classify(&file_name) {
                FileKind::Function(name) => functions.push(name.to_owned()),
                FileKind::Settings(_) => {}
                FileKind::BadName => skipped.push(Skipped {
                    file: file_name.to_string_lossy().into_owned(),
                    looks_like_a_function: true,
                }),
                FileKind::Other => skipped.push(Skipped {
                    file: file_name.to_string_lossy().into_owned(),
                    looks_like_a_function: false,
                }),
            }
        }
        functions.sort();
        Ok((functions, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_file_names() {
        fn c(s: &str) -> FileKind<'_> {
            classify(OsStr::new(s))
        }
        assert_eq!(c("hello.wasm"), FileKind::Function("hello"));
        assert_eq!(c("hello.toml"), FileKind::Settings("hello"));
        assert_eq!(c("Hello.wasm"), FileKind::BadName);
        assert_eq!(c("my fn.wasm"), FileKind::BadName);
        assert_eq!(c("..wasm"), FileKind::BadName);
        assert_eq!(c(".wasm"), FileKind::BadName);
        assert_eq!(c("hello.wasm.tmp"), FileKind::Other);
        assert_eq!(c("README"), FileKind::Other);
    }
}
