//! Hand-written JSON for the API's link bodies, written straight into the body buffer.
//!
//! serde_json spends most of a small body's time in many small writes and a table lookup per
//! byte of every string. Here each fixed fragment (`{"code":"`) is one copy, strings are scanned
//! eight bytes at a time and copied whole when nothing needs escaping (a validated URL never
//! does), and timestamps are formatted on the stack. The output is byte-for-byte what
//! serde_json writes for the same `#[derive(Serialize)]` struct (tested), so the derive stays
//! the documentation and the reference. Measured in benches/benches/encode.rs (`link_json`).

use std::fmt;

use bytes::{BufMut, BytesMut};
use serde::{Serialize, Serializer};

/// A value that writes itself as JSON with a [`JsonWriter`].
pub trait WriteJson {
    fn write_json(&self, out: &mut JsonWriter<'_>) -> Result<(), EncodeError>;
}

/// Why a body could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("timestamp {0} is outside the years 0000-9999 that RFC 3339 can express")]
    TimestampOutOfRange(i64),
}

/// Appends JSON tokens to a buffer. Structure (`{`, keys, commas) is the caller's, as
/// trusted static fragments; values are written correctly quoted and escaped.
pub struct JsonWriter<'a> {
    buf: &'a mut BytesMut,
}

impl<'a> JsonWriter<'a> {
    pub fn new(buf: &'a mut BytesMut) -> Self {
        Self { buf }
    }

    /// Makes room for `additional` bytes at once (the writes then never reallocate).
    #[inline]
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// A fragment of JSON syntax written as is, e.g. `{"code":`.
    #[inline]
    pub fn raw(&mut self, fragment: &'static str) {
        self.buf.extend_from_slice(fragment.as_bytes());
    }

    /// `s` as a JSON string.
    #[inline]
    pub fn string(&mut self, s: &str) {
        self.string_parts(&[s]);
    }

    /// The concatenation of `parts` as one JSON string (no intermediate `String`).
    #[inline]
    pub fn string_parts(&mut self, parts: &[&str]) {
        self.buf.put_u8(b'"');
        for part in parts {
            self.escaped(part.as_bytes());
        }
        self.buf.put_u8(b'"');
    }

    #[inline]
    pub fn u64(&mut self, n: u64) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// A unix time as an RFC 3339 string in UTC, as `time`'s `Rfc3339` formats it.
    #[inline]
    pub fn timestamp(&mut self, unix: i64) -> Result<(), EncodeError> {
        let text = rfc3339(unix)?;
        self.buf.put_u8(b'"');
        self.buf.extend_from_slice(&text);
        self.buf.put_u8(b'"');
        Ok(())
    }

    /// A timestamp, or `null`.
    #[inline]
    pub fn opt_timestamp(&mut self, unix: Option<i64>) -> Result<(), EncodeError> {
        match unix {
            Some(unix) => self.timestamp(unix),
            None => {
                self.raw("null");
                Ok(())
            }
        }
    }

    /// String contents: runs that need no escaping are copied whole.
    #[inline]
    fn escaped(&mut self, bytes: &[u8]) {
        let mut start = 0;
        while let Some(at) = find_escape(bytes, start) {
            self.buf.extend_from_slice(&bytes[start..at]);
            self.escape(bytes[at]);
            start = at + 1;
        }
        self.buf.extend_from_slice(&bytes[start..]);
    }

    /// The escape serde_json writes for `byte`.
    #[cold]
    fn escape(&mut self, byte: u8) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let short = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            _ => {
                let hex = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ];
                self.buf.extend_from_slice(&hex);
                return;
            }
        };
        self.buf.extend_from_slice(&[b'\\', short]);
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Index of the first byte at or after `from` that JSON requires escaped.
#[inline]
fn find_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    let mut words = bytes[from..].chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        if word_needs_escape(word) {
            break;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|i| at + i)
}

#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any of the 8 bytes needs escaping (exact: the classic "has a byte less than n" and
/// "has a zero byte" tests never miss one and never report one that is not there).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let quote = has_zero_byte(w ^ (ONES * u64::from(b'"')));
    let backslash = has_zero_byte(w ^ (ONES * u64::from(b'\\')));
    control | quote | backslash != 0
}

#[inline]
fn has_zero_byte(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGHS
}

/// Seconds from 0000-01-01T00:00:00Z to the unix epoch, and the last second of 9999.
const MIN_UNIX: i64 = -62_167_219_200;
const MAX_UNIX: i64 = 253_402_300_799;

/// `YYYY-MM-DDTHH:MM:SSZ` for a unix time in years 0000-9999.
#[inline]
pub fn rfc3339(unix: i64) -> Result<[u8; 20], EncodeError> {
    if !(MIN_UNIX..=MAX_UNIX).contains(&unix) {
        return Err(EncodeError::TimestampOutOfRange(unix));
    }
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00Z";
    let two = |out: &mut [u8; 20], at: usize, n: u32| {
        out[at] = b'0' + (n / 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    two(&mut out, 0, year / 100);
    two(&mut out, 2, year % 100);
    two(&mut out, 5, month);
    two(&mut out, 8, day);
    two(&mut out, 11, secs / 3600);
    two(&mut out, 14, secs / 60 % 60);
    two(&mut out, 17, secs % 60);
    Ok(out)
}

/// Year, month, day of a day count from 1970-01-01 (Howard Hinnant's `civil_from_days`),
/// for days within years 0000-9999.
fn civil_from_days(days: i64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097) as u32; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + i64::from(yoe) + i64::from(month <= 2);
    (year as u32, month, day)
}

/// A unix time that serialises as an RFC 3339 string (the same text [`JsonWriter::timestamp`]
/// writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub i64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = rfc3339(self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = rfc3339(self.0).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    use super::*;

    fn written(f: impl FnOnce(&mut JsonWriter<'_>)) -> String {
        let mut buf = BytesMut::new();
        f(&mut JsonWriter::new(&mut buf));
        String::from_utf8(buf.to_vec()).unwrap()
    }

    /// Every single character class, at every position within an 8-byte word.
    #[test]
    fn strings_are_escaped_exactly_as_serde_json_does() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "https://example.com/a?b=\"c\"&d=\\e".into(),
            "ünïcødé ✓ 🚀 \u{7f}".into(),
        ];
        for byte in 0u8..0x80 {
            for pad in 0..17 {
                let mut s = "x".repeat(pad);
                s.push(char::from(byte));
                s.push_str("tail-of-the-string");
                samples.push(s);
            }
        }
        for s in &samples {
            assert_eq!(
                written(|w| w.string(s)),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
        assert_eq!(
            written(|w| w.string_parts(&["http://h", "/", "a\"b"])),
            serde_json::to_string("http://h/a\"b").unwrap()
        );
    }

    #[test]
    fn the_word_test_matches_the_byte_test() {
        for byte in 0u8..=255 {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = byte;
                assert_eq!(
                    word_needs_escape(u64::from_le_bytes(word)),
                    needs_escape(byte),
                    "byte {byte:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn numbers_and_null() {
        assert_eq!(written(|w| w.u64(0)), "0");
        assert_eq!(written(|w| w.u64(u64::MAX)), u64::MAX.to_string());
        assert_eq!(written(|w| w.opt_timestamp(None).unwrap()), "null");
    }

    fn time_crate(unix: i64) -> String {
        OffsetDateTime::from_unix_timestamp(unix)
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    }

    #[test]
    fn timestamps_match_the_time_crate() {
        let mut unix = MIN_UNIX;
        // About 25,000 instants spread over all ten thousand years, each at a different
        // time of day, plus the edges and the leap days around 1900, 2000 and 2100.
        while unix <= MAX_UNIX {
            let text = rfc3339(unix).unwrap();
            assert_eq!(std::str::from_utf8(&text).unwrap(), time_crate(unix));
            unix += 12_614_400 + 7_919;
        }
        for unix in [
            MIN_UNIX,
            MAX_UNIX,
            -1,
            0,
            1,
            951_782_400,
            951_868_799,
            -2_203_891_200,
            4_107_542_400,
            1_718_000_000,
        ] {
            let text = rfc3339(unix).unwrap();
            assert_eq!(std::str::from_utf8(&text).unwrap(), time_crate(unix));
            assert_eq!(
                serde_json::to_string(&Timestamp(unix)).unwrap(),
                format!("\"{}\"", time_crate(unix))
            );
        }
    }

    #[test]
    fn timestamps_outside_rfc3339_are_errors_not_garbage() {
        for unix in [MIN_UNIX - 1, MAX_UNIX + 1, i64::MIN, i64::MAX] {
            assert_eq!(rfc3339(unix), Err(EncodeError::TimestampOutOfRange(unix)));
            assert!(serde_json::to_string(&Timestamp(unix)).is_err());
        }
    }
}
