//! Shared helpers for the bench files.
