//! The `outpost:edge/cache` capability: a function purges its own entries
//! from the node's HTTP cache by surrogate key (the keys its responses'
//! `Surrogate-Key` header named), e.g. right after a kv write that changes
//! what those pages show.
//!
//! The cache is the edge's, so this unit sees it only through [`Purger`],
//! which the edge implements for its cache. It has no settings: its policy
//! ([`CachePolicy`], one per function version) is the node's cache, or
//! none when the node runs without one. The scope is fixed: a request
//! purges only its own function's entries ([`CacheCtx::function`]).

use crate::bindings::cache::{self, PurgeError};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Longest surrogate key a guest may purge by.
pub const MAX_SURROGATE_KEY_BYTES: usize = 1024;

/// What the capability needs of the node's HTTP cache.
pub trait Purger: Send + Sync {
    /// Removes `function`'s entries tagged with surrogate key `key`, and
    /// only those; returns how many went.
    fn purge_surrogate_key(&self, function: &str, key: &str) -> u64;
}

/// Whether `key` can be a surrogate key: 1 to [`MAX_SURROGATE_KEY_BYTES`]
/// bytes of visible ASCII (`!` to `~`). A response's `Surrogate-Key`
/// header is visible ASCII split at spaces, so no stored entry can carry
/// any other key.
pub fn is_valid_surrogate_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_SURROGATE_KEY_BYTES
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// What one function version may purge: its own entries in the node's
/// cache, if the node has one. Cloned (one `Arc`, or nothing) into each
/// request's context.
#[derive(Clone, Default)]
pub struct CachePolicy {
    /// The node's cache; none when it runs without one.
    purger: Option<Arc<dyn Purger>>,
}

impl CachePolicy {
    /// Purges go to `purger`; `None`: the node has no cache, and every
    /// purge answers `unavailable`.
    pub fn new(purger: Option<Arc<dyn Purger>>) -> Self {
        Self { purger }
    }

    /// Whether the node has a cache to purge.
    pub fn available(&self) -> bool {
        self.purger.is_some()
    }
}

impl std::fmt::Debug for CachePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachePolicy")
            .field("available", &self.available())
            .finish()
    }
}

/// Per-request cache state.
pub struct CacheCtx {
    /// The function version's policy: the node's cache, or none.
    pub policy: CachePolicy,
    /// The function whose entries this request may purge (and no other's),
    /// also named on the log line.
    pub function: Arc<str>,
}

impl CacheCtx {
    /// Purges this function's entries tagged `key`: the number that went,
    /// or why nothing was purged.
    pub fn purge(&self, key: &str) -> Result<u32, PurgeError> {
        if !is_valid_surrogate_key(key) {
            return Err(PurgeError::InvalidKey);
        }
        let Some(purger) = &self.policy.purger else {
            return Err(PurgeError::Unavailable);
        };
        let entries = purger.purge_surrogate_key(&self.function, key);
        tracing::info!(target: "outpost::cache", function = %self.function, key, entries, "guest purged its cache entries by surrogate key");
        Ok(u32::try_from(entries).unwrap_or(u32::MAX))
    }
}

/// What the generated bindings operate on.
pub struct CacheView<'a> {
    ctx: &'a CacheCtx,
}

impl<'a> CacheView<'a> {
    /// The view over one request's cache context.
    pub fn new(ctx: &'a CacheCtx) -> Self {
        Self { ctx }
    }
}

struct HasCache;

impl HasData for HasCache {
    type Data<'a> = CacheView<'a>;
}

/// Links `outpost:edge/cache` into `linker`; `view` projects the store
/// data `T` onto the request's cache context.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> CacheView<'_>,
) -> wasmtime::Result<()> {
    cache::add_to_linker::<T, HasCache>(linker, view)
}

impl cache::Host for CacheView<'_> {
    async fn purge(&mut self, surrogate_key: String) -> wasmtime::Result<Result<u32, PurgeError>> {
        Ok(self.ctx.purge(&surrogate_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Remembers what it was asked to purge; answers `entries`.
    #[derive(Default)]
    struct Recorder {
        asked: Mutex<Vec<(String, String)>>,
        entries: u64,
    }

    impl Purger for Recorder {
        fn purge_surrogate_key(&self, function: &str, key: &str) -> u64 {
            self.asked
                .lock()
                .unwrap()
                .push((function.to_owned(), key.to_owned()));
            self.entries
        }
    }

    fn ctx(purger: Option<Arc<dyn Purger>>) -> CacheCtx {
        CacheCtx {
            policy: CachePolicy::new(purger),
            function: Arc::from("shop"),
        }
    }

    #[test]
    fn a_purge_names_the_requests_own_function() {
        let recorder = Arc::new(Recorder {
            entries: 3,
            ..Default::default()
        });
        let ctx = ctx(Some(recorder.clone()));
        assert_eq!(ctx.purge("news"), Ok(3));
        assert_eq!(
            *recorder.asked.lock().unwrap(),
            [("shop".to_owned(), "news".to_owned())]
        );
    }

    #[test]
    fn a_count_past_u32_saturates() {
        let ctx = ctx(Some(Arc::new(Recorder {
            entries: u64::MAX,
            ..Default::default()
        })));
        assert_eq!(ctx.purge("k"), Ok(u32::MAX));
    }

    #[test]
    fn a_key_no_header_can_carry_is_refused_before_the_cache_is_asked() {
        let recorder = Arc::new(Recorder::default());
        let ctx = ctx(Some(recorder.clone()));
        let long = "k".repeat(MAX_SURROGATE_KEY_BYTES + 1);
        for key in ["", " ", "a b", "a\tb", "caf\u{e9}", "a\nb", "\u{7f}", &long] {
            assert_eq!(ctx.purge(key), Err(PurgeError::InvalidKey), "{key:?}");
        }
        assert!(recorder.asked.lock().unwrap().is_empty());
        let longest = "k".repeat(MAX_SURROGATE_KEY_BYTES);
        assert_eq!(ctx.purge(&longest), Ok(0));
        assert_eq!(ctx.purge("!~product/17:v2"), Ok(0));
    }

    #[test]
    fn without_a_cache_a_purge_is_unavailable_but_a_bad_key_still_says_so() {
        let ctx = ctx(None);
        assert!(!ctx.policy.available());
        assert_eq!(ctx.purge("news"), Err(PurgeError::Unavailable));
        assert_eq!(ctx.purge(""), Err(PurgeError::InvalidKey));
        assert_eq!(
            format!("{:?}", ctx.policy),
            "CachePolicy { available: false }"
        );
    }
}
