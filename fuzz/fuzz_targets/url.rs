//! `TargetUrl::parse` on any UTF-8: never panics; what it accepts is an http(s) URL of at most
//! 2048 printable ASCII bytes whose normal form is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkr::domain::{MAX_URL_BYTES, TargetUrl};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = TargetUrl::parse(input) else {
        return;
    };
    let out = url.as_str();
    assert!(input.len() <= MAX_URL_BYTES);
    assert!(out.len() <= MAX_URL_BYTES, "{out}");
    assert!(
        out.starts_with("http://") || out.starts_with("https://"),
        "{out}"
    );
    assert!(out.bytes().all(|b| b.is_ascii_graphic()), "{out:?}");
    let again = TargetUrl::parse(out).expect("the normal form is accepted");
    assert_eq!(again.as_str(), out, "normalisation is idempotent");
});
