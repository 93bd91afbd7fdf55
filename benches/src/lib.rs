//! Shared helpers for the bench files: allocation-counting bench groups, fixtures and
//! the "obvious alternatives" that linkr's hot paths are measured against.

pub mod alternatives;
pub mod support;
