//! Shared helpers for the integration tests live in each test binary; this crate holds none.
