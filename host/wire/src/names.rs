//! The name rules: function names (modules folder, router), store names,
//! node ids and topics. Edge and cloud check the same rules, so nothing one
//! side refuses can arrive through the other.

/// Longest accepted function name; a DNS label's limit, so a name can also be
/// used as a subdomain later.
pub const MAX_NAME_LEN: usize = 63;

/// [`is_valid`]'s rule in words, for error messages.
pub const RULE: &str =
    "lowercase letters, digits, '-' and '_', starting with a letter or a digit, at most 63 bytes";

/// Whether `name` is a valid function name: `[a-z0-9][a-z0-9_-]*`, at most
/// [`MAX_NAME_LEN`] bytes.
///
/// The rule keeps names safe as URL path segments and file names, and makes
/// `_outpost` (the host's reserved prefix) impossible to claim.
pub fn is_valid(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit() => {}
        _ => return false,
    }
    bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// Shared store names follow the function-name rule; `default` is taken
/// (it names a function's own store).
pub fn is_shared_store_name(name: &str) -> bool {
    name != "default" && is_valid(name)
}

/// Longest node id accepted; ids travel in every version.
pub const MAX_NODE_ID_BYTES: usize = 64;

/// Node ids: `[A-Za-z0-9._-]`, 1 to [`MAX_NODE_ID_BYTES`] bytes.
pub fn is_valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Longest topic name.
pub const MAX_TOPIC_BYTES: usize = 128;

/// Topics: `[a-z0-9][a-z0-9._-]*`, at most [`MAX_TOPIC_BYTES`].
pub fn is_valid_topic(topic: &str) -> bool {
    let bytes = topic.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.len() <= MAX_TOPIC_BYTES
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["orders", "orders.created", "a-b_c.9"] {
            assert!(is_valid_topic(ok), "{ok}");
        }
        for bad in [
            "",
            ".x",
            "Orders",
            "a/b",
            "a b",
            &"x".repeat(MAX_TOPIC_BYTES + 1),
        ] {
            assert!(!is_valid_topic(bad), "{bad}");
        }
    }

    #[test]
    fn store_names_and_node_ids() {
        assert!(is_shared_store_name("sessions"));
        assert!(!is_shared_store_name("default"));
        assert!(!is_shared_store_name("@x"));
        assert!(is_valid_node_id("edge-1.eu_west"));
        for bad in ["", "a b", "é", &"n".repeat(MAX_NODE_ID_BYTES + 1)] {
            assert!(!is_valid_node_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "hello", "0", "my-fn_2", "a-", "9_"] {
            assert!(is_valid(ok), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "", "-a", "_a", "_outpost", "Hello", "a b", "a.b", "..", "a/b", "é", &long,
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
