//! The one set of rules for what may travel between edge and cloud: the
//! cloud checks every record of a batch with them at the door, and an edge
//! checks every change of the feed with them before applying it, so nothing
//! one side refuses can reach the other through the cloud.

use crate::names::{is_shared_store_name, is_valid, is_valid_node_id, is_valid_topic};
use crate::{Change, Record, Version};

/// Longest key any store may hold (a function's `max-key-bytes` cannot go
/// higher).
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// Largest value (or event payload) any side may carry: a record of this
/// size, base64 in JSON, still fits one batch or feed page alone.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// Longest idempotency key of an event.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Default bound on how far a record's HLC may run ahead of the receiver's
/// wall clock.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// Why a record or change was refused. Each has a stable [`Invalid::code`]
/// that travels in the cloud's answer, so the edge knows the refusal is the
/// cloud's own verdict on that record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invalid {
    /// Not `@FUNCTION` or a shared store name.
    BadStore,
    /// Empty or longer than the key limit.
    BadKey,
    /// A value or payload over the receiver's limit.
    TooLarge,
    /// A node id that breaks the node-id rule.
    BadNode,
    /// A version written by another node than the one sending it.
    ForeignNode,
    /// A topic that breaks the topic rule.
    BadTopic,
    /// An empty or too long idempotency key.
    BadIdempotencyKey,
    /// An HLC stamp further ahead of the receiver's clock than allowed.
    ClockSkew,
    /// A store the sender may not write, or that does not replicate here.
    StoreNotAllowed,
    /// A topic the sender may not publish to.
    TopicNotAllowed,
}

impl Invalid {
    /// Every refusal, for listing what the cloud refuses.
    pub const ALL: [Invalid; 10] = [
        Invalid::BadStore,
        Invalid::BadKey,
        Invalid::TooLarge,
        Invalid::BadNode,
        Invalid::ForeignNode,
        Invalid::BadTopic,
        Invalid::BadIdempotencyKey,
        Invalid::ClockSkew,
        Invalid::StoreNotAllowed,
        Invalid::TopicNotAllowed,
    ];

    /// The stable, machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Invalid::BadStore => "bad-store",
            Invalid::BadKey => "bad-key",
            Invalid::TooLarge => "too-large",
            Invalid::BadNode => "bad-node",
            Invalid::ForeignNode => "foreign-node",
            Invalid::BadTopic => "bad-topic",
            Invalid::BadIdempotencyKey => "bad-idempotency-key",
            Invalid::ClockSkew => "clock-skew",
            Invalid::StoreNotAllowed => "store-not-allowed",
            Invalid::TopicNotAllowed => "topic-not-allowed",
        }
    }

    /// The refusal named by `code`, if it is one of ours.
    pub fn from_code(code: &str) -> Option<Invalid> {
        Self::ALL.into_iter().find(|i| i.code() == code)
    }

    /// What the code means, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Invalid::BadStore => "store id is neither @FUNCTION nor a shared store name",
            Invalid::BadKey => "key is empty or longer than the key limit",
            Invalid::TooLarge => "value or payload is over the size limit",
            Invalid::BadNode => "node id breaks the rule (1 to 64 of [A-Za-z0-9._-])",
            Invalid::ForeignNode => "version names another node than the sender",
            Invalid::BadTopic => "topic breaks the rule ([a-z0-9][a-z0-9._-]*, at most 128 bytes)",
            Invalid::BadIdempotencyKey => "idempotency key is empty or over 256 bytes",
            Invalid::ClockSkew => "HLC stamp is too far ahead of the receiver's clock",
            Invalid::StoreNotAllowed => {
                "the sender may not write this store, or it does not replicate here"
            }
            Invalid::TopicNotAllowed => "the sender may not publish to this topic",
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.describe())
    }
}

/// The receiver's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Largest value or payload accepted.
    pub max_value_bytes: usize,
    /// Longest key accepted.
    pub max_key_bytes: usize,
    /// How far ahead of the receiver's wall clock an HLC may be.
    pub max_clock_skew_ms: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_value_bytes: MAX_VALUE_BYTES,
            max_key_bytes: MAX_KEY_BYTES,
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
        }
    }
}

/// Whether `store` is a store id: `@` + a function name, or a shared name.
pub fn is_store_id(store: &str) -> bool {
    match store.strip_prefix('@') {
        Some(function) => is_valid(function),
        None => is_shared_store_name(store),
    }
}

/// Wall-clock milliseconds now, for [`Rules::check_record`].
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Rules {
    fn check_hlc(&self, hlc: u64, now_ms: u64) -> Result<(), Invalid> {
        let horizon = now_ms.saturating_add(self.max_clock_skew_ms);
        if hlc >> 16 > horizon {
            Err(Invalid::ClockSkew)
        } else {
            Ok(())
        }
    }

    fn check_version(&self, version: &Version, now_ms: u64) -> Result<(), Invalid> {
        if !is_valid_node_id(&version.node) {
            return Err(Invalid::BadNode);
        }
        self.check_hlc(version.hlc, now_ms)
    }

    fn check_kv(
        &self,
        store: &str,
        key: &str,
        value: Option<&[u8]>,
        version: &Version,
        now_ms: u64,
    ) -> Result<(), Invalid> {
        if !is_store_id(store) {
            return Err(Invalid::BadStore);
        }
        if key.is_empty() || key.len() > self.max_key_bytes {
            return Err(Invalid::BadKey);
        }
        if value.is_some_and(|v| v.len() > self.max_value_bytes) {
            return Err(Invalid::TooLarge);
        }
        self.check_version(version, now_ms)
    }

    /// Checks a record shipped by node `sender` (already authenticated):
    /// names, sizes, clock, and that a KV write is stamped by the sender.
    pub fn check_record(&self, record: &Record, sender: &str, now_ms: u64) -> Result<(), Invalid> {
        match record {
            Record::Kv {
                store,
                key,
                value,
                version,
                seen,
            } => {
                self.check_kv(store, key, value.as_deref(), version, now_ms)?;
                if version.node != sender {
                    return Err(Invalid::ForeignNode);
                }
                if seen.as_ref().is_some_and(|s| !is_valid_node_id(&s.node)) {
                    return Err(Invalid::BadNode);
                }
                Ok(())
            }
            Record::Event {
                topic,
                payload,
                idempotency_key,
                hlc,
            } => {
                if !is_valid_topic(topic) {
                    return Err(Invalid::BadTopic);
                }
                if payload.len() > self.max_value_bytes {
                    return Err(Invalid::TooLarge);
                }
                if idempotency_key
                    .as_ref()
                    .is_some_and(|k| k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_BYTES)
                {
                    return Err(Invalid::BadIdempotencyKey);
                }
                self.check_hlc(*hlc, now_ms)
            }
            Record::Skipped { reason } if reason.len() > 4096 => Err(Invalid::TooLarge),
            Record::Skipped { .. } => Ok(()),
        }
    }

    /// Checks a change from the feed before an edge applies it (the store's
    /// replication on this node is the caller's check).
    pub fn check_change(&self, change: &Change, now_ms: u64) -> Result<(), Invalid> {
        self.check_kv(
            &change.store,
            &change.key,
            change.value.as_deref(),
            &change.version,
            now_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn kv(store: &str, key: &str, value: usize, node: &str, hlc_ms: u64) -> Record {
        Record::Kv {
            store: store.into(),
            key: key.into(),
            value: Some(vec![0; value]),
            version: Version {
                hlc: hlc_ms << 16,
                node: node.into(),
            },
            seen: None,
        }
    }

    #[test]
    fn a_normal_record_passes() {
        let rules = Rules::default();
        for store in ["@shop", "sessions"] {
            assert_eq!(
                rules.check_record(&kv(store, "k", 10, "a", NOW), "a", NOW),
                Ok(())
            );
        }
    }

    #[test]
    fn each_rule_has_its_refusal() {
        let rules = Rules {
            max_value_bytes: 100,
            ..Rules::default()
        };
        let long_node = format!("{}é", "n".repeat(254));
        let cases = [
            (kv("", "k", 1, "a", NOW), Invalid::BadStore),
            (kv("a\0b", "k", 1, "a", NOW), Invalid::BadStore),
            (kv("default", "k", 1, "a", NOW), Invalid::BadStore),
            (kv("@", "k", 1, "a", NOW), Invalid::BadStore),
            (kv("s", "", 1, "a", NOW), Invalid::BadKey),
            (
                kv("s", &"k".repeat(MAX_KEY_BYTES + 1), 1, "a", NOW),
                Invalid::BadKey,
            ),
            (kv("s", "k", 101, "a", NOW), Invalid::TooLarge),
            (kv("s", "k", 1, "", NOW), Invalid::BadNode),
            (kv("s", "k", 1, &long_node, NOW), Invalid::BadNode),
            (kv("s", "k", 1, "b", NOW), Invalid::ForeignNode),
            (
                kv("s", "k", 1, "a", NOW + 6 * 60 * 1000),
                Invalid::ClockSkew,
            ),
        ];
        for (record, expected) in cases {
            let sender = match &record {
                Record::Kv { version, .. } if version.node != "b" => version.node.clone(),
                _ => "a".to_owned(),
            };
            assert_eq!(
                rules.check_record(&record, &sender, NOW),
                Err(expected),
                "{record:?}"
            );
        }
        let u64_max = Record::Kv {
            store: "s".into(),
            key: "k".into(),
            value: None,
            version: Version {
                hlc: u64::MAX,
                node: "a".into(),
            },
            seen: None,
        };
        assert_eq!(
            rules.check_record(&u64_max, "a", NOW),
            Err(Invalid::ClockSkew)
        );
        let event = |topic: &str, key: Option<String>| Record::Event {
            topic: topic.into(),
            payload: vec![],
            idempotency_key: key,
            hlc: NOW << 16,
        };
        assert_eq!(
            rules.check_record(&event("Bad", None), "a", NOW),
            Err(Invalid::BadTopic)
        );
        assert_eq!(
            rules.check_record(&event("t", Some(String::new())), "a", NOW),
            Err(Invalid::BadIdempotencyKey)
        );
        assert_eq!(
            rules.check_record(&event("t", Some("k".into())), "a", NOW),
            Ok(())
        );
    }

    #[test]
    fn codes_round_trip() {
        for invalid in Invalid::ALL {
            assert_eq!(Invalid::from_code(invalid.code()), Some(invalid));
        }
        assert_eq!(Invalid::from_code("bad-request"), None);
    }
}
