//! Byte-different but equivalent copies of a component: a custom section
//! appended at the end changes the file's hash without changing behaviour.

/// Unsigned LEB128, the integer encoding of wasm section headers.
pub fn leb128(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// `wasm` followed by a custom section `name` holding `payload`. Components,
/// like core modules, accept custom sections anywhere, the end included.
pub fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut content = leb128(name.len() as u64);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = Vec::with_capacity(wasm.len() + content.len() + 6);
    out.extend_from_slice(wasm);
    out.push(0x00);
    out.extend(leb128(content.len() as u64));
    out.extend(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Preamble of a component (layer 1), version 0x0d.
    const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\0\x01\0";

    fn read_leb(bytes: &[u8], at: &mut usize) -> u64 {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }

    /// (id, name of a custom section, payload) of every section after the preamble.
    fn sections(bytes: &[u8]) -> Vec<(u8, String, Vec<u8>)> {
        let mut at = COMPONENT_HEADER.len();
        let mut out = Vec::new();
        while at < bytes.len() {
            let id = bytes[at];
            at += 1;
            let size = read_leb(bytes, &mut at) as usize;
            let end = at + size;
            let mut inner = at;
            let name_len = read_leb(bytes, &mut inner) as usize;
            let name = String::from_utf8(bytes[inner..inner + name_len].to_vec()).unwrap();
            out.push((id, name, bytes[inner + name_len..end].to_vec()));
            at = end;
        }
        assert_eq!(at, bytes.len(), "sections must end exactly at the end");
        out
    }

    #[test]
    fn leb128_matches_the_spec_examples() {
        assert_eq!(leb128(0), [0x00]);
        assert_eq!(leb128(127), [0x7f]);
        assert_eq!(leb128(128), [0x80, 0x01]);
        assert_eq!(leb128(624_485), [0xe5, 0x8e, 0x26]);
    }

    #[test]
    fn appended_sections_parse_back_and_keep_the_original_bytes() {
        let once = with_custom_section(COMPONENT_HEADER, "outpost-bench-1", b"x");
        // A payload over 127 bytes needs a two-byte section size.
        let payload = vec![7u8; 300];
        let twice = with_custom_section(&once, "outpost-bench-2", &payload);
        assert!(twice.starts_with(&once));
        assert!(once.starts_with(COMPONENT_HEADER));
        assert_eq!(
            sections(&twice),
            [
                (0, "outpost-bench-1".to_owned(), b"x".to_vec()),
                (0, "outpost-bench-2".to_owned(), payload),
            ]
        );
    }
}
