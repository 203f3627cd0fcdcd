//! How a value sits in a store's sled tree: its version, then the value or
//! a tombstone. Tombstones let a delete win or lose against a concurrent
//! write like any other write.

use crate::Version;

const FORMAT: u8 = 1;
const LIVE: u8 = 0;
const TOMBSTONE: u8 = 1;

/// A decoded tree value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Who wrote the value and when, for last-writer-wins.
    pub version: Version,
    /// `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Encodes a tree value: `None` stores a tombstone.
pub fn encode(version: &Version, value: Option<&[u8]>) -> Vec<u8> {
    let node = version.node.as_bytes();
    let node_len = node.len().min(255);
    let mut out = Vec::with_capacity(12 + node_len + value.map_or(0, <[u8]>::len));
    out.push(FORMAT);
    out.extend_from_slice(&version.hlc.to_be_bytes());
    out.push(node_len as u8);
    out.extend_from_slice(&node[..node_len]);
    match value {
        Some(value) => {
            out.push(LIVE);
            out.extend_from_slice(value);
        }
        None => out.push(TOMBSTONE),
    }
    out
}

/// Decodes a tree value; `None` if it is not in this format (corruption).
pub fn decode(bytes: &[u8]) -> Option<Stored> {
    let (&format, rest) = bytes.split_first()?;
    if format != FORMAT || rest.len() < 9 {
        return None;
    }
    let hlc = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let node_len = rest[8] as usize;
    let rest = &rest[9..];
    let node = std::str::from_utf8(rest.get(..node_len)?).ok()?.to_owned();
    let (&flag, value) = rest[node_len..].split_first()?;
    let value = match flag {
        LIVE => Some(value.to_vec()),
        TOMBSTONE => None,
        _ => return None,
    };
    Some(Stored {
        version: Version { hlc, node },
        value,
    })
}

/// Just the live value, without copying the version out.
pub fn live_value(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.first() != Some(&FORMAT) || bytes.len() < 10 {
        return None;
    }
    let node_len = bytes[9] as usize;
    let (&flag, value) = bytes.get(10 + node_len..)?.split_first()?;
    (flag == LIVE).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_values_and_tombstones() {
        let version = Version {
            hlc: 42 << 16,
            node: "edge-1".into(),
        };
        for value in [Some(&b""[..]), Some(&b"hello"[..]), None] {
            let bytes = encode(&version, value);
            let stored = decode(&bytes).unwrap();
            assert_eq!(stored.version, version);
            assert_eq!(stored.value.as_deref(), value);
            assert_eq!(live_value(&bytes), value);
        }
    }

    #[test]
    fn garbage_does_not_decode() {
        for bytes in [
            &b""[..],
            b"\x02abc",
            b"\x01short",
            b"\x01\0\0\0\0\0\0\0\x01\x05ab",
        ] {
            assert_eq!(decode(bytes), None);
        }
    }
}
