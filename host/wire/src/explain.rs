//! A recorded conflict explained for people: both writes' wall-clock
//! times (from their HLC stamps), both values decoded for display, why the
//! winner won, and whether the conflict is benign (both wrote the same) or
//! divergent (a write was lost), and who marked it reviewed. What the
//! cloud's `/v1/conflicts` serves, so every dashboard shows the same
//! reading of a conflict.
//!
//! A value is shown whole, except past an answer's byte budget: a JSON
//! value is re-indented as written (no tree is built, so its display costs
//! no more memory than the budget, however deep it nests), and its size is
//! [`measure`]d before anything is rendered, so an answer can budget on
//! what it will show, not on a guess from the value's size.

use crate::{Conflict, Version};
use serde::{Deserialize, Serialize};

/// Benign: both writes carried the same value, nothing was lost.
/// Divergent: the losing write's value is gone from every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictKind {
    /// Both writes carried the same value (or both deleted).
    Benign,
    /// The values differ: the loser's write is lost.
    Divergent,
}

/// Why the winner won last-writer-wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WinReason {
    /// Its HLC stamp is higher.
    HigherHlc,
    /// Equal stamps: the higher node id breaks the tie.
    NodeIdTie,
}

/// A value decoded for display: whole, unless it alone is larger than
/// the answer's byte budget (then `cut`, with its whole size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// `json` (pretty-printed), `text` (UTF-8), `hex`, or `deleted`.
    pub format: String,
    /// The value in that format (empty for `deleted`); when `cut`, only
    /// its start (cut at a character boundary).
    pub text: String,
    /// Whether `text` is only the start of the display: the whole did not
    /// fit the answer's byte budget. Absent when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cut: bool,
    /// When `cut`: the size in bytes of the whole display (what `text`
    /// would hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_bytes: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A conflict with what follows from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explained {
    /// The record as stored.
    #[serde(flatten)]
    pub conflict: Conflict,
    /// Benign or divergent.
    pub kind: ConflictKind,
    /// Why the winner won.
    pub reason: WinReason,
    /// When the winning write was made (ms since the Unix epoch, from its HLC).
    pub winner_ms: u64,
    /// When the losing write was made.
    pub loser_ms: u64,
    /// The winning value, for display.
    pub winner_shown: Shown,
    /// The losing value, for display.
    pub loser_shown: Shown,
}

/// Who a review by the operator (the admin token) is `by`.
pub const OPERATOR: &str = "operator";

/// Who marked a conflict reviewed, and when: an operator's "someone has
/// looked at this". The first review of a conflict stands, except that
/// the operator's replaces anyone else's (see [`Review::replaces`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Who, from the reviewer's credential (never from what they sent):
    /// `operator`, `dev`, or `node:<node id>`.
    pub by: String,
    /// When, by the cloud's wall clock (ms since the Unix epoch).
    pub at_ms: u64,
    /// What the reviewer noted, if anything.
    pub note: Option<String>,
}

impl Review {
    /// Whether the operator made it.
    pub fn by_operator(&self) -> bool {
        self.by == OPERATOR
    }

    /// Whether this review takes the place of `stored`: only the
    /// operator's, and only over someone else's. Anyone reviewing again
    /// (the operator too) keeps what is stored.
    pub fn replaces(&self, stored: &Review) -> bool {
        self.by_operator() && !stored.by_operator()
    }
}

/// The wall-clock milliseconds of an HLC stamp (its high 48 bits).
pub fn wall_ms(version: &Version) -> u64 {
    version.hlc >> 16
}

/// When a conflict happened: the later of its two writes' wall-clock
/// times (the conflict exists from the moment both writes do).
pub fn conflict_ms(conflict: &Conflict) -> u64 {
    wall_ms(&conflict.winner).max(wall_ms(&conflict.loser))
}

/// How a value shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Deleted,
    Json,
    Text,
    Hex,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Deleted => "deleted",
            Format::Json => "json",
            Format::Text => "text",
            Format::Hex => "hex",
        }
    }
}

/// A value's display, measured but not rendered: its format and the size
/// in bytes of its whole text. Costs no allocation.
#[derive(Debug, Clone, Copy)]
pub struct Measured<'a> {
    value: &'a [u8],
    format: Format,
    size: usize,
}

/// `value` as a person should see it: pretty JSON if it is a JSON object
/// or array, else UTF-8 text, else hex; measured, not rendered yet.
pub fn measure(value: Option<&[u8]>) -> Measured<'_> {
    let Some(bytes) = value else {
        return Measured {
            value: &[],
            format: Format::Deleted,
            size: 0,
        };
    };
    let text = std::str::from_utf8(bytes).is_ok();
    // Validated without building a tree (serde skips what it reads), so
    // the re-indenting below may trust the bytes to be JSON.
    let opens = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    if text && opens && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        let mut out = Out::measuring();
        reindent(bytes, &mut out);
        return Measured {
            value: bytes,
            format: Format::Json,
            size: out.size,
        };
    }
    if text {
        Measured {
            value: bytes,
            format: Format::Text,
            size: bytes.len(),
        }
    } else {
        Measured {
            value: bytes,
            format: Format::Hex,
            size: 2 * bytes.len(),
        }
    }
}

impl Measured<'_> {
    /// The size in bytes of the whole display.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The display, whole if it fits in `max` bytes, else its first
    /// `max` bytes at most (at a character boundary), marked `cut`.
    pub fn render(&self, max: usize) -> Shown {
        let text = match self.format {
            Format::Deleted => String::new(),
            Format::Json => {
                let mut out = Out::rendering(max.min(self.size));
                reindent(self.value, &mut out);
                String::from_utf8(out.text).expect("cut at a character boundary")
            }
            Format::Text => {
                let text = std::str::from_utf8(self.value).expect("measured as text");
                text[..floor_boundary(text, max)].to_owned()
            }
            Format::Hex => {
                let bytes = &self.value[..self.value.len().min(max / 2)];
                let mut text = String::with_capacity(2 * bytes.len());
                for b in bytes {
                    use std::fmt::Write as _;
                    let _ = write!(text, "{b:02x}");
                }
                text
            }
        };
        let cut = text.len() < self.size;
        Shown {
            format: self.format.name().into(),
            text,
            cut,
            full_bytes: cut.then_some(self.size as u64),
        }
    }
}

/// `value` as a person should see it, whole: pretty JSON if it is a JSON
/// object or array, else UTF-8 text, else hex. Prefer
/// [`measure`] and [`Measured::render`] where the value may be large.
pub fn show(value: Option<&[u8]>) -> Shown {
    measure(value).render(usize::MAX)
}

/// The largest `n <= max` at a character boundary of `text`.
fn floor_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    let mut n = max;
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// Where [`reindent`] writes: it counts every byte, and keeps them only
/// up to `max` (nothing when measuring), then stops.
struct Out {
    text: Vec<u8>,
    size: usize,
    max: usize,
    /// Rendering: stop once `max` bytes are kept.
    rendering: bool,
}

impl Out {
    fn measuring() -> Self {
        Self {
            text: Vec::new(),
            size: 0,
            max: 0,
            rendering: false,
        }
    }

    fn rendering(max: usize) -> Self {
        Self {
            text: Vec::with_capacity(max),
            size: 0,
            max,
            rendering: true,
        }
    }

    fn done(&self) -> bool {
        self.rendering && self.size >= self.max
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        let room = self.max - self.text.len();
        if room > 0 {
            self.text.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// A new line indented `depth` levels (two spaces each, as serde's
    /// pretty printer does); counted without writing when not kept.
    fn line(&mut self, depth: usize) {
        self.push(b"\n");
        let spaces = 2 * depth;
        let keep = spaces.min(self.max - self.text.len());
        self.text.resize(self.text.len() + keep, b' ');
        self.size += spaces;
    }
}

/// Writes `json` (valid JSON, UTF-8) pretty-printed to `out` as written:
/// keys in their order, strings and numbers as they are, whitespace
/// replaced by serde's pretty layout (`[]` and `{}` stay on one line).
/// Bytes past `out`'s room are counted, not kept; the kept text is cut
/// back to a character boundary.
fn reindent(json: &[u8], out: &mut Out) {
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() && !out.done() {
        match json[i] {
            b' ' | b'\n' | b'\r' | b'\t' => i += 1,
            b'"' => {
                let mut j = i + 1;
                while json[j] != b'"' {
                    j += if json[j] == b'\\' { 2 } else { 1 };
                }
                out.push(&json[i..=j]);
                i = j + 1;
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                let next = json[i + 1..]
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .map_or(json.len(), |at| i + 1 + at);
                if json.get(next) == Some(&close) {
                    out.push(&[open, close]);
                    i = next + 1;
                } else {
                    out.push(&[open]);
                    depth += 1;
                    out.line(depth);
                    i += 1;
                }
            }
            close @ (b'}' | b']') => {
                depth -= 1;
                out.line(depth);
                out.push(&[close]);
                i += 1;
            }
            b',' => {
                out.push(b",");
                out.line(depth);
                i += 1;
            }
            b':' => {
                out.push(b": ");
                i += 1;
            }
            _ => {
                // A number, true, false or null: up to the next delimiter.
                let end = json[i..]
                    .iter()
                    .position(|b| matches!(b, b',' | b']' | b'}' | b':') || b.is_ascii_whitespace())
                    .map_or(json.len(), |at| i + at);
                out.push(&json[i..end]);
                i = end;
            }
        }
    }
    // Cut inside a multi-byte character (the only way the kept bytes of
    // UTF-8 input can fail to be UTF-8): back to its start.
    if let Err(e) = std::str::from_utf8(&out.text) {
        out.text.truncate(e.valid_up_to());
    }
}

/// Whether `conflict` lost anything: benign if both writes carried the
/// same value (or both deleted).
pub fn kind_of(conflict: &Conflict) -> ConflictKind {
    if conflict.winner_value == conflict.loser_value {
        ConflictKind::Benign
    } else {
        ConflictKind::Divergent
    }
}

/// Explains `conflict`, both values shown whole.
pub fn explain(conflict: Conflict) -> Explained {
    explain_within(conflict, usize::MAX)
}

/// The size in bytes of both values' displays, as [`explain`] shows them.
pub fn shown_size(conflict: &Conflict) -> usize {
    measure(conflict.winner_value.as_deref()).size()
        + measure(conflict.loser_value.as_deref()).size()
}

/// Explains `conflict`, showing at most `max` bytes of its two values'
/// displays together: each whole if both fit; else the smaller whole if it
/// fits in half, and the other cut to the rest; else half each, cut.
pub fn explain_within(conflict: Conflict, max: usize) -> Explained {
    let kind = kind_of(&conflict);
    let reason = if conflict.winner.hlc == conflict.loser.hlc {
        WinReason::NodeIdTie
    } else {
        WinReason::HigherHlc
    };
    let winner = measure(conflict.winner_value.as_deref());
    let loser = measure(conflict.loser_value.as_deref());
    let (winner_max, loser_max) = split(max, winner.size(), loser.size());
    Explained {
        kind,
        reason,
        winner_ms: wall_ms(&conflict.winner),
        loser_ms: wall_ms(&conflict.loser),
        winner_shown: winner.render(winner_max),
        loser_shown: loser.render(loser_max),
        conflict,
    }
}

/// `max` bytes shared by two displays of `a` and `b` bytes.
fn split(max: usize, a: usize, b: usize) -> (usize, usize) {
    if a.saturating_add(b) <= max {
        return (a, b);
    }
    let half = max / 2;
    match (a <= half, b <= half) {
        (true, _) => (a, max - a),
        (_, true) => (max - b, b),
        _ => (half, max - half),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(winner: (u64, &str, Option<&[u8]>), loser: (u64, &str, Option<&[u8]>)) -> Conflict {
        Conflict {
            id: 1,
            store: "s".into(),
            key: "k".into(),
            winner: Version {
                hlc: winner.0,
                node: winner.1.into(),
            },
            winner_value: winner.2.map(<[u8]>::to_vec),
            loser: Version {
                hlc: loser.0,
                node: loser.1.into(),
            },
            loser_value: loser.2.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn a_conflict_says_why_the_winner_won_and_whether_anything_was_lost() {
        let stamp = 1_700_000_000_000u64 << 16;
        let e = explain(conflict(
            (stamp + 5, "a", Some(b"x")),
            (stamp, "b", Some(b"x")),
        ));
        assert_eq!(
            (e.kind, e.reason),
            (ConflictKind::Benign, WinReason::HigherHlc)
        );
        assert_eq!(e.winner_ms, 1_700_000_000_000);
        let mut late_loser = e.conflict.clone();
        late_loser.loser.hlc = (1_700_000_000_007u64 << 16) + 1;
        assert_eq!(conflict_ms(&late_loser), 1_700_000_000_007);
        let e = explain(conflict((stamp, "b", Some(b"x")), (stamp, "a", None)));
        assert_eq!(
            (e.kind, e.reason),
            (ConflictKind::Divergent, WinReason::NodeIdTie)
        );
        assert_eq!(e.loser_shown.format, "deleted");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["key"], "k", "the record's own fields stay at the top");
        assert_eq!(json["kind"], "divergent");
        assert_eq!(json["reason"], "node-id-tie");
    }

    #[test]
    fn values_show_as_pretty_json_text_or_hex_never_cut() {
        assert_eq!(show(Some(br#"{"a":1}"#)).format, "json");
        assert_eq!(show(Some(br#"{"a":1}"#)).text, "{\n  \"a\": 1\n}");
        assert_eq!(show(Some(b"12")).format, "text", "a bare number is text");
        let long = "y".repeat(10_000);
        assert_eq!(show(Some(long.as_bytes())).text.len(), 10_000);
        assert_eq!(show(Some(&[0xff, 0x00])).text, "ff00");
        let whole = serde_json::to_value(show(Some(b"x"))).unwrap();
        assert_eq!(
            whole,
            serde_json::json!({"format": "text", "text": "x"}),
            "the shape of a whole value is unchanged"
        );
    }

    #[test]
    fn json_is_reindented_as_serde_prints_it_without_building_a_tree() {
        // Where serde's tree and the value as written agree (keys sorted,
        // plain numbers and strings), the text is serde's pretty print.
        for json in [
            r#"{"a":1}"#,
            r#" [ 1 , 25, -3, true, false, null ] "#,
            r#"{"a":{"b":[],"c":{}},"d":[ ],"e":{ },"f":[[1],[2,[3]]]}"#,
            r#"{"k":"with \"quotes\", commas, colons: and ] brackets }","z":"\\"}"#,
            "{\n\t\"a\" :\r\n [\"x\", {\"y\": \"é\"}]}",
        ] {
            let expected = serde_json::to_string_pretty(
                &serde_json::from_str::<serde_json::Value>(json).unwrap(),
            )
            .unwrap();
            let measured = measure(Some(json.as_bytes()));
            let shown = measured.render(usize::MAX);
            assert_eq!(shown.text, expected, "{json}");
            assert_eq!(shown.format, "json");
            assert_eq!(measured.size(), shown.text.len(), "{json}");
            assert!(!shown.cut);
        }
        // Numbers and escapes stay as written.
        assert_eq!(
            show(Some(br#"[2.5e3,"\u00e9"]"#)).text,
            "[\n  2.5e3,\n  \"\\u00e9\"\n]"
        );
        // Keys stay in the order written.
        assert_eq!(
            show(Some(br#"{"b":1,"a":2}"#)).text,
            "{\n  \"b\": 1,\n  \"a\": 2\n}"
        );
        // Not JSON, or JSON but not a container: text.
        for text in [&b"{oops"[..], b"\"str\"", b"[1,]", b" 12 "] {
            assert_eq!(show(Some(text)).format, "text", "{text:?}");
        }
    }

    #[test]
    fn a_display_past_the_budget_is_cut_with_its_whole_size() {
        // Deep nesting: every element on a line indented 2 * 100 spaces,
        // about 100 times the value's size once pretty-printed.
        let depth = 100;
        let mut json = "[".repeat(depth);
        json.push_str(&vec!["1"; 200_000].join(","));
        json.push_str(&"]".repeat(depth));
        let measured = measure(Some(json.as_bytes()));
        assert!(
            measured.size() > 100 * json.len() / 2,
            "{}",
            measured.size()
        );
        let budget = 64 * 1024;
        let shown = measured.render(budget);
        assert_eq!(shown.format, "json");
        assert!(shown.cut);
        assert_eq!(shown.text.len(), budget);
        assert_eq!(shown.full_bytes, Some(measured.size() as u64));
        assert!(shown.text.starts_with("[\n  [\n    ["));
        let json_out = serde_json::to_value(&shown).unwrap();
        assert_eq!(json_out["cut"], true);
        assert_eq!(json_out["full_bytes"], measured.size() as u64);

        // Text is cut at a character boundary, hex at a whole byte.
        let shown = measure(Some("éé".as_bytes())).render(3);
        assert_eq!(
            (shown.text.as_str(), shown.cut, shown.full_bytes),
            ("é", true, Some(4))
        );
        let shown = measure(Some(&[0xff, 0xfe, 0xfd])).render(5);
        assert_eq!((shown.text.as_str(), shown.full_bytes), ("fffe", Some(6)));
        let shown = measure(Some(r#"{"k":"ééé"}"#.as_bytes())).render(12);
        assert_eq!(
            shown.text, "{\n  \"k\": \"é",
            "cut back to a whole character"
        );
        assert!(measure(None).render(0) == show(None));
    }

    #[test]
    fn a_conflict_shares_the_budget_between_its_values() {
        assert_eq!(split(10, 3, 4), (3, 4));
        assert_eq!(split(10, 3, 40), (3, 7));
        assert_eq!(split(10, 40, 2), (8, 2));
        assert_eq!(split(10, 40, 40), (5, 5));
        let big = "x".repeat(1000);
        let e = explain_within(
            conflict((2, "a", Some(big.as_bytes())), (1, "b", Some(b"small"))),
            100,
        );
        assert_eq!(e.loser_shown.text, "small");
        assert_eq!(e.winner_shown.text.len(), 95);
        assert_eq!(e.winner_shown.full_bytes, Some(1000));
        assert_eq!(shown_size(&e.conflict), 1005);
    }

    #[test]
    fn the_operators_review_replaces_anyone_elses_and_nothing_replaces_it() {
        let by = |who: &str| Review {
            by: who.into(),
            at_ms: 1,
            note: None,
        };
        assert!(by(OPERATOR).replaces(&by("node:edge-a")));
        assert!(by(OPERATOR).replaces(&by("dev")));
        assert!(!by(OPERATOR).replaces(&by(OPERATOR)));
        assert!(!by("dev").replaces(&by("node:edge-a")));
        assert!(!by("node:edge-a").replaces(&by(OPERATOR)));
    }
}
