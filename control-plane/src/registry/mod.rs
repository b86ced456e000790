//! Per-resource strategy: what the API server knows about each kind beyond its REST shape —
//! the catalog of served resources, defaulting and validation, how the status subresource
//! splits writes — and the validated read/write path ([`rest::Registry`]) that HTTP handlers
//! and in-process controllers share.

pub mod catalog;
pub mod list;
pub mod namespaces;
pub mod object;
pub mod rest;
pub mod service_alloc;
pub mod strategy;
