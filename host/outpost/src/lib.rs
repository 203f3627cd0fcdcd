//! What the `outpost` binary shares with the benches: the global allocator.

pub mod alloc;
