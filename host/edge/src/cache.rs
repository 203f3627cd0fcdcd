//! On-disk cache of compiled components, keyed by content hash and engine
//! compatibility hash, so a restart deserializes instead of recompiling.

use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// `DATA/cache/<sha256>-<compat>.cwasm` files written by this process.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
    /// [`crate::engine::compat_hash`] of the engine that reads and writes here;
    /// an upgraded binary or changed setting misses instead of loading
    /// incompatible code.
    compat: String,
}

impl CodeCache {
    pub fn open(data_dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        let dir = data_dir.join("cache");
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            compat: crate::engine::compat_hash(engine),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.compat))
    }

    /// Loads the cached compilation of `sha256`, if present and readable. A
    /// corrupt entry is removed and reported as a miss.
    pub fn get(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        match self.read(engine, sha256)? {
            Ok(component) => Some(component),
            Err(e) => {
                let path = self.path_for(sha256);
                tracing::warn!(target: "outpost::cache", path = %path.display(), error = %format!("{e:#}"), "dropping unreadable cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// The cached compilation of `sha256` mapped into `engine`; `None` if
    /// there is no entry. A failure leaves the file alone: after [`get`]
    /// has read it fine for the first engine, a failure for another one is
    /// that engine's (its address space, say), not the file's.
    ///
    /// [`get`]: CodeCache::get
    pub fn read(&self, engine: &Engine, sha256: &str) -> Option<wasmtime::Result<Component>> {
        let path = self.path_for(sha256);
        if !path.exists() {
            return None;
        }
        // SAFETY: files in the cache directory are written only by `put`
        // below, from `Component::serialize` of this same engine
        // configuration (the compat hash is part of the name), and renamed
        // into place atomically, so they are never partial.
        Some(unsafe { Component::deserialize_file(engine, &path) })
    }

    /// Writes the compiled form of `component` atomically (temp file, fsync,
    /// rename), so a crash never leaves a truncated entry behind.
    pub fn put(&self, sha256: &str, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize()?;
        let path = self.path_for(sha256);
        let tmp = self.dir.join(format!(
            ".{sha256}-{}.{}.tmp",
            std::process::id(),
            fastrand::u64(..)
        ));
        let result = (|| -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(result?)
    }
}
