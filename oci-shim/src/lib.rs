//! The OCI side of the node runtime trait: image pull into a content store shared with WASM
//! artifacts, layer unpacking into snapshots, OCI runtime spec generation and driving `runc`,
//! and per-pod network namespaces through the CNI plugins.
//!
//! Implemented so far: [`image`] — pulling artifacts by reference from any OCI registry into a
//! content-addressed store (WASM artifacts fully; container images down to manifest and
//! config, unpacking arrives with the OCI-containers issue) and pushing WASM artifacts.

pub mod image;
pub mod runtime;
