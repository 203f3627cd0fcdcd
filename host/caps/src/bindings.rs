//! Host bindings for Outpost's own WIT interfaces (`outpost:edge/kv`,
//! `outpost:edge/queue` and `outpost:edge/cache`), generated from
//! `wit/kv.wit`.

#![allow(missing_docs)]

/// The host side of a guest's `store` handle: which store id it opened.
/// Defined here, beside the bindings, because the generated code names it.
pub struct OpenStore {
    /// The store id (`@NAME` or a shared store's name).
    pub(crate) id: String,
}

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "outpost:edge/imports",
    imports: { default: async | trappable },
    with: {
        "outpost:edge/kv.store": OpenStore,
    },
    require_store_data_send: true,
    additional_derives: [PartialEq, Eq],
});

pub use self::outpost::edge::{cache, kv, queue};
