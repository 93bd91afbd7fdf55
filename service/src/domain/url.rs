//! Redirect targets.

use std::fmt;

use super::DomainError;

/// Longest URL accepted, before and after normalisation.
pub const MAX_URL_BYTES: usize = 2048;

/// What the OpenAPI document promises [`TargetUrl::parse`] accepts, as an ECMA-262 regular
/// expression: http(s), a DNS-like host (up to nine labels of at most 63 characters, the last
/// starting with a letter so that it is never read as an IPv4 address, no `xn--` label, which
/// would have to be valid punycode), a port below 10000, then a path (at least `/`: without it
/// normalisation adds one, a byte over the limit at 2048), query and fragment characters that
/// normalisation keeps as they are. With `maxLength` 2048 every string it
/// matches is accepted; the server accepts more (IP hosts, Unicode, characters it
/// percent-encodes). [`URL_PATTERN_BODY`] is the same without the lookahead.
pub const URL_SCHEMA_PATTERN: &str = concat!(
    "^[Hh][Tt][Tt][Pp][Ss]?://(?![^/?#]*[Xx][Nn]--)",
    url_pattern_tail!()
);

/// [`URL_SCHEMA_PATTERN`] without the `xn--` lookahead (for regex engines without lookaround).
pub const URL_PATTERN_BODY: &str = concat!("^[Hh][Tt][Tt][Pp][Ss]?://", url_pattern_tail!());

/// Host, port, path, query and fragment of the two patterns.
macro_rules! url_pattern_tail {
    () => {
        concat!(
            "([A-Za-z0-9-]{1,63}\\.){0,8}[A-Za-z][A-Za-z0-9-]{0,62}(:[0-9]{1,4})?",
            "(/[A-Za-z0-9._~!$&()*+,;=:@%/-]*)",
            "(\\?[A-Za-z0-9._~!$&()*+,;=:@%/?-]*)?",
            "(#[A-Za-z0-9._~!$&()*+,;=:@%/?-]*)?$",
        )
    };
}
use url_pattern_tail;

/// An absolute http(s) URL with a host, at most [`MAX_URL_BYTES`] bytes, stored in the
/// `url` crate's normalised serialisation. That form is printable ASCII, so it is always a
/// valid `Location` header value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TargetUrl(String);

impl TargetUrl {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let invalid = |msg: String| DomainError::InvalidUrl(msg);
        if s.len() > MAX_URL_BYTES {
            return Err(invalid(format!(
                "the url is {} bytes long; at most {MAX_URL_BYTES} are allowed",
                s.len()
            )));
        }
        let parsed = ::url::Url::parse(s).map_err(|e| {
            invalid(format!(
                "{e}; expected an absolute URL such as https://example.com/page"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "scheme {:?} is not allowed; only http and https URLs can be shortened",
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the url has no host".into()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "the url contains a user name or password; remove the credentials".into(),
            ));
        }
        let normalised = String::from(parsed);
        if normalised.len() > MAX_URL_BYTES {
            return Err(invalid(format!(
                "the url is {} bytes long once encoded; at most {MAX_URL_BYTES} are allowed",
                normalised.len()
            )));
        }
        if !normalised.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "the url cannot be used as a redirect target".into(),
            ));
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl AsRef<str> for TargetUrl {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for TargetUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_validation_table() {
        let long_path = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES - 20));
        let too_long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(long_path.len(), MAX_URL_BYTES);
        let cases: &[(&str, bool)] = &[
            ("https://example.com", true),
            ("http://example.com/a?b=c#d", true),
            ("HTTPS://EXAMPLE.COM/Path", true),
            ("http://127.0.0.1:8080/x", true),
            ("http://[::1]/", true),
            ("https://bücher.example/ä ö", true),
            (&long_path, true),
            ("", false),
            ("example.com", false),
            ("/relative/path", false),
            ("ftp://example.com/file", false),
            ("javascript:alert(1)", false),
            ("mailto:someone@example.com", false),
            ("data:text/html,hi", false),
            ("file:///etc/passwd", false),
            ("http://", false),
            ("https://user:pw@example.com/", false),
            ("https://exa mple.com/", false),
            (&too_long, false),
        ];
        for (input, ok) in cases {
            assert_eq!(TargetUrl::parse(input).is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn urls_are_normalised_to_printable_ascii() {
        let url = TargetUrl::parse("HTTPS://Bücher.Example/ä ö?q=1 2#frag ment").unwrap();
        assert_eq!(
            url.as_str(),
            "https://xn--bcher-kva.example/%C3%A4%20%C3%B6?q=1%202#frag%20ment"
        );
        assert_eq!(
            TargetUrl::parse("https://example.com").unwrap().as_str(),
            "https://example.com/"
        );
        let url = TargetUrl::parse("https://example.com/\r\nSet-Cookie:x=1").unwrap();
        assert!(url.as_str().bytes().all(|b| b.is_ascii_graphic()), "{url}");
    }

    #[test]
    fn url_errors_say_what_to_fix() {
        let msg = TargetUrl::parse("ftp://x.org").unwrap_err().to_string();
        assert!(msg.contains("ftp") && msg.contains("http"), "{msg}");
        let msg = TargetUrl::parse("example.com").unwrap_err().to_string();
        assert!(msg.contains("absolute URL"), "{msg}");
    }
}
