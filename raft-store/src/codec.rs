//! Versioned encodings: every value Keel stores or sends starts with a version byte.
//!
//! Version 1 is JSON (serde). Records use `#[serde(default)]` so a newer node
//! reads what an older one wrote; a version this build does not know is
//! refused rather than guessed at.

use serde::{de::DeserializeOwned, Serialize};

/// The encoding this build writes.
pub const VERSION: u8 = 1;

/// A value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value was empty.
    #[error("empty value")]
    Empty,
    /// Written by an encoding this build does not know.
    #[error("unknown encoding version {0} (this build reads version {VERSION})")]
    UnknownVersion(u8),
    /// The body did not parse.
    #[error("malformed body: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Encode `value` with the current version byte.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(VERSION);
    // Serializing plain data structs to a Vec cannot fail.
    serde_json::to_writer(&mut out, value).expect("serializable value");
    out
}

/// Decode a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&VERSION, body)) => Ok(serde_json::from_slice(body)?),
        Some((&v, _)) => Err(CodecError::UnknownVersion(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_versions() {
        let bytes = encode(&vec![1u32, 2, 3]);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<Vec<u32>>(&bytes).unwrap(), vec![1, 2, 3]);
        let mut future = bytes.clone();
        future[0] = 9;
        assert!(matches!(
            decode::<Vec<u32>>(&future),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(decode::<Vec<u32>>(&[]), Err(CodecError::Empty)));
    }
}
