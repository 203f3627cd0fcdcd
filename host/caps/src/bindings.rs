//! Host bindings for Outpost's own WIT interfaces (`outpost:edge/kv` and
//! `outpost:edge/queue`), generated from `wit/kv.wit`.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "outpost:edge/imports",
    imports: { default: async | trappable },
    with: {
        "outpost:edge/kv.store": crate::kv::OpenStore,
    },
    require_store_data_send: true,
    additional_derives: [PartialEq, Eq],
});

pub use self::outpost::edge::{kv, queue};
