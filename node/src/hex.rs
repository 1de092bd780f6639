//! Lower-case hex, the one spelling of digests, token parts and manifest checksums.

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `s` spells in hex (either case); None if it is not hex.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(super::encode(&[0x8a, 0x74, 0x47, 0x22]), "8a744722");
        assert_eq!(super::decode("8A744722"), Some(vec![0x8a, 0x74, 0x47, 0x22]));
        for bad in ["8a7", "zz", "8a7é"] {
            assert_eq!(super::decode(bad), None, "{bad}");
        }
    }
}
