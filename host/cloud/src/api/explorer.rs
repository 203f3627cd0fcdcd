//! The conflict explorer over any [`CloudStore`]: `/v1/conflicts` with
//! filters and reviews, `/v1/conflicts/stats`, `/v1/history` and the review
//! itself. Everything here reads what ingest already writes (the conflict
//! log, the feed), bounded by a scan budget or window, so none of it adds
//! to the cost of an ingest; the reviews are a table of their own.
//!
//! What bounds each read:
//! - an answer shows at most [`MAX_PAGE_BYTES`] of values' displays
//!   (`explain::Shown` text); past it a list stops (`next` says where), a
//!   history stops listing (`truncated`), and a single value larger than
//!   the whole budget is shown cut (`cut`, with its `full_bytes`);
//! - a windowed scan (stats, history) walks its window newest first, one
//!   at a time per replica, and stops at [`ScanLimits`] (value bytes read,
//!   time), answering `complete: false` with what it covered;
//! - a history holds, while it scans, the metadata of the writes it keeps
//!   and their values only within [`KEPT_VALUE_BYTES`].

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

/// Most bytes of values a history holds while it scans (besides the one
/// newest value it always holds, however large): the writes it keeps past
/// them keep only their metadata, and the answer lists none of those (it
/// could not show them within [`MAX_PAGE_BYTES`] anyway, bar values whose
/// display is smaller than they are).
pub const KEPT_VALUE_BYTES: usize = MAX_PAGE_BYTES;

/// Most bytes of values (both of a conflict's) a windowed scan reads, by
/// default: 100,000 records of up to 16 MiB each could be terabytes.
pub const SCAN_READ_BYTES: u64 = 256 * 1024 * 1024;

/// Longest a windowed scan reads, by default, while it holds the one scan
/// turn every other stats or history request waits for.
pub const SCAN_TIME: Duration = Duration::from_secs(5);

/// Records read from the store at a time by the windowed scans, at most;
/// the task yields between reads, so a scan never holds a worker thread
/// for long.
const READ_PAGE: usize = 2_000;

/// The first chunk a windowed scan reads whatever its budget (the most
/// recent records); each next one is twice as long, up to [`READ_PAGE`].
const FIRST_CHUNK: u64 = 16;

/// Longest bucket stats may count in (a year).
const MAX_BUCKET_S: u64 = 365 * 24 * 3600;

/// Longest a stats or history request waits for the scan before it.
const SCAN_WAIT: Duration = Duration::from_secs(10);

/// One windowed scan (stats, history) at a time per replica: each may
/// read up to [`SCAN_READ_BYTES`] for up to [`SCAN_TIME`], and ingest
/// shares the cores with them.
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

/// What one windowed scan may spend before it answers with what it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Bytes of values in the records read (read, kept or not).
    pub read_bytes: u64,
    /// Time from the scan's start.
    pub time: Duration,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            read_bytes: SCAN_READ_BYTES,
            time: SCAN_TIME,
        }
    }
}

/// What is left of [`ScanLimits`] while a scan runs.
#[derive(Debug)]
struct Budget {
    bytes_left: u64,
    deadline: tokio::time::Instant,
}

impl Budget {
    /// `part` (0 to 1) of `limits`, from `start`.
    fn part(limits: &ScanLimits, start: tokio::time::Instant, part: f64) -> Self {
        let time =
            Duration::try_from_secs_f64(limits.time.as_secs_f64() * part).unwrap_or(Duration::MAX);
        Self {
            // Saturates: `u64::MAX` is no limit.
            bytes_left: (limits.read_bytes as f64 * part) as u64,
            deadline: start
                .checked_add(time)
                .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600)),
        }
    }

    fn spend(&mut self, bytes: u64) {
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
    }

    fn spent(&self) -> bool {
        self.bytes_left == 0 || tokio::time::Instant::now() >= self.deadline
    }
}

/// A log a windowed scan walks: dense places from 1 (the feed's cursors,
/// conflict ids), read forward a page at a time.
trait Log {
    type Item;
    /// Up to `limit` records after `since`, and the last place read.
    fn page(
        &self,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Self::Item>, u64), CloudStoreError>> + Send;
    /// A record's place.
    fn place(item: &Self::Item) -> u64;
    /// The bytes of values a record carries: what reading it cost.
    fn value_bytes(item: &Self::Item) -> u64;
}

fn len_of(value: Option<&Vec<u8>>) -> u64 {
    value.map_or(0, |v| v.len() as u64)
}

/// The feed.
struct FeedLog<'a, S>(&'a S);

impl<S: CloudStore> Log for FeedLog<'_, S> {
    type Item = Change;
    async fn page(&self, since: u64, limit: usize) -> Result<(Vec<Change>, u64), CloudStoreError> {
        let page = self.0.feed(since, limit).await?;
        Ok((page.changes, page.next))
    }
    fn place(change: &Change) -> u64 {
        change.cursor
    }
    fn value_bytes(change: &Change) -> u64 {
        len_of(change.value.as_ref())
    }
}

/// The conflict log.
struct ConflictLog<'a, S>(&'a S);

impl<S: CloudStore> Log for ConflictLog<'_, S> {
    type Item = Conflict;
    async fn page(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<Conflict>, u64), CloudStoreError> {
        let page = self.0.conflicts(since, limit).await?;
        Ok((page.items, page.next))
    }
    fn place(conflict: &Conflict) -> u64 {
        conflict.id
    }
    fn value_bytes(conflict: &Conflict) -> u64 {
        len_of(conflict.winner_value.as_ref()) + len_of(conflict.loser_value.as_ref())
    }
}

/// The conflict log, each record with whether it was reviewed (which ids
/// were, read per page: no review itself is read).
struct MarkedLog<'a, S>(&'a S);

impl<S: CloudStore> Log for MarkedLog<'_, S> {
    type Item = (Conflict, bool);
    async fn page(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<(Conflict, bool)>, u64), CloudStoreError> {
        let page = self.0.conflicts(since, limit).await?;
        let reviewed = self.0.reviewed_ids(since, page.next).await?;
        let items = page
            .items
            .into_iter()
            .map(|c| {
                let marked = reviewed.contains(&c.id);
                (c, marked)
            })
            .collect();
        Ok((items, page.next))
    }
    fn place(item: &(Conflict, bool)) -> u64 {
        item.0.id
    }
    fn value_bytes(item: &(Conflict, bool)) -> u64 {
        ConflictLog::<S>::value_bytes(&item.0)
    }
}

/// What a walk does with the records it reads.
trait Gather<T> {
    /// What one chunk's records make before the chunk is merged.
    type Chunk;
    /// An empty chunk.
    fn chunk(&self) -> Self::Chunk;
    /// Adds a record of the chunk (read oldest first).
    fn add(&self, chunk: &mut Self::Chunk, item: T);
    /// Takes a whole chunk, older than every one before it; `false`:
    /// nothing older is wanted.
    fn merge(&mut self, chunk: Self::Chunk) -> bool;
}

/// Walks places `since + 1 ..= head` of `log` newest first, in chunks
/// (each read oldest first, then merged whole), until `gather` wants
/// nothing older or `budget` is spent. Returns the floor: the walk
/// covered `floor + 1 ..= head`. The first chunk (the [`FIRST_CHUNK`]
/// most recent records) is read whole whatever the budget; a later one
/// the budget cuts short is dropped, so what was covered is always the
/// most recent records, without a hole.
async fn walk_back<L: Log, G: Gather<L::Item>>(
    log: &L,
    gather: &mut G,
    since: u64,
    head: u64,
    budget: &mut Budget,
) -> Result<u64, CloudStoreError> {
    let (mut floor, mut size) = (head, FIRST_CHUNK);
    while floor > since {
        let first = floor == head;
        let lo = floor.saturating_sub(size).max(since);
        let mut chunk = gather.chunk();
        let mut cursor = lo;
        while cursor < floor {
            if !first && budget.spent() {
                return Ok(floor);
            }
            let want = usize::try_from(floor - cursor).unwrap_or(usize::MAX);
            let (items, next) = log.page(cursor, want).await?;
            for item in items {
                if L::place(&item) <= floor {
                    budget.spend(L::value_bytes(&item));
                    gather.add(&mut chunk, item);
                }
            }
            if next <= cursor {
                // Nothing more below the head: the rest of the chunk is empty.
                break;
            }
            cursor = next;
            tokio::task::yield_now().await;
        }
        floor = lo;
        if !gather.merge(chunk) || budget.spent() {
            break;
        }
        size = (size * 2).min(READ_PAGE as u64);
    }
    Ok(floor)
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

/// What a conflict takes in the JSON answer: its values' displays, as
/// measured (exactly, without rendering them), both values again in
/// base64, and about what the fixed fields take.
fn listed_size(conflict: &Conflict) -> usize {
    let base64 = |value: &Option<Vec<u8>>| value.as_ref().map_or(0, |v| v.len().div_ceil(3) * 4);
    explain::shown_size(conflict)
        + base64(&conflict.winner_value)
        + base64(&conflict.loser_value)
        + conflict.key.len()
        + conflict.store.len()
        + 400
}

/// Up to `limit` conflicts after `since` that `principal` may see and
/// `filter` keeps, scanning at most [`SCAN_BUDGET`] records and answering
/// at most about [`MAX_PAGE_BYTES`] (at least one item; if that one alone
/// shows more than [`MAX_PAGE_BYTES`], its values are shown cut to them).
/// `next` is the last record scanned, kept or not, so a client paging on
/// never reads a record twice and always moves.
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
                    // Whole, bar a first item that shows more than a page.
                    explained: explain::explain_within(conflict, MAX_PAGE_BYTES),
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

/// What `/v1/conflicts/stats` answers. Every count is of conflicts the
/// caller may see (a node: in its stores) that the filter keeps.
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
    /// How many conflict records were scanned: the most recent ones, of
    /// every store (ids are cloud-wide), counted or not. Not a count of
    /// conflicts: nothing here counts what the caller may not see.
    window: u64,
    /// Whether that reached back to the first conflict: nothing older was
    /// left out (the window and the scan's budget covered everything).
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

    /// Adds `other`'s counts to these.
    fn merge(&mut self, other: Tally) {
        self.total += other.total;
        self.benign += other.benign;
        self.divergent += other.divergent;
        self.reviewed += other.reviewed;
        for (store, line) in other.by_store {
            let mine = self.by_store.entry(store).or_insert_with(|| StoreCount {
                store: line.store.clone(),
                ..StoreCount::default()
            });
            mine.count += line.count;
            mine.benign += line.benign;
            mine.divergent += line.divergent;
        }
        for (nodes, count) in other.by_pair {
            *self.by_pair.entry(nodes).or_default() += count;
        }
        for (at, count) in other.over_time {
            *self.over_time.entry(at).or_default() += count;
        }
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

/// Counts what a principal may see and a filter keeps, a chunk at a time.
struct Counting<'a> {
    principal: &'a Principal,
    filter: &'a Filter,
    bucket_ms: u64,
    tally: Tally,
}

impl Gather<(Conflict, bool)> for Counting<'_> {
    type Chunk = Tally;
    fn chunk(&self) -> Tally {
        Tally::default()
    }
    fn add(&self, chunk: &mut Tally, (conflict, reviewed): (Conflict, bool)) {
        if self.principal.may_see(&conflict.store) && self.filter.matches(&conflict, reviewed) {
            chunk.add(&conflict, reviewed, self.bucket_ms);
        }
    }
    fn merge(&mut self, chunk: Tally) -> bool {
        self.tally.merge(chunk);
        true
    }
}

/// Counts of the most recent `query.window` conflicts that `principal`
/// may see and the filter keeps, newest first until `limits` are spent.
/// Reads no review, only which ids were reviewed.
pub async fn stats<S: CloudStore>(
    store: &S,
    principal: &Principal,
    query: &StatsQuery,
    limits: &ScanLimits,
) -> Result<Stats, CloudStoreError> {
    let mut budget = Budget::part(limits, tokio::time::Instant::now(), 1.0);
    // Ids are dense from 1: the last `window` ones are after this.
    let head = store.conflict_count().await?;
    let since = head.saturating_sub(query.window);
    let mut counting = Counting {
        principal,
        filter: &query.filter,
        bucket_ms: query.bucket_s * 1000,
        tally: Tally::default(),
    };
    let floor = walk_back(&MarkedLog(store), &mut counting, since, head, &mut budget).await?;
    Ok(counting
        .tally
        .finish(query.bucket_s, head - floor, floor == 0))
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

/// How far back a history looked, and whether it listed all it found.
#[derive(Debug, Serialize)]
pub struct HistoryWindow {
    changes_scanned: u64,
    conflicts_scanned: u64,
    /// Whether both scans reached back to the first change and conflict
    /// (not stopped by the window, the limit or the scan's budget).
    complete: bool,
    /// Whether the answer's byte budget ([`MAX_PAGE_BYTES`] of shown
    /// values) left out older versions or lost writes that were found.
    truncated: bool,
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

/// A write's value as a history holds it while it scans.
#[derive(Debug)]
enum Held {
    /// The value (`None`: a delete).
    Value(Option<Vec<u8>>),
    /// Let go: the values held had reached [`KEPT_VALUE_BYTES`].
    Dropped,
}

impl Held {
    /// The value, if held (`Some(None)`: a delete).
    fn kept(&self) -> Option<Option<&[u8]>> {
        match self {
            Held::Value(value) => Some(value.as_deref()),
            Held::Dropped => None,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Held::Value(Some(value)) => value.len(),
            _ => 0,
        }
    }
}

/// A write a history keeps: what it lists of it, and its value.
#[derive(Debug)]
struct Kept<M> {
    meta: M,
    value: Held,
}

/// One chunk's writes of the key, oldest first: at most `cap`, the
/// newest holding their values within [`KEPT_VALUE_BYTES`] (the newest at
/// least), the older ones dropping theirs.
#[derive(Debug)]
struct Found<M> {
    items: VecDeque<Kept<M>>,
    cap: usize,
    /// Bytes of the values held.
    held: usize,
    /// The oldest item still holding its value (the ones after it do).
    first_held: usize,
}

impl<M> Found<M> {
    fn push(&mut self, meta: M, value: Option<Vec<u8>>) {
        let value = Held::Value(value);
        self.held += value.bytes();
        self.items.push_back(Kept { meta, value });
        if self.items.len() > self.cap {
            let oldest = self.items.pop_front().expect("over the cap");
            self.held -= oldest.value.bytes();
            self.first_held = self.first_held.saturating_sub(1);
        }
        while self.held > KEPT_VALUE_BYTES && self.first_held + 1 < self.items.len() {
            let item = &mut self.items[self.first_held];
            self.held -= item.value.bytes();
            item.value = Held::Dropped;
            self.first_held += 1;
        }
    }
}

/// The writes of one key a history keeps, newest first: at most `cap`,
/// the first `valued` of them with their values, while those fit in
/// [`KEPT_VALUE_BYTES`] (the newest always); every one after the first
/// without its value drops its value too.
#[derive(Debug)]
struct Keeper<M> {
    items: Vec<Kept<M>>,
    cap: usize,
    valued: usize,
    /// Bytes of the values held, and how many hold one.
    held: usize,
    holding: usize,
    /// Whether values are still kept (no value was dropped yet).
    keeping: bool,
}

impl<M> Keeper<M> {
    fn new(cap: usize, valued: usize) -> Self {
        Self {
            items: Vec::new(),
            cap,
            valued,
            held: 0,
            holding: 0,
            keeping: true,
        }
    }

    fn found(&self) -> Found<M> {
        Found {
            items: VecDeque::new(),
            cap: self.cap,
            held: 0,
            first_held: 0,
        }
    }

    /// Takes a chunk's writes, all older than the ones kept; `false` once
    /// full.
    fn merge(&mut self, found: Found<M>) -> bool {
        for Kept { meta, value } in found.items.into_iter().rev() {
            if self.items.len() == self.cap {
                return false;
            }
            let bytes = value.bytes();
            let keep = self.keeping
                && matches!(value, Held::Value(_))
                && self.holding < self.valued
                && (self.holding == 0 || self.held + bytes <= KEPT_VALUE_BYTES);
            let value = if keep {
                self.held += bytes;
                self.holding += 1;
                value
            } else {
                self.keeping = false;
                Held::Dropped
            };
            self.items.push(Kept { meta, value });
        }
        self.items.len() < self.cap
    }
}

/// What a history lists of an accepted version.
#[derive(Debug)]
struct ChangeMeta {
    cursor: u64,
    version: Version,
}

/// What a history lists of a lost write, and links versions with.
#[derive(Debug)]
struct LostMeta {
    id: u64,
    winner: Version,
    loser: Version,
}

/// Keeps the writes of one key.
struct OfKey<'a, M> {
    store: &'a str,
    key: &'a str,
    keeper: Keeper<M>,
}

impl Gather<Change> for OfKey<'_, ChangeMeta> {
    type Chunk = Found<ChangeMeta>;
    fn chunk(&self) -> Found<ChangeMeta> {
        self.keeper.found()
    }
    fn add(&self, found: &mut Found<ChangeMeta>, change: Change) {
        if change.store == self.store && change.key == self.key {
            let meta = ChangeMeta {
                cursor: change.cursor,
                version: change.version,
            };
            found.push(meta, change.value);
        }
    }
    fn merge(&mut self, found: Found<ChangeMeta>) -> bool {
        self.keeper.merge(found)
    }
}

impl Gather<Conflict> for OfKey<'_, LostMeta> {
    type Chunk = Found<LostMeta>;
    fn chunk(&self) -> Found<LostMeta> {
        self.keeper.found()
    }
    fn add(&self, found: &mut Found<LostMeta>, conflict: Conflict) {
        if conflict.store == self.store && conflict.key == self.key {
            let meta = LostMeta {
                id: conflict.id,
                winner: conflict.winner,
                loser: conflict.loser,
            };
            found.push(meta, conflict.loser_value);
        }
    }
    fn merge(&mut self, found: Found<LostMeta>) -> bool {
        self.keeper.merge(found)
    }
}

/// What an answer may still show, in bytes of shown text.
#[derive(Debug)]
struct Room {
    left: usize,
    /// Something found was left out, or shown cut.
    truncated: bool,
}

impl Room {
    fn new() -> Self {
        Self {
            left: MAX_PAGE_BYTES,
            truncated: false,
        }
    }

    /// `value` shown whole if it fits what is left; cut to what is left if
    /// it could not fit even an empty answer; else `None`: the answer is
    /// full, and lists nothing more.
    fn show(&mut self, value: Option<&[u8]>) -> Option<Shown> {
        if self.truncated {
            return None;
        }
        let measured = explain::measure(value);
        if measured.size() <= self.left {
            self.left -= measured.size();
            return Some(measured.render(usize::MAX));
        }
        self.truncated = true;
        (measured.size() > MAX_PAGE_BYTES && self.left > 0).then(|| {
            let shown = measured.render(self.left);
            self.left = 0;
            shown
        })
    }
}

/// The versions of one key the cloud accepted among the most recent
/// `query.window` feed changes, and the writes to it that lost among as
/// many of the most recent conflicts, each scan newest first within its
/// share of `limits` (half for the feed, the rest for conflicts). Lists
/// newest first (both lists merged by version) what fits in
/// [`MAX_PAGE_BYTES`] of shown values. Reads only: what ingest writes
/// anyway, so a history costs ingest nothing.
pub async fn history<S: CloudStore>(
    store: &S,
    query: &HistoryQuery,
    limits: &ScanLimits,
) -> Result<History, CloudStoreError> {
    let start = tokio::time::Instant::now();
    let mut budget = Budget::part(limits, start, 0.5);
    let head = store.feed_head().await?;
    let feed_since = head.saturating_sub(query.window);
    let mut changes = OfKey {
        store: &query.store,
        key: &query.key,
        keeper: Keeper::new(query.limit, query.limit),
    };
    let feed_floor =
        walk_back(&FeedLog(store), &mut changes, feed_since, head, &mut budget).await?;

    let spent = (limits.read_bytes / 2).saturating_sub(budget.bytes_left);
    let mut budget = Budget::part(limits, start, 1.0);
    budget.spend(spent);
    let conflict_head = store.conflict_count().await?;
    let conflicts_since = conflict_head.saturating_sub(query.window);
    let mut conflicts = OfKey {
        store: &query.store,
        key: &query.key,
        keeper: Keeper::new(HISTORY_CONFLICTS_KEPT, query.limit),
    };
    let conflicts_floor = walk_back(
        &ConflictLog(store),
        &mut conflicts,
        conflicts_since,
        conflict_head,
        &mut budget,
    )
    .await?;
    let (changes, conflicts) = (changes.keeper.items, conflicts.keeper.items);

    let mut room = Room::new();
    let current = store
        .get(&query.store, &query.key)
        .await?
        .map(|(version, value)| CurrentVersion {
            at_ms: explain::wall_ms(&version),
            shown: room
                .show(value.as_deref())
                .expect("the first value shown always has room"),
            version,
        });
    let won = |version: &Version| -> Vec<u64> {
        let mut ids: Vec<u64> = conflicts
            .iter()
            .filter(|c| c.meta.winner == *version)
            .map(|c| c.meta.id)
            .collect();
        ids.sort_unstable();
        ids
    };
    let (mut versions, mut lost) = (Vec::new(), Vec::new());
    let mut next_version = changes.iter().peekable();
    let mut next_lost = conflicts.iter().take(query.limit).peekable();
    loop {
        // Newest first across both lists, by version.
        let take_version = match (next_version.peek(), next_lost.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(v), Some(l)) => {
                (v.meta.version.hlc, &v.meta.version.node) >= (l.meta.loser.hlc, &l.meta.loser.node)
            }
        };
        if take_version {
            let Kept { meta, value } = next_version.next().expect("peeked");
            let Some(shown) = value.kept().and_then(|v| room.show(v)) else {
                room.truncated = true;
                break;
            };
            versions.push(Accepted {
                at_ms: explain::wall_ms(&meta.version),
                shown,
                cursor: meta.cursor,
                conflicts: won(&meta.version),
                version: meta.version.clone(),
            });
        } else {
            let Kept { meta, value } = next_lost.next().expect("peeked");
            let Some(shown) = value.kept().and_then(|v| room.show(v)) else {
                room.truncated = true;
                break;
            };
            lost.push(Lost {
                at_ms: explain::wall_ms(&meta.loser),
                shown,
                conflict: meta.id,
                version: meta.loser.clone(),
                lost_to: meta.winner.clone(),
            });
        }
        if room.truncated {
            // A value shown cut: nothing after it.
            break;
        }
    }
    Ok(History {
        store: query.store.clone(),
        key: query.key.clone(),
        current,
        versions,
        lost,
        window: HistoryWindow {
            changes_scanned: head - feed_floor,
            conflicts_scanned: conflict_head - conflicts_floor,
            complete: feed_floor == 0 && conflicts_floor == 0,
            truncated: room.truncated,
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
/// `Err` says what is wrong with it. A note holds no control characters
/// but newlines and tabs (PostgreSQL's `TEXT` refuses NUL; the rest only
/// hide what a note says), so every backend stores what another would.
pub fn review_note(body: &[u8]) -> Result<Option<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: ReviewBody = serde_json::from_slice(body).map_err(|e| {
        format!("expected {{\"note\": \"text\"}} or nothing (who reviewed is the credential's, not the body's): {e}")
    })?;
    let Some(note) = parsed.note else {
        return Ok(None);
    };
    if note.len() > MAX_NOTE_BYTES {
        return Err(format!(
            "a note is limited to {MAX_NOTE_BYTES} bytes, this one has {}",
            note.len()
        ));
    }
    if let Some((at, c)) = note
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(format!(
            "a note may hold no control characters but newline and tab: character {at} is U+{:04X}",
            u32::from(c)
        ));
    }
    Ok((!note.trim().is_empty()).then_some(note))
}

/// Who `principal` is in a review, or `None` if it may not review
/// (readers are read-only).
pub fn reviewer(principal: &Principal) -> Option<String> {
    match principal {
        Principal::Admin => Some(explain::OPERATOR.into()),
        Principal::Dev => Some("dev".into()),
        Principal::Holder(_) => principal
            .node()
            .and_then(|c| c.node.as_deref())
            .map(|node| format!("node:{node}")),
    }
}

/// Why a principal that may review may not review one conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTheirs {
    /// A node asked about a conflict in a store it may not see: answered
    /// as a missing id is, so a node learns nothing of other stores.
    Hidden,
    /// A node wrote neither side: its review would hide, from everyone, a
    /// conflict between others (a review stands).
    NotAWriter,
}

/// Whether `principal` (one [`reviewer`] names) may review `conflict`: the
/// operator and the dev token any; a node only one it wrote a side of, in
/// a store it may see.
pub fn may_review(principal: &Principal, conflict: &Conflict) -> Result<(), NotTheirs> {
    let Some(credential) = principal.node() else {
        return Ok(());
    };
    if !credential.may_write(&conflict.store) {
        return Err(NotTheirs::Hidden);
    }
    match credential.node.as_deref() {
        Some(node) if node == conflict.winner.node || node == conflict.loser.node => Ok(()),
        _ => Err(NotTheirs::NotAWriter),
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
        // Newlines and tabs are a note's; other control characters are
        // refused (PostgreSQL's TEXT refuses NUL, sled would keep it).
        assert_eq!(
            review_note(br#"{"note": "line one\n\tline two, caf\u00e9"}"#),
            Ok(Some("line one\n\tline two, café".into()))
        );
        for bad in [
            r#""a\u0000b""#,
            r#""a\rb""#,
            r#""\u001b[31m""#,
            r#""\u0085""#,
            r#""\u007f""#,
        ] {
            let body = format!(r#"{{"note": {bad}}}"#);
            let e = review_note(body.as_bytes()).unwrap_err();
            assert!(e.contains("control characters"), "{bad}: {e}");
        }
        assert!(
            review_note(br#"{"note": "ok\u0000"}"#)
                .unwrap_err()
                .contains("character 2 is U+0000")
        );

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

    #[test]
    fn a_node_reviews_only_conflicts_it_wrote_a_side_of_and_sees_no_other_stores() {
        let c = conflict(1, "@kv", "k", ("edge-b", 20, "x"), ("edge-a", 10, "y"));
        let node = |id: &str, stores: &[&str]| {
            let (credential, _) = Enrol {
                stores: Some(stores.iter().map(|s| s.to_string()).collect()),
                ..Enrol::node(id)
            }
            .issue()
            .unwrap();
            Principal::Holder(credential)
        };
        assert_eq!(may_review(&node("edge-a", &["@kv"]), &c), Ok(()), "loser");
        assert_eq!(may_review(&node("edge-b", &["@kv"]), &c), Ok(()), "winner");
        assert_eq!(
            may_review(&node("edge-c", &["@kv"]), &c),
            Err(NotTheirs::NotAWriter)
        );
        // Another store's conflict is as good as missing, even its writer's.
        assert_eq!(
            may_review(&node("edge-a", &["@other"]), &c),
            Err(NotTheirs::Hidden)
        );
        assert_eq!(may_review(&Principal::Admin, &c), Ok(()));
        assert_eq!(may_review(&Principal::Dev, &c), Ok(()));
    }

    /// A log of `sizes.len()` records, record `i + 1` carrying `sizes[i]`
    /// bytes, read at most `page` at a time; counts its reads.
    struct TestLog {
        sizes: Vec<u64>,
        page: usize,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl Log for TestLog {
        type Item = (u64, u64);
        fn page(
            &self,
            since: u64,
            limit: usize,
        ) -> impl Future<Output = Result<(Vec<(u64, u64)>, u64), CloudStoreError>> + Send {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let items: Vec<(u64, u64)> = (since + 1..=self.sizes.len() as u64)
                .take(limit.min(self.page))
                .map(|id| (id, self.sizes[id as usize - 1]))
                .collect();
            let next = items.last().map_or(since, |item| item.0);
            async move { Ok((items, next)) }
        }
        fn place(item: &(u64, u64)) -> u64 {
            item.0
        }
        fn value_bytes(item: &(u64, u64)) -> u64 {
            item.1
        }
    }

    /// Records the ids of each merged chunk; wants at most `want` ids.
    struct Chunks {
        merged: Vec<Vec<u64>>,
        want: usize,
    }

    impl Gather<(u64, u64)> for Chunks {
        type Chunk = Vec<u64>;
        fn chunk(&self) -> Vec<u64> {
            Vec::new()
        }
        fn add(&self, chunk: &mut Vec<u64>, item: (u64, u64)) {
            chunk.push(item.0);
        }
        fn merge(&mut self, chunk: Vec<u64>) -> bool {
            self.merged.push(chunk);
            self.merged.iter().map(Vec::len).sum::<usize>() < self.want
        }
    }

    fn budget(bytes: u64) -> Budget {
        Budget::part(
            &ScanLimits {
                read_bytes: bytes,
                time: Duration::from_secs(3600),
            },
            tokio::time::Instant::now(),
            1.0,
        )
    }

    #[tokio::test]
    async fn a_walk_reads_newest_first_and_stops_at_its_budget_without_a_hole() {
        let log = TestLog {
            sizes: vec![10; 100],
            page: 7,
            reads: Default::default(),
        };
        let walk = async |since: u64, bytes: u64, want: usize| {
            let mut chunks = Chunks {
                merged: Vec::new(),
                want,
            };
            let floor = walk_back(&log, &mut chunks, since, 100, &mut budget(bytes))
                .await
                .unwrap();
            (floor, chunks.merged)
        };
        // Everything: chunks of 16, 32, 52 from the head back, each in
        // order, read a page of 7 at a time.
        let (floor, merged) = walk(0, u64::MAX, usize::MAX).await;
        assert_eq!(floor, 0);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0], (85..=100).collect::<Vec<_>>());
        assert_eq!(merged[1], (53..=84).collect::<Vec<_>>());
        assert_eq!(merged[2], (1..=52).collect::<Vec<_>>());
        // A window.
        let (floor, merged) = walk(90, u64::MAX, usize::MAX).await;
        assert_eq!((floor, merged), (90, vec![(91..=100).collect::<Vec<_>>()]));
        // No budget at all: the first chunk still, whole.
        let (floor, merged) = walk(0, 0, usize::MAX).await;
        assert_eq!((floor, merged.len()), (84, 1));
        // A budget that runs out inside the second chunk: that chunk is
        // dropped, so what was covered has no hole.
        let (floor, merged) = walk(0, 16 * 10 + 50, usize::MAX).await;
        assert_eq!((floor, merged.len()), (84, 1));
        // Enough for two chunks exactly.
        let (floor, merged) = walk(0, 48 * 10 + 1, usize::MAX).await;
        assert_eq!((floor, merged.len()), (52, 2));
        // The gatherer has what it wants: no older chunk is read.
        let before = log.reads.load(std::sync::atomic::Ordering::Relaxed);
        let (floor, merged) = walk(0, u64::MAX, 10).await;
        assert_eq!((floor, merged.len()), (84, 1));
        assert_eq!(
            log.reads.load(std::sync::atomic::Ordering::Relaxed) - before,
            3,
            "16 records, 7 a page"
        );
    }

    #[tokio::test]
    async fn a_walk_stops_at_its_deadline() {
        let log = TestLog {
            sizes: vec![1; 1000],
            page: 1000,
            reads: Default::default(),
        };
        let mut chunks = Chunks {
            merged: Vec::new(),
            want: usize::MAX,
        };
        let mut late = budget(u64::MAX);
        late.deadline = tokio::time::Instant::now();
        let floor = walk_back(&log, &mut chunks, 0, 1000, &mut late)
            .await
            .unwrap();
        assert_eq!(
            (floor, chunks.merged.len()),
            (984, 1),
            "the first chunk only"
        );
    }

    fn value(len: usize) -> Option<Vec<u8>> {
        Some(vec![b'v'; len])
    }

    #[test]
    fn a_history_holds_the_newest_values_within_its_budget_and_only_metadata_past_it() {
        let third = KEPT_VALUE_BYTES / 3;
        let mut keeper: Keeper<u64> = Keeper::new(5, 5);
        // One chunk, oldest first: 1..=4 of a third each, then a delete.
        let mut found = keeper.found();
        for id in 1..=4 {
            found.push(id, value(third));
        }
        found.push(5, None);
        assert!(found.held <= KEPT_VALUE_BYTES, "{}", found.held);
        let held: Vec<bool> = found
            .items
            .iter()
            .map(|k| matches!(k.value, Held::Value(_)))
            .collect();
        assert_eq!(held, [false, true, true, true, true], "the oldest let go");
        assert!(!keeper.merge(found), "full: five kept");
        let kept: Vec<(u64, bool)> = keeper
            .items
            .iter()
            .map(|k| (k.meta, k.value.kept().is_some()))
            .collect();
        assert_eq!(
            kept,
            [(5, true), (4, true), (3, true), (2, true), (1, false)],
            "newest first; a delete costs nothing"
        );

        // Over the cap, a chunk keeps its newest; an older chunk merged
        // after a let-go value holds none.
        let mut keeper: Keeper<u64> = Keeper::new(3, 3);
        let mut found = keeper.found();
        for id in 10..=15 {
            found.push(id, value(1));
        }
        assert_eq!(found.items.len(), 3);
        assert!(!keeper.merge(found));
        assert_eq!(
            keeper.items.iter().map(|k| k.meta).collect::<Vec<_>>(),
            [15, 14, 13]
        );

        // The newest value is held however large; nothing after it then.
        let mut keeper: Keeper<u64> = Keeper::new(10, 10);
        let mut found = keeper.found();
        found.push(1, value(1));
        found.push(2, value(KEPT_VALUE_BYTES + 1));
        assert!(keeper.merge(found));
        let mut older = keeper.found();
        older.push(0, value(1));
        assert!(keeper.merge(older));
        let kept: Vec<bool> = keeper
            .items
            .iter()
            .map(|k| k.value.kept().is_some())
            .collect();
        assert_eq!(kept, [true, false, false]);

        // Only the first `valued` hold values (lost writes past the limit
        // only link versions).
        let mut keeper: Keeper<u64> = Keeper::new(10, 2);
        let mut found = keeper.found();
        for id in 1..=4 {
            found.push(id, value(1));
        }
        keeper.merge(found);
        let kept: Vec<bool> = keeper
            .items
            .iter()
            .map(|k| k.value.kept().is_some())
            .collect();
        assert_eq!(kept, [true, true, false, false]);
    }

    #[test]
    fn an_answer_shows_values_until_its_budget_and_cuts_only_one_that_never_fits() {
        let mut room = Room::new();
        let half = vec![b'x'; MAX_PAGE_BYTES / 2];
        assert!(!room.show(Some(&half)).unwrap().cut);
        assert!(room.show(None).is_some(), "a delete shows nothing");
        assert!(
            room.show(Some(&vec![b'y'; MAX_PAGE_BYTES / 2 + 1]))
                .is_none()
        );
        assert!(room.truncated);
        assert!(room.show(Some(b"small")).is_none(), "nothing after");

        let mut room = Room::new();
        assert_eq!(room.show(Some(b"first")).unwrap().text, "first");
        let huge = room.show(Some(&vec![b'z'; MAX_PAGE_BYTES + 10])).unwrap();
        assert!(huge.cut && room.truncated);
        assert_eq!(huge.text.len(), MAX_PAGE_BYTES - 5);
        assert_eq!(huge.full_bytes, Some(MAX_PAGE_BYTES as u64 + 10));
    }

    #[test]
    fn tallies_merged_chunk_by_chunk_count_as_one_tally() {
        let all = [
            conflict(1, "@kv", "a", ("edge-b", 130, "x"), ("edge-a", 100, "y")),
            conflict(2, "@kv", "b", ("edge-a", 150, "z"), ("edge-b", 170, "z")),
            conflict(3, "@kv2", "c", ("edge-c", 180, "x"), ("edge-a", 1, "x")),
        ];
        let mut whole = Tally::default();
        let mut merged = Tally::default();
        for (i, c) in all.iter().enumerate() {
            whole.add(c, i == 1, 60_000);
            let mut chunk = Tally::default();
            chunk.add(c, i == 1, 60_000);
            merged.merge(chunk);
        }
        assert_eq!(whole.finish(60, 3, true), merged.finish(60, 3, true));
    }
}
