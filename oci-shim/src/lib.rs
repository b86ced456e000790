//! The OCI side of the node runtime trait: image pull into a content store shared with WASM
//! artifacts, layer unpacking into snapshots, OCI runtime spec generation and driving `runc`,
//! and per-pod network namespaces through the CNI plugins.
//!
//! Not implemented yet: this crate holds only its overview until the OCI-containers issue fills it.
