//! What a function author links into a WASM guest: HTTP handler helpers over `wasi:http`, and
//! access to config and secrets.
//!
//! Not implemented yet: this crate holds only its overview until the WASM-pods issue fills it.
