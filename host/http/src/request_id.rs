//! Request ids: taken from the client's `x-request-id` when it is sane,
//! otherwise made here; returned in the response, shown to the guest and
//! written on every log line about the request.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The request-id header.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept; a longer one is replaced.
pub const MAX_LEN: usize = 128;

/// The request's id, set in `headers` so the guest sees the same one.
pub fn take_or_make(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(given) = headers.get(&HEADER).filter(|v| acceptable(v.as_bytes())) {
        return given.clone();
    }
    let id = make();
    headers.insert(HEADER, id.clone());
    id
}

/// Visible ASCII without spaces or quotes, so it can be logged and echoed
/// as is; anything else could forge or break log lines.
fn acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'))
}

/// 16 random hex digits.
fn make() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u64(..);
    let mut out = [0u8; 16];
    for byte in out.iter_mut() {
        *byte = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&out).expect("hex digits are a valid header value")
}

/// The id as text for logs.
pub fn as_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_id_and_replaces_a_bad_one() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(take_or_make(&mut headers), "abc-123");

        for bad in ["", "has space", "quote\"d", &"x".repeat(MAX_LEN + 1)] {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            let id = take_or_make(&mut headers);
            assert_eq!(id.len(), 16, "{bad:?} replaced");
            assert_eq!(headers.get(HEADER), Some(&id), "the guest sees the new id");
        }
    }

    #[test]
    fn made_ids_differ() {
        let mut a = HeaderMap::new();
        let mut b = HeaderMap::new();
        assert_ne!(take_or_make(&mut a), take_or_make(&mut b));
    }
}
