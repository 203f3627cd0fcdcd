//! Bearer-token checks, shared by the cloud API and the admin listener.

use http::{HeaderMap, header};

/// Whether `headers` carry `Authorization: Bearer <token>`. Compared in
/// constant time, so the token cannot be guessed byte by byte.
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let expected = token.as_bytes();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, "t0k"));
        for (value, ok) in [
            ("Bearer t0k", true),
            ("Bearer t0k2", false),
            ("Bearer t0", false),
            ("bearer t0k", false),
            ("t0k", false),
        ] {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(authorized(&headers, "t0k"), ok, "{value}");
        }
    }
}
