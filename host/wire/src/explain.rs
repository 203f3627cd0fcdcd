//! A recorded conflict explained for people: both writes' wall-clock
//! times (from their HLC stamps), both values decoded for display, why the
//! winner won, and whether the conflict is benign (both wrote the same) or
//! divergent (a write was lost), and who marked it reviewed. What the
//! cloud's `/v1/conflicts` serves, so every dashboard shows the same
//! reading of a conflict.

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

/// A value decoded for display, never cut off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// `json` (pretty-printed), `text` (UTF-8), `hex`, or `deleted`.
    pub format: String,
    /// The value in that format (empty for `deleted`).
    pub text: String,
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

/// Who marked a conflict reviewed, and when: an operator's "someone has
/// looked at this". Kept once: the first review of a conflict stands.
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

/// The wall-clock milliseconds of an HLC stamp (its high 48 bits).
pub fn wall_ms(version: &Version) -> u64 {
    version.hlc >> 16
}

/// When a conflict happened: the later of its two writes' wall-clock
/// times (the conflict exists from the moment both writes do).
pub fn conflict_ms(conflict: &Conflict) -> u64 {
    wall_ms(&conflict.winner).max(wall_ms(&conflict.loser))
}

/// `value` as a person should see it: pretty JSON if it parses as JSON,
/// else UTF-8 text, else hex.
pub fn show(value: Option<&[u8]>) -> Shown {
    let Some(bytes) = value else {
        return Shown {
            format: "deleted".into(),
            text: String::new(),
        };
    };
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes)
        && (json.is_object() || json.is_array())
    {
        return Shown {
            format: "json".into(),
            text: serde_json::to_string_pretty(&json).expect("a parsed value prints"),
        };
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Shown {
            format: "text".into(),
            text: text.to_owned(),
        },
        Err(_) => Shown {
            format: "hex".into(),
            text: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        },
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

/// Explains `conflict`.
pub fn explain(conflict: Conflict) -> Explained {
    let kind = kind_of(&conflict);
    let reason = if conflict.winner.hlc == conflict.loser.hlc {
        WinReason::NodeIdTie
    } else {
        WinReason::HigherHlc
    };
    Explained {
        kind,
        reason,
        winner_ms: wall_ms(&conflict.winner),
        loser_ms: wall_ms(&conflict.loser),
        winner_shown: show(conflict.winner_value.as_deref()),
        loser_shown: show(conflict.loser_value.as_deref()),
        conflict,
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
    }
}
