//! Parse-once domain types: a value of these types is valid by construction.

pub mod code;
pub mod seconds;
mod url;

pub use self::url::{MAX_URL_BYTES, TargetUrl, URL_PATTERN_BODY, URL_SCHEMA_PATTERN};
pub use code::ShortCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    #[error("invalid code: {0}")]
    InvalidCode(String),
}
