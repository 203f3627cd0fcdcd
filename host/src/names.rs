//! Function names: the one rule shared by the modules folder and the router.

/// Longest accepted function name; a DNS label's limit, so a name can also be
/// used as a subdomain later.
pub const MAX_NAME_LEN: usize = 63;

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

#[cfg(test)]
mod tests {
    use super::*;

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
