//! The PostgreSQL schema, as numbered migrations applied at start: each
//! once, in order, by whichever replica gets there first, while the others
//! wait on the same row lock and then find nothing left to do.
//!
//! Only portable SQL here (CockroachDB accepts all of it): no advisory
//! locks, no `LOCK TABLE`, no sequences. Integers are `INT8`; the edge's
//! `u64` epochs, sequence numbers and HLCs are stored bit-cast to `i64`
//! and never compared in SQL.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// The migrations, in order; index + 1 is the version. Never edit one
/// that has shipped: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the cloud tier's tables.
    r#"
    CREATE TABLE outpost_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE outpost_counters (
        id            INT8 PRIMARY KEY,
        next_feed     INT8 NOT NULL,
        next_event    INT8 NOT NULL,
        next_conflict INT8 NOT NULL
    );
    INSERT INTO outpost_counters (id, next_feed, next_event, next_conflict) VALUES (1, 1, 1, 1);
    CREATE TABLE outpost_epochs (
        epoch   INT8 PRIMARY KEY,
        node    TEXT NOT NULL,
        applied INT8 NOT NULL
    );
    CREATE TABLE outpost_batch_digests (
        epoch         INT8 NOT NULL,
        last_seq      INT8 NOT NULL,
        first_seq     INT8 NOT NULL,
        digests       BYTEA NOT NULL,
        refused_seqs  INT8[] NOT NULL,
        refused_codes TEXT[] NOT NULL,
        PRIMARY KEY (epoch, last_seq)
    );
    CREATE TABLE outpost_digests (
        epoch  INT8 NOT NULL,
        seq    INT8 NOT NULL,
        digest BYTEA NOT NULL,
        PRIMARY KEY (epoch, seq)
    );
    CREATE TABLE outpost_kv (
        store TEXT NOT NULL,
        key   BYTEA NOT NULL,
        hlc   INT8 NOT NULL,
        node  TEXT NOT NULL,
        value BYTEA,
        PRIMARY KEY (store, key)
    );
    CREATE TABLE outpost_feed (
        last_cursor  INT8 PRIMARY KEY,
        first_cursor INT8 NOT NULL,
        changes      BYTEA NOT NULL
    );
    CREATE TABLE outpost_conflicts (
        id   INT8 PRIMARY KEY,
        body BYTEA NOT NULL
    );
    CREATE TABLE outpost_events (
        topic TEXT NOT NULL,
        id    INT8 NOT NULL,
        body  BYTEA NOT NULL,
        PRIMARY KEY (topic, id)
    );
    CREATE TABLE outpost_idempotency (
        topic TEXT NOT NULL,
        key   BYTEA NOT NULL,
        PRIMARY KEY (topic, key)
    );
    CREATE TABLE outpost_credentials (
        id           TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL UNIQUE,
        body         TEXT NOT NULL
    );
    "#,
    // 2: who reviewed which conflict, and when (the first review stands).
    // A table of its own, so ingest, which writes conflicts, never touches it.
    r#"
    CREATE TABLE outpost_conflict_reviews (
        id      INT8 PRIMARY KEY,
        by_whom TEXT NOT NULL,
        at_ms   INT8 NOT NULL,
        note    TEXT
    );
    "#,
];

/// Errors two replicas creating the same table at once can get from
/// PostgreSQL's catalog (`CREATE TABLE IF NOT EXISTS` is not atomic there:
/// the loser sees the table's row type, 42710, or its catalog row, 23505).
fn lost_a_creation_race(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::UNIQUE_VIOLATION
            || *c == SqlState::DUPLICATE_TABLE
            || *c == SqlState::DUPLICATE_OBJECT
    )
}

/// Brings the schema up to date; safe to run from any number of replicas
/// at once. Returns the schema version now in place.
pub async fn migrate(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    // The version table, and the one row every migrating replica locks.
    for attempt in 0.. {
        let created = client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS outpost_schema (version INT8 PRIMARY KEY);
                 INSERT INTO outpost_schema (version) VALUES (0) ON CONFLICT (version) DO NOTHING;",
            )
            .await;
        match created {
            Ok(()) => break,
            Err(e) if lost_a_creation_race(&e) && attempt < 5 => continue,
            Err(e) => return Err(e),
        }
    }
    let tx = client.transaction().await?;
    // Every replica that starts queues here; the first applies what is
    // missing, the rest see it applied once they get the row.
    tx.execute(
        "SELECT version FROM outpost_schema WHERE version = 0 FOR UPDATE",
        &[],
    )
    .await?;
    let current: i64 = tx
        .query_one("SELECT max(version) FROM outpost_schema", &[])
        .await?
        .get(0);
    let current = usize::try_from(current).unwrap_or(0);
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO outpost_schema (version) VALUES ($1)",
            &[&i64::try_from(index + 1).expect("few migrations")],
        )
        .await?;
        tracing::info!(target: "outpost::cloud::pg", version = index + 1, "applied a schema migration");
    }
    tx.commit().await?;
    Ok(MIGRATIONS.len().max(current))
}
