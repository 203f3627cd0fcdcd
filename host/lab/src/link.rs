//! One edge's link to the cloud: a TCP proxy on loopback whose faults the
//! lab sets while it runs (cut, added latency with jitter, loss, a
//! bandwidth cap), with counters that show what the link did.
//!
//! TCP hides packet loss from a proxy (the kernel retransmits), so loss
//! here is what a lossy path does to a client in the end: each chunk
//! carried has `loss` chance of resetting its connection, and a new
//! connection the same chance of being refused.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Largest chunk read and forwarded at once.
const CHUNK: usize = 16 * 1024;
/// Largest added latency or jitter a link accepts (a minute).
pub const MAX_LATENCY_MS: u64 = 60_000;
/// Lowest bandwidth cap: below this a single HTTP header takes seconds.
pub const MIN_BANDWIDTH: u64 = 1024;

/// What a link does to the traffic it carries; the default carries it
/// untouched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Every connection closed and new ones refused.
    pub cut: bool,
    /// Added one-way delay per chunk (and before connecting upstream).
    pub latency_ms: u64,
    /// Up to this much more delay, uniformly at random, per chunk; order
    /// is kept.
    pub jitter_ms: u64,
    /// Chance (0..=1) that a chunk breaks its connection, or that a new
    /// connection is refused.
    pub loss: f64,
    /// Bytes per second each way, shared by the link's connections; 0 is
    /// no cap.
    pub bandwidth: u64,
}

/// A change to some of a link's [`Faults`]; absent fields keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultChange {
    /// See [`Faults::cut`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<bool>,
    /// See [`Faults::latency_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// See [`Faults::jitter_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// See [`Faults::loss`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// See [`Faults::bandwidth`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    /// Clears every fault first, then applies the other fields.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

/// A [`FaultChange`] outside what a link can do.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    /// Latency or jitter above [`MAX_LATENCY_MS`].
    #[error("{0} must be at most {MAX_LATENCY_MS} ms")]
    Latency(&'static str),
    /// Loss outside 0..=1.
    #[error("loss must be a fraction from 0 to 1 (0.1 is 10%)")]
    Loss,
    /// A cap below [`MIN_BANDWIDTH`].
    #[error("bandwidth must be 0 (no cap) or at least {MIN_BANDWIDTH} bytes/s")]
    Bandwidth,
}

impl FaultChange {
    /// `faults` with this change applied, or why it cannot be.
    pub fn apply(&self, faults: Faults) -> Result<Faults, FaultError> {
        let mut next = if self.reset {
            Faults::default()
        } else {
            faults
        };
        if let Some(cut) = self.cut {
            next.cut = cut;
        }
        if let Some(ms) = self.latency_ms {
            next.latency_ms = ms;
        }
        if let Some(ms) = self.jitter_ms {
            next.jitter_ms = ms;
        }
        if let Some(loss) = self.loss {
            next.loss = loss;
        }
        if let Some(bandwidth) = self.bandwidth {
            next.bandwidth = bandwidth;
        }
        if next.latency_ms > MAX_LATENCY_MS {
            return Err(FaultError::Latency("latency"));
        }
        if next.jitter_ms > MAX_LATENCY_MS {
            return Err(FaultError::Latency("jitter"));
        }
        if !(0.0..=1.0).contains(&next.loss) {
            return Err(FaultError::Loss);
        }
        if next.bandwidth != 0 && next.bandwidth < MIN_BANDWIDTH {
            return Err(FaultError::Bandwidth);
        }
        Ok(next)
    }
}

/// What a link has carried and refused since the lab started.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    reset_by_loss: AtomicU64,
    cut_connections: AtomicU64,
    bytes_to_cloud: AtomicU64,
    bytes_from_cloud: AtomicU64,
}

/// A snapshot of a link's counters, for the API.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStats {
    /// Connections carried.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections refused (cut or loss).
    pub refused: u64,
    /// Connections reset by loss mid-way.
    pub reset_by_loss: u64,
    /// Connections closed by a cut.
    pub cut_connections: u64,
    /// Bytes from the edge to the cloud.
    pub bytes_to_cloud: u64,
    /// Bytes from the cloud to the edge.
    pub bytes_from_cloud: u64,
}

/// One direction's bandwidth budget: a token bucket shared by the link's
/// connections, refilled at the cap and holding at most a second of it.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            tokens: 0.0,
            at: Instant::now(),
        }
    }

    /// How long to wait before `bytes` may go at `rate` bytes/s; takes
    /// them (the bucket may go negative: later senders wait longer).
    fn take(&mut self, bytes: usize, rate: u64) -> Duration {
        let now = Instant::now();
        let rate = rate as f64;
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

/// One link: where it listens, where it leads, and its faults.
#[derive(Debug)]
pub struct Link {
    /// The edge this link belongs to (`edge-1`, ...).
    pub name: String,
    /// Where the edge connects (the edge's `--cloud`).
    pub addr: SocketAddr,
    target: SocketAddr,
    faults: watch::Sender<Faults>,
    /// Bumped by every cut: connections opened before it close.
    cuts: watch::Sender<u64>,
    counters: Counters,
    up: Mutex<Bucket>,
    down: Mutex<Bucket>,
}

impl Link {
    /// Binds a link on a fresh loopback port to `target` and starts
    /// carrying connections; it runs until the runtime stops.
    pub async fn start(name: &str, target: SocketAddr) -> std::io::Result<Arc<Link>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let link = Arc::new(Link {
            name: name.to_owned(),
            addr: listener.local_addr()?,
            target,
            faults: watch::Sender::new(Faults::default()),
            cuts: watch::Sender::new(0),
            counters: Counters::default(),
            up: Mutex::new(Bucket::new()),
            down: Mutex::new(Bucket::new()),
        });
        tokio::spawn(accept(link.clone(), listener));
        Ok(link)
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    /// Applies `change`; a cut closes every open connection at once.
    ///
    /// Read and write are one step (two changes at once both apply), and
    /// the faults are set before a cut is announced: a connection accepted
    /// meanwhile either sees the cut in the faults or hears the
    /// announcement it subscribed to first (see [`accept`]).
    pub fn change(&self, change: &FaultChange) -> Result<Faults, FaultError> {
        let mut outcome = Err(FaultError::Loss);
        let mut before = Faults::default();
        self.faults.send_if_modified(|faults| {
            before = *faults;
            outcome = change.apply(*faults);
            match outcome {
                Ok(next) if next != *faults => {
                    *faults = next;
                    true
                }
                _ => false,
            }
        });
        let next = outcome?;
        if next.cut && !before.cut {
            self.cuts.send_modify(|n| *n += 1);
        }
        if next.bandwidth != before.bandwidth {
            // A new cap starts from an empty bucket, not a second's worth
            // saved up while there was none.
            for bucket in [&self.up, &self.down] {
                *bucket.lock().expect("bucket lock") = Bucket::new();
            }
        }
        if next != before {
            tracing::info!(target: "outpost::lab", link = %self.name, faults = ?next, "link changed");
        }
        Ok(next)
    }

    /// The link's counters now.
    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            connections: get(&c.connections),
            open: get(&c.open),
            refused: get(&c.refused),
            reset_by_loss: get(&c.reset_by_loss),
            cut_connections: get(&c.cut_connections),
            bytes_to_cloud: get(&c.bytes_to_cloud),
            bytes_from_cloud: get(&c.bytes_from_cloud),
        }
    }

    fn lost(&self) -> bool {
        let loss = self.faults().loss;
        loss > 0.0 && fastrand::f64() < loss
    }

    /// The delay a chunk gets now: latency plus up to the jitter.
    fn delay(&self) -> Duration {
        let f = self.faults();
        let jitter = if f.jitter_ms > 0 {
            fastrand::u64(0..=f.jitter_ms)
        } else {
            0
        };
        Duration::from_millis(f.latency_ms + jitter)
    }
}

async fn accept(link: Arc<Link>, listener: TcpListener) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Subscribed before the faults are read: a cut after this point is
        // heard by the connection.
        let cuts = link.cuts.subscribe();
        if link.faults().cut || link.lost() {
            link.counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        tokio::spawn(carry(link.clone(), client, cuts));
    }
}

/// Why a connection ended early.
enum Ended {
    Cut,
    Lost,
    Closed,
}

async fn carry(link: Arc<Link>, client: TcpStream, mut cuts: watch::Receiver<u64>) {
    let delay = link.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Ok(server) = TcpStream::connect(link.target).await else {
        link.counters.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if cuts.has_changed().unwrap_or(true) {
        // Cut while this connection was on its way.
        link.counters.refused.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    link.counters.connections.fetch_add(1, Ordering::Relaxed);
    link.counters.open.fetch_add(1, Ordering::Relaxed);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(&link, client_read, server_write, true);
    let down = pump(&link, server_read, client_write, false);
    let ended = tokio::select! {
        _ = cuts.changed() => Ended::Cut,
        ended = both(up, down) => ended,
    };
    match ended {
        Ended::Cut => link
            .counters
            .cut_connections
            .fetch_add(1, Ordering::Relaxed),
        Ended::Lost => link.counters.reset_by_loss.fetch_add(1, Ordering::Relaxed),
        Ended::Closed => 0,
    };
    link.counters.open.fetch_sub(1, Ordering::Relaxed);
}

/// Waits for both directions of a connection: a clean close of one
/// leaves the other to finish, a loss on either ends both at once.
async fn both(up: impl Future<Output = Ended>, down: impl Future<Output = Ended>) -> Ended {
    tokio::pin!(up, down);
    tokio::select! {
        ended = &mut up => match ended {
            Ended::Closed => down.await,
            other => other,
        },
        ended = &mut down => match ended {
            Ended::Closed => up.await,
            other => other,
        },
    }
}

/// Carries one direction: read a chunk, hold it for its delay (never
/// overtaking the chunk before it) and its bandwidth share, write it.
async fn pump(
    link: &Link,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    to_cloud: bool,
) -> Ended {
    let (send, mut receive) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reader = async move {
        let mut last_due = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return Ended::Closed,
                Ok(n) => n,
            };
            if link.lost() {
                return Ended::Lost;
            }
            buf.truncate(n);
            last_due = last_due.max(Instant::now() + link.delay());
            if send.send((last_due, buf)).await.is_err() {
                return Ended::Closed;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = receive.recv().await {
            tokio::time::sleep_until(due.into()).await;
            let rate = link.faults().bandwidth;
            if rate > 0 {
                let bucket = if to_cloud { &link.up } else { &link.down };
                let wait = bucket.lock().expect("bucket lock").take(chunk.len(), rate);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            let counter = if to_cloud {
                &link.counters.bytes_to_cloud
            } else {
                &link.counters.bytes_from_cloud
            };
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    // A lost chunk ends this direction at once, chunks still queued
    // included; a clean close first delivers what is queued.
    tokio::pin!(writer);
    tokio::select! {
        ended = reader => match ended {
            Ended::Closed => {
                (&mut writer).await;
                Ended::Closed
            }
            other => other,
        },
        () = &mut writer => Ended::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_keeps_what_it_does_not_name_and_reset_clears_first() {
        let f = Faults {
            latency_ms: 100,
            ..Faults::default()
        };
        let cut = FaultChange {
            cut: Some(true),
            ..FaultChange::default()
        };
        assert_eq!(
            cut.apply(f),
            Ok(Faults {
                cut: true,
                latency_ms: 100,
                ..Faults::default()
            })
        );
        let reset = FaultChange {
            reset: true,
            loss: Some(0.5),
            ..FaultChange::default()
        };
        assert_eq!(
            reset.apply(f),
            Ok(Faults {
                loss: 0.5,
                ..Faults::default()
            })
        );
    }

    #[test]
    fn out_of_range_faults_are_refused() {
        let bad = |c: FaultChange| c.apply(Faults::default()).unwrap_err();
        assert_eq!(
            bad(FaultChange {
                loss: Some(1.5),
                ..Default::default()
            }),
            FaultError::Loss
        );
        assert_eq!(
            bad(FaultChange {
                latency_ms: Some(MAX_LATENCY_MS + 1),
                ..Default::default()
            }),
            FaultError::Latency("latency")
        );
        assert_eq!(
            bad(FaultChange {
                bandwidth: Some(10),
                ..Default::default()
            }),
            FaultError::Bandwidth
        );
    }

    #[test]
    fn the_bucket_makes_a_sender_wait_for_bytes_beyond_the_rate() {
        let mut b = Bucket::new();
        // An empty bucket: 2,048 bytes at 1,024/s is two seconds.
        let wait = b.take(2048, 1024);
        assert!(wait >= Duration::from_millis(1900), "{wait:?}");
        // The debt carries over: the next sender waits longer still.
        assert!(b.take(1024, 1024) > wait);
    }

    /// A server that echoes what it reads, for the links' own tests.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends `bytes` through `link` and reads them back; the time it took.
    async fn round_trip(link: &Link, bytes: usize) -> std::io::Result<Duration> {
        let start = Instant::now();
        let mut stream = TcpStream::connect(link.addr).await?;
        let sent = vec![7u8; bytes];
        let (mut r, mut w) = stream.split();
        let mut back = vec![0u8; bytes];
        let (wrote, read) = tokio::join!(w.write_all(&sent), r.read_exact(&mut back));
        wrote?;
        read?;
        assert_eq!(back, sent);
        Ok(start.elapsed())
    }

    fn change(f: impl FnOnce(&mut FaultChange)) -> FaultChange {
        let mut c = FaultChange::default();
        f(&mut c);
        c
    }

    #[tokio::test]
    async fn latency_delays_each_way_and_bandwidth_caps_the_rate() {
        let link = Link::start("edge-1", echo_server().await).await.unwrap();
        round_trip(&link, 100).await.unwrap();
        link.change(&change(|c| c.latency_ms = Some(200))).unwrap();
        // A delay the link adds is a floor, never a race: connect, there
        // and back are each held at least 200 ms.
        let slow = round_trip(&link, 100).await.unwrap();
        assert!(slow >= Duration::from_millis(600), "{slow:?}");
        link.change(&change(|c| {
            c.reset = true;
            c.bandwidth = Some(8 * 1024);
        }))
        .unwrap();
        // 16 KiB each way at 8 KiB/s, the bucket emptied by the new cap:
        // two seconds.
        let capped = round_trip(&link, 16 * 1024).await.unwrap();
        assert!(capped >= Duration::from_millis(1900), "{capped:?}");
        let stats = link.stats();
        assert_eq!(stats.bytes_to_cloud, 100 + 100 + 16 * 1024);
        assert_eq!(stats.bytes_from_cloud, stats.bytes_to_cloud);
        assert_eq!(stats.connections, 3);
    }

    #[tokio::test]
    async fn a_cut_closes_open_connections_and_refuses_new_ones_until_healed() {
        let link = Link::start("edge-1", echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(link.addr).await.unwrap();
        open.write_all(b"hi").await.unwrap();
        let mut two = [0u8; 2];
        open.read_exact(&mut two).await.unwrap();
        link.change(&change(|c| c.cut = Some(true))).unwrap();
        let mut rest = Vec::new();
        // The open connection ends (EOF or reset), it does not hang.
        let _ = open.read_to_end(&mut rest).await;
        assert!(round_trip(&link, 10).await.is_err());
        assert!(link.stats().refused >= 1);
        assert_eq!(link.stats().cut_connections, 1);
        link.change(&change(|c| c.cut = Some(false))).unwrap();
        round_trip(&link, 10).await.unwrap();
    }

    #[tokio::test]
    async fn total_loss_breaks_every_exchange_and_reset_clears_it() {
        let link = Link::start("edge-1", echo_server().await).await.unwrap();
        link.change(&change(|c| c.loss = Some(1.0))).unwrap();
        for _ in 0..3 {
            assert!(round_trip(&link, 10).await.is_err());
        }
        assert_eq!(link.stats().refused, 3);
        link.change(&change(|c| c.reset = true)).unwrap();
        round_trip(&link, 10).await.unwrap();
    }
}
