//! The HTTP layer every listener of Outpost shares (the edge, its admin API,
//! the cloud tier): the accept loop with connection limits and graceful
//! drain ([`listener`]), host-made replies with error ids ([`reply`]), the
//! bearer-token check ([`bearer`]) and request ids ([`request_id`]).
//!
//! hyper only: nothing here links wasm.

#![warn(missing_docs)]

pub mod bearer;
pub mod listener;
pub mod reply;
pub mod request_id;

pub use listener::{ConnectionLimits, Handler, run};
