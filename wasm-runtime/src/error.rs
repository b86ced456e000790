//! Error types of the runtime: one per operation family, each carrying enough context for a
//! container status message (the node agent shows them as `waiting` / `terminated` reasons).

use std::path::PathBuf;

/// Building the engine or preparing the cache directory failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the engine configuration.
    #[error("creating the wasmtime engine: {0}")]
    Engine(String),
    /// The compiled-artifact cache directory could not be created.
    #[error("creating the artifact cache directory {path}: {source}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The epoch ticker thread could not be started.
    #[error("starting the epoch ticker thread: {0}")]
    Ticker(std::io::Error),
    /// [`crate::RuntimeConfig::extra_tls_roots_pem`] is not a PEM of usable root certificates.
    #[error("extra TLS roots: {0}")]
    TlsRoots(String),
}

/// An artifact could not be turned into something runnable.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly module or component at all.
    #[error("invalid WebAssembly binary: {0}")]
    InvalidBinary(String),
    /// The binary is WebAssembly but fails validation or compilation.
    #[error("compiling WebAssembly: {0}")]
    Compile(String),
    /// Valid WebAssembly, but neither a `wasi:http/proxy` nor a `wasi:cli/command` component nor
    /// a wasip1 command module; or it imports something Skiff does not provide.
    #[error("unsupported WebAssembly artifact: {0}")]
    Unsupported(String),
    /// The bytes do not hash to the digest they were pulled under.
    #[error("artifact digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller named.
        expected: String,
        /// The digest of the bytes.
        actual: String,
    },
}

/// Starting a guest failed (before it ran any code of its own).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The artifact has the other shape (e.g. `serve_http` on a command).
    #[error("artifact {digest} is a {actual:?} workload, not {wanted:?}")]
    WrongShape {
        /// The artifact.
        digest: String,
        /// Its shape.
        actual: crate::Shape,
        /// The shape the call needs.
        wanted: crate::Shape,
    },
    /// A preopened directory could not be opened on the host.
    #[error("opening volume {host} for {guest}: {message}")]
    Preopen {
        /// Host path.
        host: PathBuf,
        /// Guest path.
        guest: String,
        /// Why.
        message: String,
    },
    /// Binding the HTTP listener failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The pod's network namespace could not be joined.
    #[error("pod network namespace {path}: {message}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The guest's thread could not be started.
    #[error("starting the guest thread: {0}")]
    Thread(std::io::Error),
    /// wasmtime refused to set up the instance.
    #[error("preparing the guest: {0}")]
    Setup(String),
}
