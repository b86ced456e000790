//! Images and WASM artifacts: pulled by reference from OCI registries into one
//! content-addressed store, and WASM artifacts pushed to a registry.
//!
//! Layout: [`store`] owns the store directory and the pull policy (cache, de-duplication,
//! digest verification as blobs are written); `fetch` talks to registries through
//! `oci-client` (TLS roots, plain HTTP for insecure registries, credentials, manifest lists)
//! and classifies what a manifest describes (`artifact`, pure); [`push`] uploads a `.wasm`
//! file as a CNCF wasm OCI artifact.
//!
//! Container images: `layers` (media types, compression, chain IDs, pure), `unpack` (one
//! layer tarball into a directory in overlayfs form), [`snapshot`] (layers unpacked once
//! into `snapshots/<chain-id>/fs`, [`ImageStore::container_rootfs`]), [`config`] (the image
//! config the runtime needs), [`gc`] (removing what no image in use needs when the store
//! grows past a limit) and [`push_layout`] (uploading an OCI image layout directory).

mod artifact;
pub mod config;
mod fetch;
pub mod gc;
pub mod layers;
pub mod push;
pub mod push_layout;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use config::{ExposedPort, ImageConfig};
pub use gc::GcReport;
pub use push::{PushedArtifact, push_wasm};
pub use push_layout::push_image_layout;
pub use snapshot::ContainerImage;
pub use store::ImageStore;

use std::path::PathBuf;

/// Media type of the CNCF wasm artifact config.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of a wasm layer (the CNCF wasm OCI artifact layout).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The older layer media type of runwasi/containerd-wasm artifacts, still accepted on pull.
pub const LEGACY_WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// OCI image manifest media type.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Ask the registry every time (a tag may have moved).
    Always,
    /// Use the local copy when there is one, without contacting the registry.
    IfNotPresent,
    /// Never contact the registry; fail when there is no local copy.
    Never,
}

/// Credentials and transport settings for reaching a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryCredentials {
    /// How to authenticate, if at all.
    pub auth: Option<Auth>,
    /// `host:port`s reached over plain HTTP (never used for any other registry).
    pub insecure_registries: Vec<String>,
    /// An extra trusted root (PEM), e.g. the cluster CA for the built-in registry.
    pub extra_root_ca_pem: Option<String>,
}

/// Registry credentials. `Hash` so concurrent pulls are shared only between callers with the
/// same credentials.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Auth {
    /// HTTP Basic (also what docker clients send; token servers accept it too).
    Basic { username: String, password: String },
    /// A bearer token sent as is (the built-in registry accepts the cluster's tokens).
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { username, .. } => f.debug_struct("Basic").field("username", username).finish_non_exhaustive(),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// What a pull produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The reference as pulled, normalised (`registry/repository:tag` or `…@digest`).
    pub reference: String,
    /// Digest of the (platform) manifest: the container status's `imageID`.
    pub digest: String,
    /// What the artifact is.
    pub kind: ImageKind,
}

/// The two kinds of artifact the node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageKind {
    /// A WASM module or component, stored whole as one verified file.
    Wasm {
        /// The module's file in the store (`blobs/sha256/<hex>`); read-only, shared.
        module_path: PathBuf,
        /// Its digest (the key for compiled-artifact caches).
        module_digest: String,
    },
    /// A container image: manifest, config and every layer blob are in the store; layers
    /// are unpacked by [`ImageStore::container_rootfs`].
    Container { manifest_digest: String, config_digest: String },
}

/// Why a pull or push failed. Messages carry the registry's own words, since the node agent
/// shows them as `ErrImagePull` reasons. Cloneable so de-duplicated pulls share one result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {message}")]
    InvalidReference { reference: String, message: String },
    #[error("image {reference:?} is not present locally and the pull policy is Never")]
    NotPresent { reference: String },
    #[error("pulling {reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("{reference}: content of {digest} does not match its digest (got {actual})")]
    DigestMismatch { reference: String, digest: String, actual: String },
    #[error("{reference}: {message}")]
    Unsupported { reference: String, message: String },
    #[error("image store {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{0}")]
    InvalidArtifact(String),
    #[error("{reference}: unpacking layer {digest}: {message}")]
    Unpack { reference: String, digest: String, message: String },
    #[error(
        "{reference}: {digest} is no longer in the image store (removed by image garbage collection?); pull the image again"
    )]
    Missing { reference: String, digest: String },
}

impl ImageError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
        move |e| ImageError::Io { path: path.to_path_buf(), message: e.to_string() }
    }
}

/// `reqwest` 0.13 (inside `oci-client`) is built without a bundled crypto provider so the
/// process uses ring, like the rest of Skiff; install it once before building a client.
pub(crate) fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
