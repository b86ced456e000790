//! Per-resource strategy: what the API server knows about each kind beyond its REST shape —
//! the catalog of served resources, defaulting and validation, and how the status subresource
//! splits writes.

pub mod catalog;
