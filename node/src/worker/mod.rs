//! Pod workers (placeholder while building).
pub mod backoff;
pub mod container;
pub mod spec;
pub mod status;
