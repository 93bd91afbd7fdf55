//! Parse-once domain types: a value of these types is valid by construction.

pub mod code;
mod url;

pub use self::url::{MAX_URL_BYTES, TargetUrl};
pub use code::ShortCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    #[error("invalid code: {0}")]
    InvalidCode(String),
}
