//! Checks on user input, each failing with a sentence that says how to fix it.

use std::collections::BTreeMap;

use super::error::ApiError;

/// A name that is also a DNS label: 1–63 of a-z, 0-9 and '-', not starting or ending with '-'.
pub fn dns_label(what: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "{what} {value:?} is not valid: use 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
        )))
    }
}

/// A host:port address with a non-zero port.
pub fn host_port(what: &str, value: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::InvalidArgument(format!(
            "{what} {value:?} is not an address: use HOST:PORT, e.g. 127.0.1.1:7300"
        ))
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(())
}

/// Label keys are DNS labels; values are at most 1 KiB.
pub fn labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in labels {
        dns_label("label key", k)?;
        if v.len() > 1024 {
            return Err(ApiError::InvalidArgument(format!(
                "label {k:?} is longer than 1024 bytes"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_addresses() {
        assert!(dns_label("name", "h1").is_ok());
        assert!(dns_label("name", "db-01").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"x".repeat(64)] {
            assert!(dns_label("name", bad).is_err(), "{bad:?}");
        }
        assert!(host_port("addr", "127.0.1.1:7300").is_ok());
        for bad in ["127.0.1.1", "127.0.1.1:0", ":7300", "h:x", "a b:1"] {
            assert!(host_port("addr", bad).is_err(), "{bad:?}");
        }
    }
}
