//! Pure facts about container image layers: which media types are layer tarballs, how a
//! layer blob is compressed, and the chain IDs that key unpacked snapshots.
//!
//! Compression is taken from the blob's first bytes (gzip and zstd have magic numbers), not
//! only from the media type: registries and old Docker versions are known to label an
//! uncompressed tar `…tar.gzip`, and containerd sniffs for the same reason. The media type
//! still decides whether the blob is a layer tarball at all.

use sha2::{Digest as _, Sha256};

/// Layer media types Skiff unpacks (OCI, OCI non-distributable, Docker v2 schema 2).
const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// OCI gzip-compressed layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd-compressed layer media type.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI uncompressed layer media type.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI image config media type.
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// Whether `media_type` is a layer tarball this module can unpack.
pub fn is_layer_media_type(media_type: &str) -> bool {
    LAYER_MEDIA_TYPES.contains(&media_type)
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (possibly several members, as `pigz` writes).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

impl Compression {
    /// Recognises the compression from the first bytes of a blob; anything without a known
    /// magic number is taken to be a plain tar (whose parse then fails loudly if it is not).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The chain ID of each layer prefix, bottom layer first, from the config's `rootfs.diff_ids`:
/// `ChainID(L0) = DiffID(L0)`, `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`.
/// A chain ID names the filesystem of a layer *and everything under it*, so two images
/// sharing a base share its snapshots, and a layer reused over a different base does not.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{parent} {diff_id}")))),
        };
        chain.push(next);
    }
    chain
}

/// The hex part of a `sha256:<hex>` digest, when it is one (64 lowercase-or-uppercase hex
/// digits); safe to use as a file name.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    digest.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(Compression::sniff(b"etc/\0\0\0"), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }

    #[test]
    fn knows_layer_media_types() {
        assert!(is_layer_media_type(OCI_LAYER_GZIP));
        assert!(is_layer_media_type(OCI_LAYER_ZSTD));
        assert!(is_layer_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"));
        assert!(!is_layer_media_type("application/wasm"));
        assert!(!is_layer_media_type("application/vnd.oci.image.config.v1+json"));
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let diff_ids = vec!["sha256:a".to_string(), "sha256:b".to_string(), "sha256:c".to_string()];
        let chain = chain_ids(&diff_ids);
        assert_eq!(chain[0], "sha256:a");
        let second = format!("sha256:{}", hex::encode(Sha256::digest(b"sha256:a sha256:b")));
        assert_eq!(chain[1], second);
        let third = format!("sha256:{}", hex::encode(Sha256::digest(format!("{second} sha256:c"))));
        assert_eq!(chain[2], third);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn hex_of_digests() {
        let hex = "ab".repeat(32);
        assert_eq!(sha256_hex(&format!("sha256:{hex}")), Some(hex.as_str()));
        assert_eq!(sha256_hex("sha256:../../etc"), None);
        assert_eq!(sha256_hex("sha512:ab"), None);
    }
}
