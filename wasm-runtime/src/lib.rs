//! wasmtime for Skiff: the engine (component model, pooling allocator, epoch interruption,
//! an on-disk cache of compiled artifacts), shape detection, the `wasi:http` server and the
//! `wasi:cli` process runner, memory limits, CPU accounting, and the mapping of a pod's
//! volumes, env and output onto guest capabilities.
//!
//! Cluster names: a guest given a [`NameResolver`] resolves them in `wasi:sockets` name
//! lookups and outgoing `wasi:http` requests (`names.rs`, `lookup.rs`, `outgoing.rs`), HTTPS
//! ones verified against the web roots plus [`RuntimeConfig::extra_tls_roots_pem`] (`tls_send.rs`).
//!
//! What it does not own: pulling artifacts (the node agent hands over bytes and a digest),
//! pod lifecycle, restarts, probes, log files (an [`OutputSink`] receives the bytes), or pod
//! IPs (the caller says where to listen).
//!
//! ```text
//! WasmRuntime::new(cfg) ─ load(digest, bytes) → Artifact { shape: Http | Command }
//!   Http:    serve_http(&artifact, guest, opts).await → HttpServer (a fresh instance per request)
//!   Command: run_command(&artifact, guest) → CommandRun (own thread) → wait().await → Exit
//! ```

mod artifact;
mod cache;
mod command;
mod compile;
mod config;
mod error;
mod guest;
mod http;
mod limits;
mod lookup;
mod names;
mod netns;
mod outgoing;
mod output;
mod runtime;
mod stats;
mod tls_send;

pub use artifact::{Artifact, Shape};
pub use command::{CommandRun, Exit};
pub use compile::{ChildArgs, Compiler, compile_from_stdin};
pub use config::RuntimeConfig;
pub use error::{LoadError, RunError, RuntimeError};
pub use guest::{GUEST_ARGV0, GuestConfig, Preopen};
pub use http::{HttpHandoff, HttpOptions, HttpServer};
pub use limits::MemoryBudget;
pub use names::{ClusterAnswer, ClusterNames, DEFAULT_NDOTS, Lookup, NameResolver};
pub use output::{DiscardOutput, OutputSink, OutputStream};
pub use runtime::{CacheStats, WasmRuntime};
pub use stats::GuestStats;
