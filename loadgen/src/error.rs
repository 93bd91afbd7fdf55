//! The load generator's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// Bad input caught after parsing (a target URL, a missing API key, ...): exit 2.
    #[error("{0}")]
    Usage(String),
    #[error("goose: {0}")]
    Goose(String),
    #[error("http client: {0}")]
    Client(String),
    #[error(
        "linkr binary not found at {0} (build it with `cargo build --release -p linkr`, or pass --linkr PATH)"
    )]
    LinkrNotFound(PathBuf),
    #[error("spawned linkr: {0}")]
    Spawn(String),
    #[error("seeding links: {0}")]
    Seed(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("interrupted")]
    Interrupted,
}

impl LoadgenError {
    pub(crate) fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::File {
            path: path.into(),
            source,
        }
    }
}

impl From<goose::GooseError> for LoadgenError {
    fn from(e: goose::GooseError) -> Self {
        Self::Goose(e.to_string())
    }
}

impl From<reqwest013::Error> for LoadgenError {
    fn from(e: reqwest013::Error) -> Self {
        Self::Client(e.to_string())
    }
}
