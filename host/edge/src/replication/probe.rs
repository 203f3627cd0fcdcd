//! Waiting out a backoff without missing the cloud's return. The backoff
//! grows to 30 s so that a cloud that stays down is not hammered with
//! uploads; but a node that was cut off for a minute should not then sit
//! out half a minute more. While it waits, it asks the cloud's health
//! endpoint (no body, no credential) about every [`PROBE_EVERY`], and
//! retries at once when the cloud answers.

use super::client::{CloudClient, CloudError};
use std::time::Duration;
use tokio::time::Instant;

/// About how often a waiting task probes: drawn from 80-100% of this, so
/// that many edges do not probe in lockstep. Short enough that the first
/// retry follows the cloud's return within a second; a refused connection
/// a second is no load for a cloud that is down.
const PROBE_EVERY: Duration = Duration::from_millis(800);

/// Waits `delay`, or less once the cloud answers its health endpoint
/// again, if `error` says it could not be reached at all. A cloud that
/// answered (a 5xx, a verdict) is up and said what it said: its wait is
/// never cut short, so a cloud that is up but failing sees each upload
/// only once per backoff step.
pub async fn wait(client: &CloudClient, error: &CloudError, delay: Duration) {
    let end = Instant::now() + delay;
    if !matches!(error, CloudError::Unreachable(_) | CloudError::Timeout(_)) {
        tokio::time::sleep_until(end).await;
        return;
    }
    loop {
        let next = Instant::now() + PROBE_EVERY.mul_f64(0.8 + 0.2 * fastrand::f64());
        if next >= end {
            tokio::time::sleep_until(end).await;
            return;
        }
        tokio::time::sleep_until(next).await;
        if client.healthy().await {
            // Once per outage: the retry either goes through (and the
            // backoff resets) or meets a cloud that answers, whose wait is
            // not cut short.
            tracing::info!(target: "outpost::replication", "the cloud answers its health check again; retrying now");
            return;
        }
    }
}
