//! Whole numbers in request bodies as JSON Schema defines them: `639` and `639.0` are
//! the same integer, and a document that says `integer` must accept both.

use serde::de::Error;
use serde::{Deserialize, Deserializer};

fn from_number<T: TryFrom<u64>, E: Error>(n: serde_json::Number) -> Result<T, E> {
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    });
    let v = whole.ok_or_else(|| E::custom(format!("{n} is not a whole number of 0 or more")))?;
    T::try_from(v).map_err(|_| E::custom(format!("{n} is too large")))
}

/// A whole number, written with or without a zero fraction.
pub fn number<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    from_number(serde_json::Number::deserialize(d)?)
}

/// An optional whole number (`null` or absent is none).
pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(from_number)
        .transpose()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::number")]
        n: u32,
        #[serde(default, deserialize_with = "super::optional")]
        o: Option<u32>,
    }

    fn parse(s: &str) -> Result<(u32, Option<u32>), String> {
        serde_json::from_str::<Body>(s)
            .map(|b| (b.n, b.o))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_with_or_without_a_fraction() {
        assert_eq!(parse(r#"{"n": 639}"#), Ok((639, None)));
        assert_eq!(parse(r#"{"n": 639.0, "o": 7.0}"#), Ok((639, Some(7))));
        assert_eq!(parse(r#"{"n": 1, "o": null}"#), Ok((1, None)));
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": "1"}"#,
            r#"{"n": 1e300}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
