//! End-to-end tests: each starts the real `outpost` binary with temporary
//! modules and data folders and real guest components, and talks HTTP to it.
//! Run them with `cargo xtask test`, which builds the guests first.

mod harness;

mod admin_explorer;
mod bench_cli;
mod cache_purge;
mod cloud_disk;
mod cloud_pg;
mod config;
mod consistency;
mod dashboard;
mod dev;
mod disk_full;
mod examples;
mod explorer;
mod failover;
mod failures;
mod hostile_clients;
mod hostile_files;
mod hostile_guests;
mod http_cache;
mod isolation;
mod keyvalue;
mod kv;
mod lab;
mod lifecycle;
mod mixed;
mod observability;
mod outbound;
mod reload;
mod replication;
mod routing;
mod templates;
mod tls;
mod toolchains;
mod trust;
mod webdriver;
