//! The HTTP layer every listener of Outpost shares (the edge, its admin API,
//! the cloud tier): the accept loop with connection limits, idle deadlines
//! and graceful drain ([`listener`]), TLS for listeners and for clients of
//! the cloud ([`tls`]), request bodies with a minimum rate ([`body`]),
//! host-made replies with error ids ([`reply`]), the bearer-token check
//! ([`bearer`]) and request ids ([`request_id`]).
//!
//! hyper only: nothing here links wasm.

#![warn(missing_docs)]

mod activity;
pub mod bearer;
pub mod body;
pub mod listener;
mod rate;
pub mod reply;
pub mod request_id;
pub mod tls;

pub use body::{BodyError, RequestBody};
pub use listener::{ConnectionLimits, Handler, run, run_tls};

/// The conflict explorer, one dependency-free script shared by every
/// dashboard that shows the cloud's conflicts (the edge admin's, the
/// lab's): `OutpostExplorer.mount(element, {base, headers})` over an API
/// with `/conflicts`, `/conflicts/stats`, `/history` and
/// `/conflicts/ID/review` under `base`.
pub const CONFLICT_EXPLORER_JS: &str = include_str!("explorer.js");
