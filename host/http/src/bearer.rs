//! Bearer-token checks, shared by the cloud API and the admin listener.

use http::{HeaderMap, header};

/// Whether `headers` carry `Authorization: Bearer <token>`.
///
/// The scheme is matched case-insensitively and the whitespace around the
/// credentials is skipped (RFC 9110 section 11), so `bearer  t0k` passes;
/// HTTP/1 strips a trailing space from the field but HTTP/2 keeps it, and
/// both must agree. An empty `token` authorizes nothing: an empty token file
/// must lock the endpoint, not open it. Compared in constant time, so the
/// token cannot be guessed byte by byte.
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    presented(headers).is_some_and(|given| same(given.as_bytes(), token.as_bytes()))
}

/// The token a request presents as `Authorization: Bearer <token>` (same
/// parsing as [`authorized`]), for callers that look tokens up.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?;
    std::str::from_utf8(credentials(value.as_bytes())?).ok()
}

/// Whether `given` equals a non-empty `expected`, in time that does not
/// depend on where they differ.
pub fn same(given: &[u8], expected: &[u8]) -> bool {
    !expected.is_empty()
        && given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The credentials of a `Bearer` field value, never empty.
fn credentials(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let split = value.iter().position(|b| matches!(b, b' ' | b'\t'))?;
    let (scheme, rest) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let given = rest.trim_ascii_start();
    (!given.is_empty()).then_some(given)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(value: &[u8], token: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(value).unwrap(),
        );
        authorized(&headers, token)
    }

    #[test]
    fn only_the_exact_token_passes() {
        assert!(!authorized(&HeaderMap::new(), "t0k"), "no header");
        for (value, ok) in [
            ("Bearer t0k", true),
            ("Bearer t0k2", false),
            ("Bearer t0", false),
            ("Bearer T0K", false),
            ("t0k", false),
            ("Basic t0k", false),
            ("Bearert0k", false),
            ("Bearer", false),
        ] {
            assert_eq!(check(value.as_bytes(), "t0k"), ok, "{value}");
        }
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for value in ["bearer t0k", "BEARER t0k", "bEaReR t0k"] {
            assert!(check(value.as_bytes(), "t0k"), "{value}");
        }
    }

    #[test]
    fn whitespace_around_the_credentials_is_skipped() {
        for value in ["Bearer  t0k", "Bearer\tt0k", "Bearer t0k ", " Bearer t0k\t"] {
            assert!(check(value.as_bytes(), "t0k"), "{value:?}");
        }
        assert!(!check(b"Bearer t 0k", "t0k"), "inner whitespace is kept");
    }

    #[test]
    fn an_empty_token_authorizes_nothing() {
        // HTTP/2 hands over `Bearer ` with its trailing space.
        for value in ["Bearer ", "Bearer", "bearer \t ", "Bearer x", ""] {
            assert!(!check(value.as_bytes(), ""), "{value:?}");
        }
        assert!(!authorized(&HeaderMap::new(), ""), "no header");
    }

    #[test]
    fn empty_credentials_never_pass() {
        assert!(!check(b"Bearer ", "t0k"));
        assert!(!check(b"Bearer   ", " "));
    }
}
