//! `ShortCode::parse` and base62 on any UTF-8: never panic; a code is accepted exactly when it is
//! `[A-Za-z0-9_-]{1,64}` and not a reserved route name; base62 decoding inverts encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkr::domain::ShortCode;
use linkr::domain::code::{MAX_CODE_LEN, RESERVED, decode_base62, encode_base62};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let valid = (1..=MAX_CODE_LEN).contains(&input.len())
        && input
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(input));
    match ShortCode::parse(input) {
        Ok(code) => {
            assert!(valid, "accepted {input:?}");
            assert_eq!(code.as_str(), input);
        }
        Err(_) => assert!(!valid, "refused {input:?}"),
    }
    if let Some(n) = decode_base62(input) {
        let mut buf = [0u8; 11];
        let canonical = input.trim_start_matches('0');
        let canonical = if canonical.is_empty() { "0" } else { canonical };
        assert_eq!(encode_base62(n, &mut buf), canonical);
    }
});
