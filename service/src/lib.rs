//! linkr.
