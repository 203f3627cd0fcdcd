//! The PostgreSQL cloud store: any number of stateless `outpost cloud`
//! replicas over one database. Everything a replica needs from another
//! (the database id, the admin token's hash, credentials, every cursor and
//! watermark) is in the database; a replica holds only a connection pool
//! and a LISTEN connection that wakes its long-polling feed readers.
//!
//! How ingest stays exactly once and the feed gap-free under concurrent
//! replicas is in [`ingest`]; the tables are in [`schema`].

mod feed_rows;
pub mod health;
mod ingest;
mod listen;
pub mod schema;

use crate::contract::{
    Checked, CloudStore, CloudStoreError, Current, KeyPage, MAX_BATCH_ENTRIES, MAX_PAGE_BYTES,
    Reviewed,
};
use crate::credentials::Credential;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use health::DbHealth;
use outpost_wire::explain::Review;
use outpost_wire::{Ack, Change, Conflict, Event, FeedPage, Page, Version};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the replica talks to PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (each one a PostgreSQL backend process).
    pub pool_size: usize,
    /// Longest a call waits for a connection, or for one to be made.
    pub connect_timeout: Duration,
    /// Longest one ingest (all its attempts) may take before it is answered
    /// 503 in doubt; the edge sends it again.
    pub ingest_timeout: Duration,
    /// PEM file of the CA the database server's certificate must chain to;
    /// `None`: the public roots (`webpki-roots`). Used when the URL asks
    /// for TLS (`sslmode=require`, or `prefer`, the default, if the server
    /// offers it); a certificate that does not verify fails the connection.
    pub ca: Option<std::path::PathBuf>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            ingest_timeout: Duration::from_secs(20),
            ca: None,
        }
    }
}

/// Longest a read (a feed page, a token lookup) waits for the database: a
/// half-open link is not waited out for minutes.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong with one database call.
#[derive(Debug)]
pub(crate) enum Fail {
    /// A serialization failure or deadlock: run the transaction again.
    Retry(String),
    /// The database is not reachable or not accepting work; nothing of this
    /// call was committed.
    Down(String),
    /// The database answers but is too busy (no pooled connection free in
    /// time): 503, without calling the database unavailable.
    Busy(String),
    /// The contract's own refusals (epoch owned, gaps, clones).
    Refused(CloudStoreError),
    /// Anything else: a bug or a schema out of step.
    Other(String),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = describe(&e);
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                Fail::Retry(text)
            }
            // Connection exceptions, the server shutting down or starting,
            // out of connections or resources, a read-only standby.
            Some(c)
                if c.code().starts_with("08")
                    || c.code().starts_with("57P")
                    || c.code().starts_with("53")
                    || *c == SqlState::READ_ONLY_SQL_TRANSACTION
                    || *c == SqlState::QUERY_CANCELED =>
            {
                Fail::Down(text)
            }
            Some(_) => Fail::Other(text),
            // No SQLSTATE: the socket closed or failed.
            None => Fail::Down(text),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Fail {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Fail::from(e),
            deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                Fail::Busy("every database connection of this replica is in use".to_owned())
            }
            other => Fail::Down(format!("no database connection: {other}")),
        }
    }
}

/// A tokio-postgres error with its cause (its `Display` alone is often
/// just "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// The PostgreSQL backend of the store contract. Cheap to clone.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    /// This database's id, sent with every feed page (an edge that sees it
    /// change knows it talks to another database and resyncs).
    id: u64,
    health: Arc<DbHealth>,
    feed_grew: Arc<Notify>,
    options: PgOptions,
}

impl Pg {
    /// Connects to `url` (`postgres://USER[:PASS]@HOST[:PORT]/DB`), applies
    /// the migrations, and starts the LISTEN task and the health probe.
    pub async fn connect(url: &str, options: PgOptions) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let mut config: tokio_postgres::Config = url
            .parse()
            .context("the database URL is not a postgres:// URL")?;
        config
            .application_name("outpost-cloud")
            .connect_timeout(options.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            // A replica that vanishes mid-transaction (kill -9, a cut link)
            // must not hold its row locks, which stall its edges' batches on
            // every other replica, for longer than this; a statement never
            // outlives the ingest that waits for it (`ingest_timeout`), so a
            // connection given back after a timeout is free again soon. An
            // ack means committed and flushed, whatever the server default.
            .options(
                "-c idle_in_transaction_session_timeout=30000 -c statement_timeout=15000 -c synchronous_commit=on",
            );
        let tls = tls_connector(options.ca.as_deref())?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .context("cannot build the database pool")?;
        let mut client = {
            let (client, connection) = config
                .connect(tls.clone())
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to the database: {}", describe(&e)))?;
            tokio::spawn(connection);
            client
        };
        let version = schema::migrate(&mut client)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the database schema: {}", describe(&e)))?;
        if version > schema::MIGRATIONS.len() {
            tracing::warn!(target: "outpost::cloud::pg", version, known = schema::MIGRATIONS.len(), "the database schema is newer than this build: upgrade this replica");
        }
        let id = database_id(&client)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the database id: {}", describe(&e)))?;
        drop(client);
        let feed_grew = Arc::new(Notify::new());
        let health = Arc::new(DbHealth::default());
        listen::spawn(config, tls, Arc::downgrade(&feed_grew));
        let store = Self {
            pool,
            id,
            health,
            feed_grew,
            options,
        };
        store.spawn_probe();
        Ok(store)
    }

    /// Whether the database answers, for the health report and metrics.
    pub fn health(&self) -> crate::guard::StorageHealth {
        self.health.snapshot()
    }

    /// While the database is unavailable, asks it once a second whether it
    /// is back, so health turns green without waiting for traffic.
    fn spawn_probe(&self) {
        let (pool, health) = (self.pool.clone(), Arc::downgrade(&self.health));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(health) = health.upgrade() else {
                    return;
                };
                if !health.failing() {
                    continue;
                }
                let answer = async {
                    let client = pool.get().await?;
                    client.execute("SELECT 1", &[]).await?;
                    Ok::<_, Fail>(())
                };
                match answer.await {
                    Ok(()) => health.reachable(),
                    Err(Fail::Down(reason) | Fail::Other(reason) | Fail::Retry(reason)) => {
                        health.unreachable(&reason)
                    }
                    Err(Fail::Busy(_)) => {}
                    Err(Fail::Refused(_)) => {}
                }
            }
        });
    }

    /// The admin token's SHA-256 this database was set up with, setting it
    /// to `proposed` if it has none. The first replica to start decides.
    pub async fn admin_token_hash(&self, proposed: &str) -> anyhow::Result<(String, bool)> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))?;
        let inserted = client
            .execute(
                "INSERT INTO outpost_meta (key, value) VALUES ('admin_token_sha256', $1) ON CONFLICT (key) DO NOTHING",
                &[&proposed],
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot store the admin token: {}", describe(&e)))?;
        let row = client
            .query_one(
                "SELECT value FROM outpost_meta WHERE key = 'admin_token_sha256'",
                &[],
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the admin token: {}", describe(&e)))?;
        Ok((row.get(0), inserted == 1))
    }

    /// Runs a read, keeping health in step and mapping failures.
    async fn read<T>(
        &self,
        work: impl AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, Fail>,
    ) -> Result<T, CloudStoreError> {
        let outcome = tokio::time::timeout(READ_TIMEOUT, async {
            match self.pool.get().await {
                Ok(client) => work(&client).await,
                Err(e) => Err(Fail::from(e)),
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(Fail::Down(format!(
                "the database did not answer a read within {READ_TIMEOUT:?}"
            )))
        });
        self.settle(outcome, false)
    }

    /// Maps a call's outcome to the contract's errors, keeping health in
    /// step: `wrote` says whether a failure may have left the write in doubt.
    fn settle<T>(&self, outcome: Result<T, Fail>, wrote: bool) -> Result<T, CloudStoreError> {
        match outcome {
            Ok(value) => {
                self.health.reachable();
                Ok(value)
            }
            Err(Fail::Refused(e)) => {
                self.health.reachable();
                Err(e)
            }
            // Still conflicting after every retry, or too busy: the
            // database answers, so health stays as it is; the edge sends
            // the batch again.
            Err(Fail::Retry(reason) | Fail::Busy(reason)) => {
                self.health.reachable();
                Err(CloudStoreError::Unavailable(format!(
                    "nothing was applied: {reason}; retry later"
                )))
            }
            Err(Fail::Down(reason)) => {
                self.health.unreachable(&reason);
                if wrote {
                    self.health.count_in_doubt();
                    Err(CloudStoreError::Unavailable(format!(
                        "{reason}; not acknowledged (it may or may not have been applied): send it again, a redelivery is harmless"
                    )))
                } else {
                    self.health.count_refused();
                    Err(CloudStoreError::Unavailable(format!(
                        "nothing was applied: {reason}"
                    )))
                }
            }
            Err(Fail::Other(reason)) => {
                self.health.reachable();
                tracing::error!(target: "outpost::cloud::pg", reason, "a database call failed");
                Err(CloudStoreError::Internal(reason))
            }
        }
    }
}

/// TLS for the database link: rustls (ring), verified against `ca` or the
/// public roots, without the HTTP ALPN the API client offers.
fn tls_connector(ca: Option<&std::path::Path>) -> anyhow::Result<MakeRustlsConnect> {
    let config = outpost_http::tls::client_config(ca)
        .map_err(|e| anyhow::anyhow!("cannot set up TLS for the database: {e}"))?;
    let mut config = (*config).clone();
    config.alpn_protocols.clear();
    Ok(MakeRustlsConnect::new(config))
}

/// The random id of this database, made by the first replica to start.
async fn database_id(client: &tokio_postgres::Client) -> Result<u64, tokio_postgres::Error> {
    let proposed = fastrand::u64(1..).to_string();
    client
        .execute(
            "INSERT INTO outpost_meta (key, value) VALUES ('id', $1) ON CONFLICT (key) DO NOTHING",
            &[&proposed],
        )
        .await?;
    let row = client
        .query_one("SELECT value FROM outpost_meta WHERE key = 'id'", &[])
        .await?;
    Ok(row.get::<_, String>(0).parse().unwrap_or(1))
}

/// Bytes a change counts against [`MAX_PAGE_BYTES`]: about what it takes
/// in the JSON answer (base64 values, field names).
fn json_size(change: &Change) -> usize {
    change.value.as_ref().map_or(0, |v| v.len() * 4 / 3)
        + change.key.len()
        + change.store.len()
        + change.version.node.len()
        + 96
}

/// The changes after `since` in `rows` (feed rows in cursor order), at most
/// `limit` and, past the first, at most [`MAX_PAGE_BYTES`] of them, and the
/// cursor to read on from. A row that does not decode is logged and passed
/// over, never allowed to stall a reader.
fn cut_page(rows: &[tokio_postgres::Row], since: u64, limit: usize) -> (Vec<Change>, u64) {
    let mut page = Vec::new();
    let mut next = since;
    let mut bytes = 0;
    for row in rows {
        let (first, last) = (u64_of(row.get(0)), u64_of(row.get(1)));
        let changes = match feed_rows::decode(first, row.get(2)) {
            Ok(changes) => changes,
            Err(e) => {
                tracing::error!(target: "outpost::cloud::pg", first, last, error = %e, "skipping an undecodable feed row");
                next = last;
                continue;
            }
        };
        for change in changes.into_iter().filter(|c| c.cursor > since) {
            let size = json_size(&change);
            if page.len() >= limit.max(1) || (!page.is_empty() && bytes + size > MAX_PAGE_BYTES) {
                return (page, next);
            }
            bytes += size;
            next = change.cursor;
            page.push(change);
        }
    }
    (page, next)
}

fn i64_of(n: u64) -> i64 {
    n as i64
}

fn u64_of(n: i64) -> u64 {
    n as u64
}

/// Most items one page query asks for (the API caps `limit` lower).
fn page_limit(limit: usize) -> i64 {
    i64::try_from(limit.clamp(1, 10_000)).expect("small")
}

impl CloudStore for Pg {
    async fn ingest(&self, batch: Checked) -> Result<Ack, CloudStoreError> {
        ingest::check_order(&batch)?;
        let outcome =
            tokio::time::timeout(self.options.ingest_timeout, ingest::run(&self.pool, &batch))
                .await
                .unwrap_or_else(|_| {
                    Err(ingest::Attempted::InDoubt(Fail::Down(format!(
                        "the database did not finish the batch within {:?}",
                        self.options.ingest_timeout
                    ))))
                });
        match outcome {
            Ok(ack) => {
                self.health.reachable();
                // This replica's own readers need not wait for LISTEN.
                self.feed_grew.notify_waiters();
                Ok(ack)
            }
            Err(ingest::Attempted::Before(fail)) => self.settle(Err(fail), false),
            Err(ingest::Attempted::InDoubt(fail)) => self.settle(Err(fail), true),
        }
    }

    async fn feed(&self, since: u64, limit: usize) -> Result<FeedPage, CloudStoreError> {
        let id = self.id;
        self.read(async |client| {
            // Rows past the byte budget are not fetched (bar the first);
            // the exact cut, per change, is made below.
            let statement = client
                .prepare_cached(
                    "SELECT first_cursor, last_cursor, changes FROM (
                         SELECT page.*, SUM(octet_length(changes)) OVER (ORDER BY last_cursor) AS upto
                         FROM (SELECT first_cursor, last_cursor, changes FROM outpost_feed
                               WHERE last_cursor > $1 AND last_cursor <= $3 AND first_cursor <= $2) AS page
                     ) AS sized
                     WHERE upto - octet_length(changes) < $4 ORDER BY last_cursor",
                )
                .await?;
            let counters = client
                .prepare_cached("SELECT next_conflict FROM outpost_counters WHERE id = 1")
                .await?;
            let budget = i64::try_from(MAX_PAGE_BYTES).expect("fits");
            // Cursors are dense (no gaps, see `ingest`) and a row holds at
            // most one batch, so the rows holding cursors since+1 ..=
            // since+limit lie in this bounded range of the primary key.
            let since_param = i64_of(since);
            let up_to = i64_of(since.saturating_add(page_limit(limit) as u64));
            let row_end = i64_of(since.saturating_add(page_limit(limit) as u64 + MAX_BATCH_ENTRIES as u64));
            let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
                &[&since_param, &up_to, &row_end, &budget];
            let (rows, conflicts) = tokio::try_join!(
                client.query(&statement, params),
                client.query_one(&counters, &[]),
            )?;
            let (changes, next) = cut_page(&rows, since, limit);
            Ok(FeedPage {
                changes,
                next,
                cloud: id,
                conflicts: u64_of(conflicts.get::<_, i64>(0)).saturating_sub(1),
            })
        })
        .await
    }

    fn feed_grew(&self) -> &Notify {
        &self.feed_grew
    }

    async fn conflict_count(&self) -> Result<u64, CloudStoreError> {
        self.read(async |client| {
            let statement = client
                .prepare_cached("SELECT next_conflict FROM outpost_counters WHERE id = 1")
                .await?;
            let row = client.query_one(&statement, &[]).await?;
            Ok(u64_of(row.get::<_, i64>(0)).saturating_sub(1))
        })
        .await
    }

    async fn conflicts(&self, since: u64, limit: usize) -> Result<Page<Conflict>, CloudStoreError> {
        self.read(async |client| {
            let statement = client
                .prepare_cached(
                    "SELECT id, body FROM (
                         SELECT id, body, SUM(octet_length(body)) OVER (ORDER BY id) AS upto
                         FROM (SELECT id, body FROM outpost_conflicts WHERE id > $1 ORDER BY id LIMIT $2) AS page
                     ) AS sized
                     WHERE upto <= $3 OR upto = octet_length(body) ORDER BY id",
                )
                .await?;
            let budget = i64::try_from(MAX_PAGE_BYTES).expect("fits");
            let rows = client
                .query(&statement, &[&i64_of(since), &page_limit(limit), &budget])
                .await?;
            Ok(decode_page(&rows, since))
        })
        .await
    }

    async fn events(
        &self,
        topic: &str,
        since: u64,
        limit: usize,
    ) -> Result<Page<Event>, CloudStoreError> {
        self.read(async |client| {
            let statement = client
                .prepare_cached(
                    "SELECT id, body FROM (
                         SELECT id, body, SUM(octet_length(body)) OVER (ORDER BY id) AS upto
                         FROM (SELECT id, body FROM outpost_events WHERE topic = $1 AND id > $2 ORDER BY id LIMIT $3) AS page
                     ) AS sized
                     WHERE upto <= $4 OR upto = octet_length(body) ORDER BY id",
                )
                .await?;
            let budget = i64::try_from(MAX_PAGE_BYTES).expect("fits");
            let rows = client
                .query(
                    &statement,
                    &[&topic, &i64_of(since), &page_limit(limit), &budget],
                )
                .await?;
            Ok(decode_page(&rows, since))
        })
        .await
    }

    async fn put_credential(&self, credential: Credential) -> Result<(), CloudStoreError> {
        let body = serde_json::to_string(&credential).expect("serializes");
        let outcome = async {
            let client = self.pool.get().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO outpost_credentials (id, token_sha256, body) VALUES ($1, $2, $3)",
                )
                .await?;
            client
                .execute(
                    &statement,
                    &[&credential.id, &credential.token_sha256, &body],
                )
                .await?;
            Ok(())
        };
        self.settle(outcome.await, true)
    }

    async fn credential_by_hash(
        &self,
        token_sha256: &str,
    ) -> Result<Option<Credential>, CloudStoreError> {
        self.read(async |client| {
            let statement = client
                .prepare_cached("SELECT body FROM outpost_credentials WHERE token_sha256 = $1")
                .await?;
            let row = client.query_opt(&statement, &[&token_sha256]).await?;
            Ok(row.and_then(|row| serde_json::from_str(row.get::<_, &str>(0)).ok()))
        })
        .await
    }

    async fn credentials(&self) -> Result<Vec<Credential>, CloudStoreError> {
        self.read(async |client| {
            let rows = client
                .query("SELECT body FROM outpost_credentials", &[])
                .await?;
            let mut all: Vec<Credential> = rows
                .iter()
                .filter_map(|row| serde_json::from_str(row.get::<_, &str>(0)).ok())
                .collect();
            // Byte order of ids, as sled lists them (not the collation's).
            all.sort_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
            Ok(all)
        })
        .await
    }

    async fn revoke_credential(&self, id: &str) -> Result<bool, CloudStoreError> {
        let outcome = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT body FROM outpost_credentials WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await?
            else {
                return Ok(false);
            };
            let mut credential: Credential = serde_json::from_str(row.get::<_, &str>(0))
                .map_err(|e| Fail::Other(format!("credential {id} does not decode: {e}")))?;
            if credential.revoked_ms.is_none() {
                credential.revoked_ms = Some(crate::credentials::now_ms());
                let body = serde_json::to_string(&credential).expect("serializes");
                tx.execute(
                    "UPDATE outpost_credentials SET body = $2 WHERE id = $1",
                    &[&id, &body],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        };
        self.settle(outcome.await, true)
    }

    async fn get(&self, store: &str, key: &str) -> Result<Option<Current>, CloudStoreError> {
        self.read(async |client| {
            let statement = client
                .prepare_cached(
                    "SELECT hlc, node, value FROM outpost_kv WHERE store = $1 AND key = $2",
                )
                .await?;
            let row = client
                .query_opt(&statement, &[&store, &key.as_bytes()])
                .await?;
            Ok(row.map(|row| {
                (
                    Version {
                        hlc: u64_of(row.get(0)),
                        node: row.get(1),
                    },
                    row.get(2),
                )
            }))
        })
        .await
    }

    async fn feed_head(&self) -> Result<u64, CloudStoreError> {
        self.read(async |client| {
            // The counters row moves in the transaction that adds the
            // feed rows, so every cursor below it is committed.
            let statement = client
                .prepare_cached("SELECT next_feed FROM outpost_counters WHERE id = 1")
                .await?;
            let row = client.query_one(&statement, &[]).await?;
            Ok(u64_of(row.get::<_, i64>(0)).saturating_sub(1))
        })
        .await
    }

    async fn review_conflict(&self, id: u64, review: Review) -> Result<Reviewed, CloudStoreError> {
        let outcome = async {
            let client = self.pool.get().await?;
            // One statement: the conflict must exist, and a review already
            // there (made here or at another replica, even concurrently:
            // the insert waits for it) is kept, unless this one is the
            // operator's and that one is not (`Review::replaces`). A
            // committed transaction is durable: a kept review read after
            // it is one no crash takes back.
            let insert = client
                .prepare_cached(
                    "INSERT INTO outpost_conflict_reviews AS kept (id, by_whom, at_ms, note)
                     SELECT $1::INT8, $2::TEXT, $3::INT8, $4::TEXT
                     WHERE EXISTS (SELECT 1 FROM outpost_conflicts WHERE id = $1::INT8)
                     ON CONFLICT (id) DO UPDATE
                         SET by_whom = EXCLUDED.by_whom, at_ms = EXCLUDED.at_ms, note = EXCLUDED.note
                         WHERE EXCLUDED.by_whom = $5::TEXT AND kept.by_whom <> $5::TEXT",
                )
                .await?;
            let inserted = client
                .execute(
                    &insert,
                    &[
                        &i64_of(id),
                        &review.by,
                        &i64_of(review.at_ms),
                        &review.note,
                        &outpost_wire::explain::OPERATOR,
                    ],
                )
                .await?;
            if inserted == 1 {
                return Ok(Reviewed::Recorded(review));
            }
            let kept = client
                .prepare_cached(
                    "SELECT by_whom, at_ms, note FROM outpost_conflict_reviews WHERE id = $1",
                )
                .await?;
            Ok(match client.query_opt(&kept, &[&i64_of(id)]).await? {
                Some(row) => Reviewed::Already(review_of(&row, 0)),
                None => Reviewed::NoSuchConflict,
            })
        };
        self.settle(outcome.await, true)
    }

    async fn reviewed_ids(
        &self,
        after: u64,
        through: u64,
    ) -> Result<BTreeSet<u64>, CloudStoreError> {
        if through <= after {
            return Ok(BTreeSet::new());
        }
        self.read(async |client| {
            let statement = client
                .prepare_cached(
                    "SELECT id FROM outpost_conflict_reviews WHERE id > $1 AND id <= $2",
                )
                .await?;
            let rows = client
                .query(&statement, &[&i64_of(after), &i64_of(through)])
                .await?;
            Ok(rows.iter().map(|row| u64_of(row.get(0))).collect())
        })
        .await
    }

    async fn reviews(
        &self,
        after: u64,
        through: u64,
    ) -> Result<BTreeMap<u64, Review>, CloudStoreError> {
        if through <= after {
            return Ok(BTreeMap::new());
        }
        self.read(async |client| {
            let statement = client
                .prepare_cached(
                    "SELECT id, by_whom, at_ms, note FROM outpost_conflict_reviews
                     WHERE id > $1 AND id <= $2",
                )
                .await?;
            let rows = client
                .query(&statement, &[&i64_of(after), &i64_of(through)])
                .await?;
            Ok(rows
                .iter()
                .map(|row| (u64_of(row.get(0)), review_of(row, 1)))
                .collect())
        })
        .await
    }

    async fn keys(
        &self,
        store: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, CloudStoreError> {
        self.read(async |client| {
            // Rows past the byte budget are not fetched (bar the first);
            // `total` says whether the page was cut short of `limit + 1`.
            let sized = |range: &str| {
                format!(
                    "SELECT key, hlc, node, value, total FROM (
                         SELECT page.*, COUNT(*) OVER () AS total,
                                SUM(octet_length(key) + COALESCE(octet_length(value), 0)) OVER (ORDER BY key) AS upto
                         FROM (SELECT key, hlc, node, value FROM outpost_kv
                               WHERE store = $1 AND {range} ORDER BY key LIMIT $2) AS page
                     ) AS sized
                     WHERE upto <= $3 OR upto = octet_length(key) + COALESCE(octet_length(value), 0)
                     ORDER BY key"
                )
            };
            let limit = page_limit(limit);
            // One more than asked: whether more keys follow.
            let fetch = limit + 1;
            let budget = i64::try_from(MAX_PAGE_BYTES).expect("fits");
            let rows = match after {
                Some(after) => {
                    let statement = client.prepare_cached(&sized("key > $4")).await?;
                    client
                        .query(&statement, &[&store, &fetch, &budget, &after.as_bytes()])
                        .await?
                }
                None => {
                    let statement = client.prepare_cached(&sized("TRUE")).await?;
                    client.query(&statement, &[&store, &fetch, &budget]).await?
                }
            };
            let total = rows.first().map_or(0, |row| row.get::<_, i64>(4));
            let mut items = Vec::with_capacity(rows.len());
            for row in rows.iter().take(limit as usize) {
                match String::from_utf8(row.get::<_, Vec<u8>>(0)) {
                    Ok(key) => items.push((
                        key,
                        (
                            Version {
                                hlc: u64_of(row.get(1)),
                                node: row.get(2),
                            },
                            row.get(3),
                        ),
                    )),
                    Err(_) => {
                        tracing::error!(target: "outpost::cloud::pg", store, "skipping a key that is not UTF-8")
                    }
                }
            }
            let more = total > (rows.len().min(limit as usize)) as i64;
            let next = more
                .then(|| items.last().map(|(key, _): &(String, Current)| key.clone()))
                .flatten();
            Ok(KeyPage { items, next })
        })
        .await
    }
}

/// A review from the row's columns `by_whom, at_ms, note` from `first` on.
fn review_of(row: &tokio_postgres::Row, first: usize) -> Review {
    Review {
        by: row.get(first),
        at_ms: u64_of(row.get(first + 1)),
        note: row.get(first + 2),
    }
}

/// Items stored as JSON `body` with their `id`; ones that do not decode are
/// logged and skipped, never allowed to stall a reader.
fn decode_page<T: serde::de::DeserializeOwned>(
    rows: &[tokio_postgres::Row],
    since: u64,
) -> Page<T> {
    let mut items = Vec::with_capacity(rows.len());
    let mut next = since;
    for row in rows {
        next = u64_of(row.get(0));
        match serde_json::from_slice(row.get::<_, &[u8]>(1)) {
            Ok(item) => items.push(item),
            Err(e) => {
                tracing::error!(target: "outpost::cloud::pg", id = next, error = %e, "skipping an undecodable entry")
            }
        }
    }
    Page { items, next }
}
