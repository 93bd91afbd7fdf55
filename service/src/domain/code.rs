//! Short codes: validation, base62 and unguessable generation.

use std::fmt;

use compact_str::CompactString;
use rand::Rng;

use super::DomainError;

/// Longest custom code accepted.
pub const MAX_CODE_LEN: usize = 64;
/// Length of a generated code: 62^7 ≈ 3.5e12 possible codes.
pub const GENERATED_LEN: usize = 7;

/// Names that would shadow a route of the service (compared ignoring ASCII case).
pub const RESERVED: &[&str] = &[
    "healthz", "readyz", "startupz", "v1", "metrics", "debug", "openapi",
];

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A short code: `[A-Za-z0-9_-]{1,64}` and not a reserved route name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortCode(CompactString);

impl ShortCode {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if s.is_empty() {
            return Err(DomainError::InvalidCode(
                "the code must not be empty".into(),
            ));
        }
        if s.len() > MAX_CODE_LEN {
            return Err(DomainError::InvalidCode(format!(
                "the code is {} characters long; at most {MAX_CODE_LEN} are allowed",
                s.len()
            )));
        }
        if let Some(bad) = s.chars().find(|c| !is_code_char(*c)) {
            return Err(DomainError::InvalidCode(format!(
                "{bad:?} is not allowed; use only letters A-Z a-z, digits 0-9, '_' and '-'"
            )));
        }
        if is_reserved(s) {
            return Err(DomainError::InvalidCode(format!(
                "{s:?} is reserved by the service; choose another code"
            )));
        }
        Ok(Self(CompactString::new(s)))
    }

    /// For codes read back from the store, which were validated when created.
    pub(crate) fn from_trusted(s: &str) -> Self {
        debug_assert!(Self::parse(s).is_ok(), "untrusted code {s:?}");
        Self(CompactString::new(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The rule of [`ShortCode::parse`] as an ECMA-262 regular expression (the OpenAPI document's
/// `pattern`): the character set and length, and a negative lookahead for the reserved names in
/// any letter case.
pub fn schema_pattern() -> String {
    let reserved: Vec<String> = RESERVED
        .iter()
        .map(|name| {
            name.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    format!(
        "^(?!(?:{})$)[A-Za-z0-9_-]{{1,{MAX_CODE_LEN}}}$",
        reserved.join("|")
    )
}

fn is_code_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_reserved(s: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s))
}

impl fmt::Display for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl AsRef<str> for ShortCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ShortCode {
    type Error = DomainError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl serde::Serialize for ShortCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A fresh code of [`GENERATED_LEN`] base62 characters from the thread-local CSPRNG
/// (ChaCha, seeded from the OS), so codes cannot be predicted from earlier ones.
/// Uniqueness against stored codes is checked by the store when it inserts the link.
pub fn generate() -> ShortCode {
    const SPACE: u64 = 62u64.pow(GENERATED_LEN as u32);
    let mut rng = rand::rng();
    loop {
        let mut n = rng.random_range(0..SPACE);
        let mut buf = [0u8; GENERATED_LEN];
        for b in buf.iter_mut().rev() {
            *b = ALPHABET[(n % 62) as usize];
            n /= 62;
        }
        let s = std::str::from_utf8(&buf).expect("base62 is ASCII");
        // Only the 7-character names can come up ("healthz", "metrics", "openapi"): p ≈ 1e-12.
        if !is_reserved(s) {
            return ShortCode(CompactString::new(s));
        }
    }
}

/// Base62 (`0-9A-Za-z`) of `n` without leading zeros, written into `out`.
pub fn encode_base62(mut n: u64, out: &mut [u8; 11]) -> &str {
    let mut start = out.len();
    loop {
        start -= 1;
        out[start] = ALPHABET[(n % 62) as usize];
        n /= 62;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&out[start..]).expect("base62 is ASCII")
}

/// Inverse of [`encode_base62`]; `None` for an empty string, a non-base62 character or overflow.
pub fn decode_base62(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'Z' => b - b'A' + 10,
            b'a'..=b'z' => b - b'a' + 36,
            _ => return None,
        };
        acc.checked_mul(62)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn code_validation_table() {
        let long_ok = "a".repeat(64);
        let too_long = "a".repeat(65);
        let cases: &[(&str, bool)] = &[
            ("a", true),
            ("abc123", true),
            ("A_b-C", true),
            ("-", true),
            ("healthzz", true),
            (&long_ok, true),
            ("", false),
            (&too_long, false),
            ("has space", false),
            ("slash/x", false),
            ("dot.x", false),
            ("percent%20", false),
            ("ümlaut", false),
            ("emoji😀", false),
            ("healthz", false),
            ("READYZ", false),
            ("startupz", false),
            ("v1", false),
            ("metrics", false),
            ("debug", false),
            ("openapi.json", false),
        ];
        for (input, ok) in cases {
            assert_eq!(ShortCode::parse(input).is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn code_errors_say_what_to_fix() {
        let msg = ShortCode::parse("a b").unwrap_err().to_string();
        assert!(msg.contains("' '") && msg.contains("letters"), "{msg}");
        let msg = ShortCode::parse(&"x".repeat(65)).unwrap_err().to_string();
        assert!(msg.contains("65") && msg.contains("64"), "{msg}");
        let msg = ShortCode::parse("healthz").unwrap_err().to_string();
        assert!(msg.contains("reserved"), "{msg}");
    }

    #[test]
    fn base62_round_trips() {
        let mut buf = [0u8; 11];
        assert_eq!(encode_base62(0, &mut buf), "0");
        assert_eq!(encode_base62(61, &mut buf), "z");
        assert_eq!(encode_base62(62, &mut buf), "10");
        assert_eq!(encode_base62(u64::MAX, &mut buf), "LygHa16AHYF");
        let mut rng = rand::rng();
        let samples = [0, 1, 61, 62, 3843, 3844, u64::MAX - 1, u64::MAX]
            .into_iter()
            .chain((0..10_000).map(|_| rng.random::<u64>()));
        for n in samples {
            let s = encode_base62(n, &mut buf).to_owned();
            assert_eq!(decode_base62(&s), Some(n), "{n} -> {s}");
        }
    }

    #[test]
    fn base62_decode_rejects_garbage_and_overflow() {
        assert_eq!(decode_base62(""), None);
        assert_eq!(decode_base62("ab-c"), None);
        assert_eq!(decode_base62("LygHa16AHYG"), None);
        assert_eq!(decode_base62("zzzzzzzzzzzz"), None);
        assert_eq!(decode_base62("0010"), Some(62));
    }

    #[test]
    fn generated_codes_are_valid_and_unique_over_100k() {
        let mut seen = HashSet::with_capacity(100_000);
        for _ in 0..100_000 {
            let code = generate();
            assert_eq!(code.as_str().len(), GENERATED_LEN);
            assert!(decode_base62(code.as_str()).is_some());
            assert!(ShortCode::parse(code.as_str()).is_ok());
            assert!(seen.insert(code), "duplicate generated code");
        }
    }
}
