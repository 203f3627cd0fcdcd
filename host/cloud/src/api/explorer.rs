//! The conflict explorer over any [`CloudStore`]: `/v1/conflicts` with
//! filters and reviews, `/v1/conflicts/stats`, `/v1/history` and the review
//! itself. Everything here reads what ingest already writes (the conflict
//! log, the feed), bounded by a scan budget or window, so none of it adds
//! to the cost of an ingest; the reviews are a table of their own.

use crate::contract::{CloudStore, CloudStoreError, MAX_PAGE_BYTES};
use crate::credentials::Principal;
use outpost_wire::explain::{self, ConflictKind, Explained, Review, Shown};
use outpost_wire::{Change, Conflict, Page, Version};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// Most conflict records one filtered list scans before it answers with
/// what it found (and `next` where it stopped).
pub const SCAN_BUDGET: usize = 10 * super::MAX_LIMIT;

/// How many of the most recent conflicts stats cover, by default and at most.
pub const STATS_WINDOW: u64 = 100_000;

/// How many of the most recent feed changes (and conflicts) a key's
/// history scans by default, and at most (`window=`).
pub const HISTORY_WINDOW: u64 = 20_000;
/// The largest `window=` a history may ask for.
pub const MAX_HISTORY_WINDOW: u64 = 100_000;

/// Versions (and lost writes) a history lists by default, and at most.
const HISTORY_LIMIT: usize = 32;
const MAX_HISTORY_LIMIT: usize = 256;

/// Conflicts of the key kept while a history scans, newest first: what
/// links versions to the conflicts they won, and the lost writes.
const HISTORY_CONFLICTS_KEPT: usize = 4 * MAX_HISTORY_LIMIT;

/// Records read from the store at a time by the windowed scans; the task
/// yields between reads, so a scan never holds a worker thread for long.
const READ_PAGE: usize = 2_000;

/// Longest bucket stats may count in (a year).
const MAX_BUCKET_S: u64 = 365 * 24 * 3600;

/// Longest a stats or history request waits for the scan before it.
const SCAN_WAIT: Duration = Duration::from_secs(10);

/// One windowed scan (stats, history) at a time per replica: each may
/// read up to 100,000 records, and ingest shares the cores with them.
#[derive(Debug)]
pub struct Scans(tokio::sync::Semaphore);

impl Default for Scans {
    fn default() -> Self {
        Self(tokio::sync::Semaphore::new(1))
    }
}

impl Scans {
    /// A turn to scan, or `None` if the scan before did not end in time.
    pub(super) async fn turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(SCAN_WAIT, self.0.acquire())
            .await
            .ok()?
            .ok()
    }
}

/// `name`'s value, if given and not empty (an empty form field is no
/// filter).
fn given<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn number(params: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, String> {
    match given(params, name) {
        None => Ok(default),
        Some(raw) => raw.parse::<u64>().map_err(|_| {
            format!("query parameter {name} must be a non-negative integer, not {raw:?}")
        }),
    }
}

/// Which conflicts a list or stats keeps (every field: all if `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `store=`: this store exactly.
    store: Option<String>,
    /// `prefix=`: keys that start with it.
    prefix: Option<String>,
    /// `node=`: either writer was this node.
    node: Option<String>,
    /// `kind=benign|divergent`.
    kind: Option<ConflictKind>,
    /// `reviewed=true|false`.
    reviewed: Option<bool>,
}

impl Filter {
    /// The filter in a query string; `Err` says which value is bad.
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, String> {
        let kind = match given(params, "kind") {
            None => None,
            Some("benign") => Some(ConflictKind::Benign),
            Some("divergent") => Some(ConflictKind::Divergent),
            Some(other) => {
                return Err(format!(
                    "query parameter kind must be benign or divergent, not {other:?}"
                ));
            }
        };
        let reviewed = match given(params, "reviewed") {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(format!(
                    "query parameter reviewed must be true or false, not {other:?}"
                ));
            }
        };
        Ok(Self {
            store: given(params, "store").map(str::to_owned),
            prefix: given(params, "prefix").map(str::to_owned),
            node: given(params, "node").map(str::to_owned),
            kind,
            reviewed,
        })
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `conflict` passes, given whether it was reviewed.
    fn matches(&self, conflict: &Conflict, reviewed: bool) -> bool {
        self.store.as_ref().is_none_or(|s| *s == conflict.store)
            && self
                .prefix
                .as_ref()
                .is_none_or(|p| conflict.key.starts_with(p.as_str()))
            && self
                .node
                .as_ref()
                .is_none_or(|n| *n == conflict.winner.node || *n == conflict.loser.node)
            && self
                .kind
                .is_none_or(|kind| kind == explain::kind_of(conflict))
            && self.reviewed.is_none_or(|r| r == reviewed)
    }
}

/// A conflict as `/v1/conflicts` lists it: explained, and its review.
#[derive(Debug, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    explained: Explained,
    review: Option<Review>,
}

/// About what a conflict takes in the JSON answer: both values in base64
/// and again as shown, plus the fixed fields.
fn listed_size(conflict: &Conflict) -> usize {
    let values = conflict.winner_value.as_ref().map_or(0, Vec::len)
        + conflict.loser_value.as_ref().map_or(0, Vec::len);
    3 * values + conflict.key.len() + conflict.store.len() + 400
}

/// Up to `limit` conflicts after `since` that `principal` may see and
/// `filter` keeps, scanning at most [`SCAN_BUDGET`] records and answering
/// at most about [`MAX_PAGE_BYTES`] (at least one item). `next` is the
/// last record scanned, kept or not, so a client paging on never reads a
/// record twice and always moves.
pub async fn list<S: CloudStore>(
    store: &S,
    principal: &Principal,
    since: u64,
    limit: usize,
    filter: &Filter,
) -> Result<Page<Listed>, CloudStoreError> {
    // Nothing to skip: read just what the page needs.
    let keeps_all = filter.is_empty() && principal.node().is_none();
    let (mut items, mut bytes, mut next, mut scanned) = (Vec::new(), 0, since, 0);
    'scan: while scanned < SCAN_BUDGET && items.len() < limit {
        let want = if keeps_all {
            limit - items.len()
        } else {
            super::MAX_LIMIT
        };
        let start = next;
        let page = store
            .conflicts(start, want.min(SCAN_BUDGET - scanned))
            .await?;
        if page.next <= start {
            break;
        }
        let reviews = store.reviews(start, page.next).await?;
        for conflict in page.items {
            let id = conflict.id;
            let review = reviews.get(&id);
            if principal.may_see(&conflict.store) && filter.matches(&conflict, review.is_some()) {
                let size = listed_size(&conflict);
                if !items.is_empty() && bytes + size > MAX_PAGE_BYTES {
                    // `next` stays before it: the next page starts with it.
                    break 'scan;
                }
                bytes += size;
                items.push(Listed {
                    explained: explain::explain(conflict),
                    review: review.cloned(),
                });
                if items.len() == limit {
                    next = id;
                    break 'scan;
                }
            }
            next = id;
        }
        // Past any record at the page's end that did not decode.
        next = page.next;
        scanned += usize::try_from(page.next - start).unwrap_or(usize::MAX);
    }
    Ok(Page { items, next })
}

/// What `/v1/conflicts/stats` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    filter: Filter,
    /// `bucket_s=`: the width of an `over_time` bucket, in seconds.
    bucket_s: u64,
    /// `window=`: how many of the most recent conflicts to cover.
    window: u64,
}

impl StatsQuery {
    /// The query in a query string; `Err` says which value is bad.
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, String> {
        let bucket_s = number(params, "bucket_s", 60)?;
        if !(1..=MAX_BUCKET_S).contains(&bucket_s) {
            return Err(format!(
                "query parameter bucket_s must be 1 to {MAX_BUCKET_S} seconds, not {bucket_s}"
            ));
        }
        Ok(Self {
            filter: Filter::parse(params)?,
            bucket_s,
            window: number(params, "window", STATS_WINDOW)?.clamp(1, STATS_WINDOW),
        })
    }
}

/// One store's line in `by_store`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreCount {
    store: String,
    count: u64,
    benign: u64,
    divergent: u64,
}

/// One pair of nodes' line in `by_pair`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairCount {
    /// The two writers, sorted.
    nodes: [String; 2],
    count: u64,
}

/// One bucket of `over_time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// The bucket's start (ms since the Unix epoch, a multiple of its width).
    at_ms: u64,
    count: u64,
}

/// What `/v1/conflicts/stats` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    total: u64,
    benign: u64,
    divergent: u64,
    reviewed: u64,
    /// Most conflicts first, then by store id.
    by_store: Vec<StoreCount>,
    /// Most conflicts first, then by the nodes.
    by_pair: Vec<PairCount>,
    /// Buckets holding at least one conflict, oldest first.
    over_time: Vec<Bucket>,
    /// The bucket width asked for, in seconds.
    bucket_s: u64,
    /// How many of the most recent conflicts were scanned (visible or not).
    window: u64,
    /// Whether that reached back to the first conflict: nothing older was
    /// left out.
    complete: bool,
}

/// The start of the `bucket_ms` wide bucket holding `at_ms`.
fn bucket_start(at_ms: u64, bucket_ms: u64) -> u64 {
    at_ms - at_ms % bucket_ms
}

/// Counts conflicts as they are scanned.
#[derive(Debug, Default)]
struct Tally {
    total: u64,
    benign: u64,
    divergent: u64,
    reviewed: u64,
    by_store: BTreeMap<String, StoreCount>,
    by_pair: BTreeMap<[String; 2], u64>,
    over_time: BTreeMap<u64, u64>,
}

impl Tally {
    fn add(&mut self, conflict: &Conflict, reviewed: bool, bucket_ms: u64) {
        let benign = explain::kind_of(conflict) == ConflictKind::Benign;
        self.total += 1;
        self.benign += u64::from(benign);
        self.divergent += u64::from(!benign);
        self.reviewed += u64::from(reviewed);
        let line = self
            .by_store
            .entry(conflict.store.clone())
            .or_insert_with(|| StoreCount {
                store: conflict.store.clone(),
                ..StoreCount::default()
            });
        line.count += 1;
        line.benign += u64::from(benign);
        line.divergent += u64::from(!benign);
        let mut nodes = [conflict.winner.node.clone(), conflict.loser.node.clone()];
        nodes.sort();
        *self.by_pair.entry(nodes).or_default() += 1;
        let at = bucket_start(explain::conflict_ms(conflict), bucket_ms);
        *self.over_time.entry(at).or_default() += 1;
    }

    fn finish(self, bucket_s: u64, window: u64, complete: bool) -> Stats {
        let mut by_store: Vec<StoreCount> = self.by_store.into_values().collect();
        by_store.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.store.cmp(&b.store)));
        let mut by_pair: Vec<PairCount> = self
            .by_pair
            .into_iter()
            .map(|(nodes, count)| PairCount { nodes, count })
            .collect();
        by_pair.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.nodes.cmp(&b.nodes)));
        Stats {
            total: self.total,
            benign: self.benign,
            divergent: self.divergent,
            reviewed: self.reviewed,
            by_store,
            by_pair,
            over_time: self
                .over_time
                .into_iter()
                .map(|(at_ms, count)| Bucket { at_ms, count })
                .collect(),
            bucket_s,
            window,
            complete,
        }
    }
}

/// Counts of the most recent `query.window` conflicts that `principal`
/// may see and the filter keeps.
pub async fn stats<S: CloudStore>(
    store: &S,
    principal: &Principal,
    query: &StatsQuery,
) -> Result<Stats, CloudStoreError> {
    // Ids are dense from 1: the last `window` ones are after this.
    let head = store.conflict_count().await?;
    let since = head.saturating_sub(query.window);
    let reviews = store.reviews(since, head).await?;
    let bucket_ms = query.bucket_s * 1000;
    let mut tally = Tally::default();
    let mut cursor = since;
    while cursor < head {
        let page = store
            .conflicts(cursor, READ_PAGE.min((head - cursor) as usize))
            .await?;
        if page.next <= cursor {
            break;
        }
        for conflict in page.items.iter().filter(|c| c.id <= head) {
            let reviewed = reviews.contains_key(&conflict.id);
            if principal.may_see(&conflict.store) && query.filter.matches(conflict, reviewed) {
                tally.add(conflict, reviewed, bucket_ms);
            }
        }
        cursor = page.next;
        tokio::task::yield_now().await;
    }
    Ok(tally.finish(query.bucket_s, cursor.min(head) - since, since == 0))
}

/// What `/v1/history` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    store: String,
    key: String,
    /// `limit=`: versions (and lost writes) listed, newest first.
    limit: usize,
    /// `window=`: how many of the most recent changes (and conflicts) to scan.
    window: u64,
}

impl HistoryQuery {
    /// The query in a query string; `Err` says what is missing or bad.
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, String> {
        let (Some(store), Some(key)) = (params.get("store"), params.get("key")) else {
            return Err("store and key are required".into());
        };
        Ok(Self {
            store: store.clone(),
            key: key.clone(),
            limit: usize::try_from(number(params, "limit", HISTORY_LIMIT as u64)?)
                .unwrap_or(usize::MAX)
                .clamp(1, MAX_HISTORY_LIMIT),
            window: number(params, "window", HISTORY_WINDOW)?.clamp(1, MAX_HISTORY_WINDOW),
        })
    }

    /// The store the history is of, for the visibility check.
    pub fn store(&self) -> &str {
        &self.store
    }
}

/// A key's current version at the cloud.
#[derive(Debug, Serialize)]
pub struct CurrentVersion {
    version: Version,
    /// When it was written (its HLC's wall clock).
    at_ms: u64,
    shown: Shown,
}

/// A version the cloud accepted (it entered the feed).
#[derive(Debug, Serialize)]
pub struct Accepted {
    version: Version,
    at_ms: u64,
    shown: Shown,
    /// Its place in the feed.
    cursor: u64,
    /// The conflicts it won.
    conflicts: Vec<u64>,
}

/// A write that lost last-writer-wins, from the conflict log.
#[derive(Debug, Serialize)]
pub struct Lost {
    version: Version,
    at_ms: u64,
    shown: Shown,
    /// The conflict that recorded it.
    conflict: u64,
    /// The version it lost to.
    lost_to: Version,
}

/// How far back a history looked.
#[derive(Debug, Serialize)]
pub struct HistoryWindow {
    changes_scanned: u64,
    conflicts_scanned: u64,
    /// Whether both scans reached back to the first change and conflict.
    complete: bool,
}

/// What `/v1/history` answers.
#[derive(Debug, Serialize)]
pub struct History {
    store: String,
    key: String,
    current: Option<CurrentVersion>,
    /// Newest first.
    versions: Vec<Accepted>,
    /// Newest conflict first.
    lost: Vec<Lost>,
    window: HistoryWindow,
}

/// The versions of one key the cloud accepted among the most recent
/// `query.window` feed changes, and the writes to it that lost among as
/// many of the most recent conflicts. Reads only: what ingest writes
/// anyway, so a history costs ingest nothing.
pub async fn history<S: CloudStore>(
    store: &S,
    query: &HistoryQuery,
) -> Result<History, CloudStoreError> {
    let of_key = |s: &str, k: &str| s == query.store && k == query.key;

    let head = store.feed_head().await?;
    let feed_since = head.saturating_sub(query.window);
    let mut changes: VecDeque<Change> = VecDeque::new();
    let mut cursor = feed_since;
    while cursor < head {
        let page = store
            .feed(cursor, READ_PAGE.min((head - cursor) as usize))
            .await?;
        if page.next <= cursor {
            break;
        }
        for change in page.changes {
            if change.cursor <= head && of_key(&change.store, &change.key) {
                changes.push_front(change);
                changes.truncate(query.limit);
            }
        }
        cursor = page.next;
        tokio::task::yield_now().await;
    }
    let changes_scanned = cursor.min(head) - feed_since;

    let conflict_head = store.conflict_count().await?;
    let conflicts_since = conflict_head.saturating_sub(query.window);
    let mut conflicts: VecDeque<Conflict> = VecDeque::new();
    let mut cursor = conflicts_since;
    while cursor < conflict_head {
        let page = store
            .conflicts(cursor, READ_PAGE.min((conflict_head - cursor) as usize))
            .await?;
        if page.next <= cursor {
            break;
        }
        for conflict in page.items {
            if conflict.id <= conflict_head && of_key(&conflict.store, &conflict.key) {
                conflicts.push_front(conflict);
                conflicts.truncate(HISTORY_CONFLICTS_KEPT);
            }
        }
        cursor = page.next;
        tokio::task::yield_now().await;
    }
    let conflicts_scanned = cursor.min(conflict_head) - conflicts_since;

    let current = store
        .get(&query.store, &query.key)
        .await?
        .map(|(version, value)| CurrentVersion {
            at_ms: explain::wall_ms(&version),
            shown: explain::show(value.as_deref()),
            version,
        });
    let versions = changes
        .into_iter()
        .map(|change| Accepted {
            at_ms: explain::wall_ms(&change.version),
            shown: explain::show(change.value.as_deref()),
            cursor: change.cursor,
            conflicts: conflicts
                .iter()
                .rev()
                .filter(|c| c.winner == change.version)
                .map(|c| c.id)
                .collect(),
            version: change.version,
        })
        .collect();
    let lost = conflicts
        .into_iter()
        .take(query.limit)
        .map(|conflict| Lost {
            at_ms: explain::wall_ms(&conflict.loser),
            shown: explain::show(conflict.loser_value.as_deref()),
            conflict: conflict.id,
            version: conflict.loser,
            lost_to: conflict.winner,
        })
        .collect();
    Ok(History {
        store: query.store.clone(),
        key: query.key.clone(),
        current,
        versions,
        lost,
        window: HistoryWindow {
            changes_scanned,
            conflicts_scanned,
            complete: feed_since == 0 && conflicts_since == 0,
        },
    })
}

/// Longest note a review may carry, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;

/// What `POST /v1/conflicts/ID/review` may carry (nothing at all is fine).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    #[serde(default)]
    note: Option<String>,
}

/// The note in a review's body (empty body, `{}`, a blank note: none);
/// `Err` says what is wrong with it.
pub fn review_note(body: &[u8]) -> Result<Option<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: ReviewBody = serde_json::from_slice(body).map_err(|e| {
        format!("expected {{\"note\": \"text\"}} or nothing (who reviewed is the credential's, not the body's): {e}")
    })?;
    match parsed.note {
        Some(note) if note.len() > MAX_NOTE_BYTES => Err(format!(
            "a note is limited to {MAX_NOTE_BYTES} bytes, this one has {}",
            note.len()
        )),
        Some(note) if note.trim().is_empty() => Ok(None),
        note => Ok(note),
    }
}

/// Who `principal` is in a review, or `None` if it may not review
/// (readers are read-only).
pub fn reviewer(principal: &Principal) -> Option<String> {
    match principal {
        Principal::Admin => Some("operator".into()),
        Principal::Dev => Some("dev".into()),
        Principal::Holder(_) => principal
            .node()
            .and_then(|c| c.node.as_deref())
            .map(|node| format!("node:{node}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Enrol;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn conflict(
        id: u64,
        store: &str,
        key: &str,
        winner: (&str, u64, &str),
        loser: (&str, u64, &str),
    ) -> Conflict {
        Conflict {
            id,
            store: store.into(),
            key: key.into(),
            winner: Version {
                hlc: winner.1 << 16,
                node: winner.0.into(),
            },
            winner_value: Some(winner.2.as_bytes().to_vec()),
            loser: Version {
                hlc: loser.1 << 16,
                node: loser.0.into(),
            },
            loser_value: Some(loser.2.as_bytes().to_vec()),
        }
    }

    #[test]
    fn filters_parse_and_bad_values_say_what_is_wrong() {
        let filter = Filter::parse(&params(&[
            ("store", "@kv"),
            ("prefix", "user/"),
            ("node", "edge-a"),
            ("kind", "divergent"),
            ("reviewed", "false"),
        ]))
        .unwrap();
        let c = conflict(1, "@kv", "user/1", ("edge-b", 20, "x"), ("edge-a", 10, "y"));
        assert!(filter.matches(&c, false));
        assert!(!filter.matches(&c, true), "reviewed");
        let mut other = c.clone();
        other.key = "order/1".into();
        assert!(!filter.matches(&other, false), "prefix");
        let mut benign = c.clone();
        benign.loser_value = benign.winner_value.clone();
        assert!(!filter.matches(&benign, false), "kind");
        let mut elsewhere = c.clone();
        elsewhere.store = "@kv2".into();
        assert!(!filter.matches(&elsewhere, false), "store is exact");
        let mut strangers = c.clone();
        strangers.winner.node = "edge-c".into();
        strangers.loser.node = "edge-d".into();
        assert!(!filter.matches(&strangers, false), "node is either writer");

        let none = Filter::parse(&params(&[("store", ""), ("kind", "")])).unwrap();
        assert!(none.is_empty(), "an empty field is no filter");
        assert!(none.matches(&strangers, true));
        let bad = Filter::parse(&params(&[("kind", "lost")])).unwrap_err();
        assert!(
            bad.contains("benign or divergent") && bad.contains("lost"),
            "{bad}"
        );
        let bad = Filter::parse(&params(&[("reviewed", "yes")])).unwrap_err();
        assert!(bad.contains("true or false"), "{bad}");
    }

    #[test]
    fn stats_queries_bound_their_bucket_and_window() {
        let q = StatsQuery::parse(&params(&[])).unwrap();
        assert_eq!((q.bucket_s, q.window), (60, STATS_WINDOW));
        let q = StatsQuery::parse(&params(&[("window", "999999999")])).unwrap();
        assert_eq!(q.window, STATS_WINDOW);
        assert!(StatsQuery::parse(&params(&[("bucket_s", "0")])).is_err());
        assert!(StatsQuery::parse(&params(&[("bucket_s", "-5")])).is_err());
        assert!(StatsQuery::parse(&params(&[("bucket_s", "31536001")])).is_err());
        assert!(StatsQuery::parse(&params(&[("kind", "x")])).is_err());
    }

    #[test]
    fn stats_count_per_store_per_sorted_pair_and_per_bucket_of_the_later_write() {
        let mut tally = Tally::default();
        // Bucket of 60 s: 120_000 ..< 180_000 ms, and 180_000 on.
        let all = [
            conflict(
                1,
                "@kv",
                "a",
                ("edge-b", 130_000, "x"),
                ("edge-a", 100_000, "y"),
            ),
            conflict(
                2,
                "@kv",
                "b",
                ("edge-a", 150_000, "z"),
                ("edge-b", 179_999, "z"),
            ),
            conflict(3, "@kv2", "c", ("edge-c", 180_000, "x"), ("edge-a", 1, "x")),
        ];
        for (i, c) in all.iter().enumerate() {
            tally.add(c, i == 0, 60_000);
        }
        let stats = tally.finish(60, 3, true);
        assert_eq!(
            (stats.total, stats.benign, stats.divergent, stats.reviewed),
            (3, 2, 1, 1)
        );
        assert_eq!(
            stats.by_store,
            [
                StoreCount {
                    store: "@kv".into(),
                    count: 2,
                    benign: 1,
                    divergent: 1
                },
                StoreCount {
                    store: "@kv2".into(),
                    count: 1,
                    benign: 1,
                    divergent: 0
                },
            ]
        );
        assert_eq!(
            stats.by_pair[0],
            PairCount {
                nodes: ["edge-a".into(), "edge-b".into()],
                count: 2
            },
            "one pair whichever won"
        );
        assert_eq!(stats.by_pair[1].nodes, ["edge-a", "edge-c"]);
        // Conflict 2's time is its loser's (the later write).
        assert_eq!(
            stats.over_time,
            [
                Bucket {
                    at_ms: 120_000,
                    count: 2
                },
                Bucket {
                    at_ms: 180_000,
                    count: 1
                },
            ]
        );
        assert_eq!(bucket_start(59_999, 60_000), 0);
        assert_eq!(bucket_start(60_000, 60_000), 60_000);
    }

    #[test]
    fn history_queries_need_store_and_key_and_bound_limit_and_window() {
        assert!(HistoryQuery::parse(&params(&[("store", "s")])).is_err());
        let q = HistoryQuery::parse(&params(&[("store", "s"), ("key", "")])).unwrap();
        assert_eq!((q.limit, q.window), (HISTORY_LIMIT, HISTORY_WINDOW));
        let q = HistoryQuery::parse(&params(&[
            ("store", "s"),
            ("key", "k"),
            ("limit", "100000"),
            ("window", "100000000"),
        ]))
        .unwrap();
        assert_eq!((q.limit, q.window), (MAX_HISTORY_LIMIT, MAX_HISTORY_WINDOW));
        assert!(
            HistoryQuery::parse(&params(&[("store", "s"), ("key", "k"), ("limit", "x")])).is_err()
        );
    }

    #[test]
    fn a_review_body_is_a_note_or_nothing_and_who_is_the_credential() {
        assert_eq!(review_note(b""), Ok(None));
        assert_eq!(review_note(b" \n"), Ok(None));
        assert_eq!(review_note(b"{}"), Ok(None));
        assert_eq!(review_note(br#"{"note": "  "}"#), Ok(None));
        assert_eq!(
            review_note(br#"{"note": "checked with the shop"}"#),
            Ok(Some("checked with the shop".into()))
        );
        assert!(review_note(br#"{"by": "someone else"}"#).is_err());
        assert!(review_note(b"note").is_err());
        let long = format!(r#"{{"note": "{}"}}"#, "n".repeat(MAX_NOTE_BYTES + 1));
        assert!(review_note(long.as_bytes()).unwrap_err().contains("1024"));

        assert_eq!(reviewer(&Principal::Admin).as_deref(), Some("operator"));
        assert_eq!(reviewer(&Principal::Dev).as_deref(), Some("dev"));
        let (node, _) = Enrol::node("edge-a").issue().unwrap();
        assert_eq!(
            reviewer(&Principal::Holder(node)).as_deref(),
            Some("node:edge-a")
        );
        let (reader, _) = Enrol {
            role: crate::credentials::Role::Reader,
            node: None,
            stores: None,
            topics: None,
            label: "dash".into(),
        }
        .issue()
        .unwrap();
        assert_eq!(reviewer(&Principal::Holder(reader)), None);
    }
}
