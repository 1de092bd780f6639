//! Checks on user input, each failing with a sentence that says how to fix it.

use std::collections::BTreeMap;

use super::error::ApiError;

/// A DNS label, as the OpenAPI document states it (ECMA-262 regex).
pub const DNS_LABEL: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// A database reference: its name, or `<name>.<account>` to name another account's
/// (admins only).
pub const DATABASE_REF: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$";
/// A host:port address: host characters, then a port 1-65535 without leading zeros.
pub const HOST_PORT: &str =
    "^[A-Za-z0-9._:\\[\\]-]+:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";
/// An IPv4 address or CIDR, octets and prefix without leading zeros.
pub const IPV4_CIDR: &str = "^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])){3}(/([0-9]|[12][0-9]|3[0-2]))?$";
/// Longest request id or client token.
pub const REQUEST_ID_MAX: usize = 128;
/// Longest label or tag value, in characters.
pub const LABEL_VALUE_MAX: usize = 1024;

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

/// An IPv4 address or CIDR as [`IPV4_CIDR`] states it: four decimal octets 0-255 and an
/// optional prefix 0-32, all without leading zeros.
pub fn ipv4_cidr(value: &str) -> Result<(), ApiError> {
    let number = |s: &str, max: u32| {
        !s.is_empty()
            && s.len() <= 3
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'))
            && s.parse::<u32>().is_ok_and(|n| n <= max)
    };
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value, None),
    };
    let octets: Vec<&str> = addr.split('.').collect();
    let ok = octets.len() == 4 && octets.iter().all(|o| number(o, 255)) && prefix.is_none_or(|p| number(p, 32));
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "{value:?} is not an IPv4 address or CIDR such as 10.0.0.0/8 or 192.0.2.7"
        )))
    }
}

/// A host:port address ([`HOST_PORT`]): a host name, IPv4 or bracketed IPv6 address, and a
/// port 1-65535 written without sign or leading zeros.
pub fn host_port(what: &str, value: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::InvalidArgument(format!(
            "{what} {value:?} is not an address: use HOST:PORT, e.g. 127.0.1.1:7300"
        ))
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:[]_-".contains(&b));
    let port_ok = !port.starts_with('0') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok && port_ok => Ok(()),
        _ => Err(bad()),
    }
}

/// Label (and tag) keys are DNS labels; values are at most [`LABEL_VALUE_MAX`] characters.
pub fn labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in labels {
        dns_label("label key", k)?;
        if v.chars().count() > LABEL_VALUE_MAX {
            return Err(ApiError::InvalidArgument(format!(
                "label {k:?} is longer than {LABEL_VALUE_MAX} characters"
            )));
        }
    }
    Ok(())
}

/// A client's request id (or token): at most [`REQUEST_ID_MAX`] characters.
pub fn request_id(id: Option<&str>) -> Result<(), ApiError> {
    match id {
        Some(id) if id.chars().count() > REQUEST_ID_MAX => Err(ApiError::InvalidArgument(format!(
            "request id is {} characters long; use at most {REQUEST_ID_MAX}",
            id.chars().count()
        ))),
        _ => Ok(()),
    }
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
        assert!(host_port("addr", "[::1]:7300").is_ok());
        for bad in [
            "127.0.1.1",
            "127.0.1.1:0",
            ":7300",
            "h:x",
            "a b:1",
            "h:+80",
            "h:0080",
            "h:65536",
            "h:",
        ] {
            assert!(host_port("addr", bad).is_err(), "{bad:?}");
        }
    }
}
