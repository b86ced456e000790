//! wasmtime setup for Skiff: the engine (pooling allocator, epoch interruption, compiled
//! artifact cache), the `wasi:cli` and `wasi:http` hosts, resource limits and the mapping of a
//! pod's volumes and env onto guest capabilities.
//!
//! Not implemented yet: this crate holds only its overview until the WASM-pods issue fills it.
