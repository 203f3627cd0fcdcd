//! Waking long-polling feed readers on this replica when any replica
//! commits a change: one connection per replica that `LISTEN`s on the
//! channel every feed-growing ingest `NOTIFY`s (in its transaction, so the
//! notification goes out only once the change is committed and visible).
//!
//! Worst-case delay: a change committed by this replica wakes its own
//! readers at once (the store notifies after its commit). One committed by
//! another replica wakes them when PostgreSQL delivers the notification
//! (milliseconds). While the connection is down, readers are woken every
//! [`DOWN_TICK`] and re-read, and all are woken once when it is back; a
//! link that dies silently is noticed by TCP keepalives within about 25 s
//! (idle 10 s, then 3 probes 5 s apart), and until then a reader waiting on
//! this replica for another's change may wait out its long-poll (at most
//! 30 s) and read it on its next poll.

use std::sync::Weak;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The channel feed-growing ingests notify (PostgreSQL-only: `NOTIFY`).
pub const CHANNEL: &str = "outpost_feed";

/// How often readers are woken while the LISTEN connection is down.
pub const DOWN_TICK: Duration = Duration::from_secs(1);

/// Keeps a LISTEN connection open for as long as the process runs.
pub fn spawn(config: tokio_postgres::Config, tls: MakeRustlsConnect, grew: Weak<Notify>) {
    tokio::spawn(async move {
        let mut was_down = false;
        loop {
            // The store is gone (a test's, or a shut-down replica's).
            let Some(alive) = grew.upgrade() else { return };
            drop(alive);
            match config.connect(tls.clone()).await {
                Ok((client, mut connection)) => {
                    let (tx, mut closed) = tokio::sync::oneshot::channel::<String>();
                    let wake = grew.clone();
                    tokio::spawn(async move {
                        let why = loop {
                            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                                Some(Ok(AsyncMessage::Notification(_))) => match wake.upgrade() {
                                    Some(wake) => wake.notify_waiters(),
                                    None => break "the store was dropped".to_owned(),
                                },
                                Some(Ok(_)) => {}
                                Some(Err(e)) => break e.to_string(),
                                None => break "the connection closed".to_owned(),
                            }
                        };
                        let _ = tx.send(why);
                    });
                    match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                        Ok(()) => {
                            if was_down {
                                tracing::info!(target: "outpost::cloud::pg", "feed notifications are back");
                            }
                            // Anything committed while nobody listened.
                            if let Some(grew) = grew.upgrade() {
                                grew.notify_waiters();
                            }
                            let why = loop {
                                tokio::select! {
                                    why = &mut closed => break why.unwrap_or_default(),
                                    () = tokio::time::sleep(Duration::from_secs(5)) => {
                                        if grew.strong_count() == 0 {
                                            return;
                                        }
                                    }
                                }
                            };
                            tracing::warn!(target: "outpost::cloud::pg", reason = %why, "lost the feed notification connection; long-polls fall back to re-reading every {DOWN_TICK:?}");
                            was_down = true;
                        }
                        Err(e) => {
                            if !was_down {
                                tracing::warn!(target: "outpost::cloud::pg", error = %e, "cannot LISTEN for feed changes; long-polls re-read every {DOWN_TICK:?}");
                            }
                            was_down = true;
                        }
                    }
                    drop(client);
                }
                Err(e) => {
                    if !was_down {
                        tracing::warn!(target: "outpost::cloud::pg", error = %e, "cannot open the feed notification connection; long-polls re-read every {DOWN_TICK:?}");
                    }
                    was_down = true;
                }
            }
            // Down: wake readers now and then so they re-read.
            match grew.upgrade() {
                Some(grew) => grew.notify_waiters(),
                None => return,
            }
            tokio::time::sleep(DOWN_TICK).await;
        }
    });
}
