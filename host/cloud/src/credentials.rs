//! Who may call the cloud: per-node credentials bound to a node id (and the
//! stores it may write), read-only credentials for dashboards and tools,
//! and the operator's admin token. Tokens are random, shown once, and
//! stored only as their SHA-256.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a credential lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// An edge: ships batches as its own node, reads the feed and conflicts
    /// of the stores it may write.
    Node,
    /// Reads the feed, events, conflicts, keys and metrics; writes nothing.
    Reader,
}

/// A credential as the cloud keeps it (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Public id, shown in lists and logs, and used to revoke.
    pub id: String,
    /// What the holder may do.
    pub role: Role,
    /// For a node credential: the node id it is bound to.
    pub node: Option<String>,
    /// For a node credential: the stores it may write, as store ids
    /// (`@FUNCTION`, a shared name) or patterns (`*`, `@*`).
    #[serde(default)]
    pub stores: Vec<String>,
    /// For a node credential: the topics it may publish to, as topics or
    /// patterns (`*`, `PREFIX.*`). Credentials issued before topics were
    /// granted may publish to every topic.
    #[serde(default = "every_topic")]
    pub topics: Vec<String>,
    /// A reader's name or an operator's note.
    #[serde(default)]
    pub label: String,
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
    /// When it was issued (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<u64>,
}

fn every_topic() -> Vec<String> {
    vec!["*".into()]
}

impl Credential {
    /// Whether a node holding this credential may publish to `topic`.
    /// (Idempotency keys dedup across nodes on a topic, so a grant is what
    /// keeps one node from claiming another's keys.)
    pub fn may_publish(&self, topic: &str) -> bool {
        self.topics
            .iter()
            .any(|pattern| topic_matches(pattern, topic))
    }

    /// Whether a node holding this credential may write `store`.
    pub fn may_write(&self, store: &str) -> bool {
        self.stores
            .iter()
            .any(|pattern| store_matches(pattern, store))
    }

    /// The credential without its hash, for listings.
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "role": self.role,
            "node": self.node,
            "stores": self.stores,
            "topics": self.topics,
            "label": self.label,
            "created_ms": self.created_ms,
            "revoked_ms": self.revoked_ms,
        })
    }
}

/// Whether store id `store` matches `pattern`: `*` (every store), `@*`
/// (every function's own store), or the id itself.
pub fn store_matches(pattern: &str, store: &str) -> bool {
    match pattern {
        "*" => true,
        "@*" => store.starts_with('@'),
        exact => exact == store,
    }
}

/// Whether `topic` matches `pattern`: `*`, `PREFIX.*` (every topic under
/// `PREFIX.`), or the topic itself.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => topic.starts_with(prefix),
        _ => pattern == topic,
    }
}

/// Whether `pattern` is a topic pattern an enrolment may grant.
pub fn is_topic_pattern(pattern: &str) -> bool {
    use outpost_wire::names::is_valid_topic;
    match pattern.strip_suffix(".*") {
        _ if pattern == "*" => true,
        Some(prefix) => is_valid_topic(prefix),
        None => is_valid_topic(pattern),
    }
}

/// Whether `pattern` is a store pattern an enrolment may grant.
pub fn is_store_pattern(pattern: &str) -> bool {
    matches!(pattern, "*" | "@*") || outpost_wire::validate::is_store_id(pattern)
}

/// Hex SHA-256 of `token`: what a credential is looked up by.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` bytes from the operating system's CSPRNG, as hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source works");
    hex(&bytes)
}

/// A new token and the id it carries: `op1.<id>.<secret>`, 128 bits of
/// secret. The id in the token lets an operator tell from a leaked token
/// which credential to revoke.
pub fn new_token() -> (String, String) {
    let id = random_hex(8);
    let token = format!("op1.{id}.{}", random_hex(16));
    (id, token)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    outpost_wire::validate::now_ms()
}

/// Who a request comes from, once its bearer token is checked.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The operator (admin token): everything, including credentials.
    Admin,
    /// Development mode's one shared token: ships as any node, reads
    /// everything; cannot manage credentials.
    Dev,
    /// A credential from the database.
    Holder(Credential),
}

impl Principal {
    /// Whether this principal may read events, keys and metrics.
    pub fn may_read_all(&self) -> bool {
        match self {
            Principal::Admin | Principal::Dev => true,
            Principal::Holder(c) => c.role == Role::Reader,
        }
    }

    /// Whether this principal may manage credentials: the operator only,
    /// never development mode's shared token (every edge holds that one).
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin)
    }

    /// For a node: its credential; `None` for readers and operators.
    pub fn node(&self) -> Option<&Credential> {
        match self {
            Principal::Holder(c) if c.role == Role::Node => Some(c),
            _ => None,
        }
    }

    /// Whether this principal may see changes to `store` (nodes see the
    /// stores they may write; everyone else sees all).
    pub fn may_see(&self, store: &str) -> bool {
        self.node().is_none_or(|c| c.may_write(store))
    }

    /// A short name for logs.
    pub fn describe(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::Dev => "dev-token".into(),
            Principal::Holder(c) => match &c.node {
                Some(node) => format!("node {node} ({})", c.id),
                None => format!("reader {} ({})", c.label, c.id),
            },
        }
    }
}

/// What `POST /v1/credentials` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrol {
    /// `node` or `reader`.
    pub role: Role,
    /// The node id, for a node credential.
    pub node: Option<String>,
    /// Stores the node may write [default: every store].
    pub stores: Option<Vec<String>>,
    /// Topics the node may publish to [default: every topic].
    pub topics: Option<Vec<String>>,
    /// A name for a reader, or a note.
    #[serde(default)]
    pub label: String,
}

impl Enrol {
    /// A node credential for `node` with the default grants (every store
    /// and topic).
    pub fn node(node: &str) -> Self {
        Self {
            role: Role::Node,
            node: Some(node.to_owned()),
            stores: None,
            topics: None,
            label: String::new(),
        }
    }

    /// Checks the request and makes the credential and its token.
    pub fn issue(self) -> Result<(Credential, String), String> {
        let (stores, topics) = match self.role {
            Role::Node => {
                let node = self.node.as_deref().unwrap_or("");
                if !outpost_wire::names::is_valid_node_id(node) {
                    return Err(format!(
                        "node {node:?} is not a valid node id (1 to 64 of [A-Za-z0-9._-])"
                    ));
                }
                let stores = self.stores.unwrap_or_else(|| vec!["*".into()]);
                if let Some(bad) = stores.iter().find(|s| !is_store_pattern(s)) {
                    return Err(format!(
                        "store {bad:?} is not a store id (@FUNCTION or a shared name) or pattern (*, @*)"
                    ));
                }
                let topics = self.topics.unwrap_or_else(every_topic);
                if let Some(bad) = topics.iter().find(|t| !is_topic_pattern(t)) {
                    return Err(format!(
                        "topic {bad:?} is not a topic or pattern (*, PREFIX.*)"
                    ));
                }
                (stores, topics)
            }
            Role::Reader => {
                if self.node.is_some() || self.stores.is_some() || self.topics.is_some() {
                    return Err("a reader credential takes no node, stores or topics".into());
                }
                (Vec::new(), Vec::new())
            }
        };
        let (id, token) = new_token();
        let credential = Credential {
            id,
            role: self.role,
            node: self.node.filter(|_| self.role == Role::Node),
            stores,
            topics,
            label: self.label,
            token_sha256: token_hash(&token),
            created_ms: now_ms(),
            revoked_ms: None,
        };
        Ok((credential, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_store_ids() {
        assert!(store_matches("*", "@shop"));
        assert!(store_matches("@*", "@shop"));
        assert!(!store_matches("@*", "sessions"));
        assert!(store_matches("sessions", "sessions"));
        assert!(!store_matches("sessions", "sessions2"));
        assert!(is_store_pattern("@*") && is_store_pattern("@shop") && is_store_pattern("carts"));
        assert!(!is_store_pattern("") && !is_store_pattern("a\0b") && !is_store_pattern("s*"));
    }

    #[test]
    fn topic_patterns_match_topics() {
        assert!(topic_matches("*", "orders"));
        assert!(topic_matches("orders", "orders"));
        assert!(!topic_matches("orders", "orders.eu"));
        assert!(topic_matches("orders.*", "orders.eu"));
        assert!(!topic_matches("orders.*", "orders"));
        assert!(!topic_matches("orders.*", "ordersx.eu"));
        assert!(is_topic_pattern("*") && is_topic_pattern("orders.*") && is_topic_pattern("a.b"));
        assert!(!is_topic_pattern("") && !is_topic_pattern("Orders") && !is_topic_pattern("o*"));
        // Credentials stored before topics existed keep publishing.
        let old = r#"{"id":"i","role":"node","node":"n","stores":["*"],"token_sha256":"h","created_ms":1,"revoked_ms":null}"#;
        let credential: Credential = serde_json::from_str(old).unwrap();
        assert!(credential.may_publish("anything"));
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, token_a) = new_token();
        let (b, token_b) = new_token();
        assert_ne!(a, b);
        assert_ne!(token_a, token_b);
        assert!(token_a.starts_with(&format!("op1.{a}.")));
        assert_eq!(token_hash(&token_a).len(), 64);
        assert_ne!(token_hash(&token_a), token_hash(&token_b));
    }

    #[test]
    fn enrolment_checks_its_input() {
        let node = |node: &str, stores: Option<Vec<&str>>| Enrol {
            role: Role::Node,
            node: Some(node.into()),
            stores: stores.map(|s| s.into_iter().map(Into::into).collect()),
            topics: None,
            label: String::new(),
        };
        let (credential, token) = node("edge-a", None).issue().unwrap();
        assert_eq!(credential.stores, vec!["*"]);
        assert_eq!(credential.token_sha256, token_hash(&token));
        assert!(
            !credential
                .public()
                .to_string()
                .contains(&credential.token_sha256)
        );
        assert!(node("", None).issue().is_err());
        assert!(node(&"n".repeat(65), None).issue().is_err());
        assert!(node("a", Some(vec!["a\0b"])).issue().is_err());
        let reader = Enrol {
            role: Role::Reader,
            node: Some("x".into()),
            stores: None,
            topics: None,
            label: "dash".into(),
        };
        assert!(reader.issue().is_err());
    }
}
