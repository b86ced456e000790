//! Pod workers (placeholder while building).
pub mod backoff;
pub mod status;
