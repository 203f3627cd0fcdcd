//! The edge node: `serve` runs one. The modules below are its parts, from
//! the modules folder to the response; the capabilities guests use are in
//! `outpost-caps`, the node's database in `outpost-store`, the listener in
//! `outpost-http`.

pub mod access_log;
pub mod activity;
pub mod admin;
pub mod body;
pub mod cache;
pub mod cold_start;
pub mod config;
pub mod deployer;
pub mod engine;
pub mod error_code;
pub mod function;
pub mod function_config;
pub mod function_env;
pub mod guest_body;
pub mod guest_log;
pub mod http_cache;
pub mod invoke;
pub mod limits;
pub mod linker;
pub mod load_failures;
pub mod loader;
pub mod metrics;
pub mod modules;
pub mod policy;
pub mod registry;
pub mod replication;
pub mod router;
pub mod server;
pub mod state;
pub mod watcher;

use outpost_caps::Services;
use outpost_caps::kv::Catalog;
use outpost_store::Storage;

use anyhow::Context as _;
use std::sync::Arc;
use std::time::Instant;

/// Runs an edge node until `shutdown` resolves.
pub async fn serve(
    config: config::ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let metrics = metrics::Metrics::new();
    let activity = Arc::new(activity::Activity::new(metrics.clone()));
    let (engines, _allocator) = engine::build(&config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let code_cache = cache::CodeCache::open(&config.data_dir, &engines[0])
        .with_context(|| format!("cannot open code cache in {}", config.data_dir.display()))?;
    if config.new_epoch {
        let renewed = outpost_store::epoch::renew(&config.data_dir)
            .with_context(|| format!("cannot renew the epoch in {}", config.data_dir.display()))?;
        tracing::warn!(target: "outpost",
            old = renewed.old,
            new = renewed.new,
            records = renewed.records,
            "--new-epoch: this data dir ships under a new database epoch; its outbox is renumbered from 1"
        );
    }
    let storage_options = outpost_store::StorageOptions {
        max_outbox_bytes: config.max_outbox_bytes,
        min_free_bytes: config.min_free_bytes,
        ..Default::default()
    };
    let storage = Storage::open_with(
        &config.data_dir,
        config.node_id.as_deref(),
        &storage_options,
    )
    .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
    let catalog = Arc::new(Catalog::new(
        config
            .stores
            .iter()
            .filter(|(_, decl)| decl.replicated)
            .map(|(name, _)| name.clone())
            .collect(),
        storage.clone(),
    ));
    catalog.set_host_writes(
        config
            .stores
            .iter()
            .map(|(name, decl)| (name.clone(), decl.write()))
            .collect(),
    );
    let link = Arc::new(outpost_caps::link::CloudLink::default());
    let services = Arc::new(Services {
        storage: storage.clone(),
        catalog: catalog.clone(),
        ops: metrics.kv_ops.clone(),
        link: link.clone(),
    });
    let cache = config
        .cache
        .enabled
        .then(|| Arc::new(http_cache::HttpCache::new(config.cache.clone())));
    let purger = cache
        .clone()
        .map(|cache| cache as Arc<dyn outpost_caps::cache::Purger>);
    let loader = Arc::new(
        loader::Loader::new(
            engines,
            code_cache,
            services,
            config.kv_limits,
            config.limits,
            metrics.clone(),
        )?
        .with_purger(purger),
    );
    let registry = Arc::new(registry::Registry::default());
    let modules = modules::ModulesDir::open(&config.modules_dir).with_context(|| {
        format!(
            "cannot open modules folder {}",
            config.modules_dir.display()
        )
    })?;
    let deployer = Arc::new(deployer::Deployer::new(
        loader,
        registry.clone(),
        catalog,
        modules,
        activity.clone(),
        metrics.clone(),
        cache.clone(),
    ));

    // Bind first so a busy port fails fast, before any compiling.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    let admin_local = admin_listener.local_addr()?;

    let _watch = watcher::watch(
        deployer.clone(),
        watcher::Timing {
            debounce: config.reload_debounce,
            max_wait: config.reload_max_wait,
        },
    )
    .with_context(|| format!("cannot watch {}", config.modules_dir.display()))?;
    // A bad cloud URL or CA file stops the start before any compiling.
    let cloud_client = match &config.cloud {
        Some(url) => Some(replication::connect(
            url,
            config.cloud_token.clone(),
            config.cloud_ca.as_deref(),
        )?),
        None => None,
    };
    let count = deployer.sync_all().await?;
    // Replication starts once the functions are loaded: the puller applies
    // only to stores that replicate, which the loaded functions declare.
    let _replication = match cloud_client {
        Some(client) => {
            let replication = replication::start_with_client(
                storage.clone(),
                client,
                config.ship_batch,
                metrics.clone(),
            );
            link.attach(replication.status.clone());
            Some(replication)
        }
        None => {
            tracing::info!(target: "outpost",
                pending = storage.outbox_len(),
                "no --cloud: replicated writes and events stay in the outbox"
            );
            None
        }
    };
    tracing::info!(target: "outpost",
        functions = count,
        node = %storage.node_id(),
        modules = %config.modules_dir.display(),
        data = %config.data_dir.display(),
        ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    let admission = Arc::new(invoke::admission::Admission::new(
        config.max_instances as usize,
        config.queue_timeout,
        metrics.clone(),
    ));
    {
        // Each running request may write once more: what a write group
        // may wait for.
        let admission = Arc::downgrade(&admission);
        storage.expect_callers(move || admission.upgrade().map_or(0, |a| a.in_flight()));
    }
    let admin = admin::Admin {
        token: config.admin_token.as_deref().map(Arc::from),
        metrics,
        activity,
        registry: registry.clone(),
        admission: admission.clone(),
        storage: storage.clone(),
        cloud: _replication
            .as_ref()
            .map(|r| (r.status.clone(), r.client.clone())),
        cache: cache.clone(),
    };
    let (admin_stop, admin_stopped) = tokio::sync::watch::channel(());
    let admin_server = tokio::spawn(async move {
        let mut stopped = admin_stopped;
        let limits = outpost_http::ConnectionLimits {
            max_connections: 256,
            header_read_timeout: std::time::Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            grace: std::time::Duration::from_secs(1),
        };
        outpost_http::run(
            admin_listener,
            admin,
            async move {
                let _ = stopped.changed().await;
            },
            limits,
        )
        .await;
    });
    tracing::info!(target: "outpost",
        addr = %admin_local,
        token = config.admin_token.is_some(),
        "admin listening on http://{admin_local}"
    );
    tracing::info!(target: "outpost", addr = %local, "listening on http://{local}");
    let edge = server::Edge {
        cache,
        access_log: config.access_log,
        failures: deployer.failures(),
        registry,
        storage: storage.clone(),
        admission,
        replication: _replication.as_ref().map(|r| r.status.clone()),
    };
    let limits = outpost_http::ConnectionLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        max_header_bytes: config.max_header_bytes,
        grace: config.shutdown_grace,
    };
    outpost_http::run(listener, edge, shutdown, limits).await;
    // The admin listener outlives the drain, so it can be watched.
    drop(admin_stop);
    let _ = admin_server.await;
    Ok(())
}
