//! Whole numbers of seconds in JSON, as JSON Schema counts integers: `155` and `155.0` alike.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A count of seconds that accepts a JSON number with no fractional part, whatever its
/// notation (`86400`, `86400.0`, `8.64e4`): the OpenAPI document's `integer` means that.
/// Negative or fractional numbers are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WholeSeconds(pub u64);

impl<'de> Deserialize<'de> for WholeSeconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_u64(WholeSecondsVisitor)
    }
}

struct WholeSecondsVisitor;

/// 2^64, the first whole `f64` that a `u64` cannot hold.
const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0;

impl Visitor<'_> for WholeSecondsVisitor {
    type Value = WholeSeconds;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole, non-negative number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<WholeSeconds, E> {
        Ok(WholeSeconds(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<WholeSeconds, E> {
        u64::try_from(v)
            .map(WholeSeconds)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<WholeSeconds, E> {
        if v.is_finite() && v.fract() == 0.0 && (0.0..U64_LIMIT).contains(&v) {
            // Whole and in range: the conversion is exact.
            Ok(WholeSeconds(v as u64))
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

/// `#[serde(default, deserialize_with = "...")]` for an `Option<u64>` of seconds.
pub fn optional_whole_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    Ok(Option::<WholeSeconds>::deserialize(deserializer)?.map(|s| s.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "optional_whole_seconds")]
        ttl: Option<u64>,
    }

    fn ttl(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<Body>(json)
            .map(|b| b.ttl)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_any_notation_are_seconds() {
        assert_eq!(ttl(r#"{}"#), Ok(None));
        assert_eq!(ttl(r#"{"ttl": null}"#), Ok(None));
        assert_eq!(ttl(r#"{"ttl": 155}"#), Ok(Some(155)));
        assert_eq!(ttl(r#"{"ttl": 155.0}"#), Ok(Some(155)));
        assert_eq!(ttl(r#"{"ttl": 1.55e2}"#), Ok(Some(155)));
        assert_eq!(ttl(r#"{"ttl": 0}"#), Ok(Some(0)));
        assert_eq!(ttl(r#"{"ttl": 18446744073709551615}"#), Ok(Some(u64::MAX)));
        assert_eq!(
            ttl(r#"{"ttl": 9.0e18}"#),
            Ok(Some(9_000_000_000_000_000_000))
        );
    }

    #[test]
    fn fractions_negatives_and_other_types_are_refused() {
        for json in [
            r#"{"ttl": 1.5}"#,
            r#"{"ttl": -1}"#,
            r#"{"ttl": -1.0}"#,
            r#"{"ttl": 1.8446744073709552e19}"#,
            r#"{"ttl": 1e400}"#,
            r#"{"ttl": "60"}"#,
            r#"{"ttl": true}"#,
            r#"{"ttl": [60]}"#,
        ] {
            let err = ttl(json).expect_err(json);
            assert!(!err.is_empty(), "{json}");
        }
    }
}
