//! Embedded `redb` backend.
