//! Host bindings for the standard `wasi:keyvalue@0.2.0-draft` interfaces
//! (`store`, `atomics`, `batch`), generated from the WIT wasmtime 48 ships
//! in `wasmtime-wasi-keyvalue`, copied under `host/caps/wit-keyvalue`.

#![allow(missing_docs)]

/// The host side of a guest's `bucket` handle. Defined here, beside the
/// bindings, because the generated code names it.
pub struct Bucket {
    /// The store id (`@NAME` or a shared store's name).
    pub(super) id: String,
    /// Where the last `list-keys` page on this handle ended: the cursor it
    /// returned and the last key it held, so the usual loop over pages
    /// resumes after that key instead of counting keys from the start.
    pub(super) resume: Option<(u64, String)>,
}

wasmtime::component::bindgen!({
    path: "wit-keyvalue",
    world: "outpost:wasi-keyvalue/bindings",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store.bucket": Bucket,
    },
    require_store_data_send: true,
});

pub use self::wasi::keyvalue::{atomics, batch, store};
