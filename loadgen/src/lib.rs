//! loadgen library.
