//! A tiny container image for tests, built on the spot: one uncompressed layer holding the
//! static busybox (`/bin/busybox` from the `busybox-static` package) with a symlink per applet,
//! written as an OCI image layout and pushed with `skiff_oci_shim::image::push_image_layout` —
//! no docker, no network. Also as a `.tar.gz` of the layout (what `skiff push` takes), and
//! pushed to any registry with any credentials.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use skiff_oci_shim::image::{Auth, RegistryCredentials, push_image_layout};

use crate::Skiff;

/// Where the static busybox is expected.
pub const BUSYBOX: &str = "/bin/busybox";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_size(size);
    header
}

/// The layer: `/bin/busybox`, `/bin/<applet>` links, the usual empty directories and an
/// `/etc/passwd` with root and nobody.
pub fn busybox_layer() -> Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| format!("reading {BUSYBOX} (install busybox-static)"))?;
    let list = std::process::Command::new(BUSYBOX).arg("--list").output().context("busybox --list")?;
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp", "var", "root"] {
        tar.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), dir, std::io::empty())?;
    }
    tar.append_data(&mut header(tar::EntryType::Regular, 0o755, busybox.len() as u64), "bin/busybox", &busybox[..])?;
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
    tar.append_data(&mut header(tar::EntryType::Regular, 0o644, passwd.len() as u64), "etc/passwd", &passwd[..])?;
    Ok(tar.into_inner()?)
}

/// Writes the busybox image (Cmd `sh`) as an OCI image layout in `dir`, tagged `tag`.
pub fn write_busybox_layout(dir: &Path, tag: &str) -> Result<()> {
    let layer = busybox_layer()?;
    write_layout(dir, tag, &layer, "application/vnd.oci.image.layer.v1.tar", &digest(&layer))?;
    Ok(())
}

/// Writes a one-layer linux/amd64 image (Cmd `sh`, `PATH=/bin`) as an OCI image layout in `dir`,
/// tagged `tag`: `layer` is the blob as stored (of `media_type`), `diff_id` the digest of its
/// uncompressed tar. Returns the path of the layer blob.
pub fn write_layout(dir: &Path, tag: &str, layer: &[u8], media_type: &str, diff_id: &str) -> Result<PathBuf> {
    write_layout_for(dir, tag, layer, media_type, diff_id, "amd64")
}

/// As [`write_layout`], for linux on `arch` (`amd64`, `arm64`, …).
pub fn write_layout_for(
    dir: &Path,
    tag: &str,
    layer: &[u8],
    media_type: &str,
    diff_id: &str,
    arch: &str,
) -> Result<PathBuf> {
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string()
    .into_bytes();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": media_type, "digest": digest(layer), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    for blob in [layer, &config[..], &manifest[..]] {
        std::fs::write(blobs.join(digest(blob).trim_start_matches("sha256:")), blob)?;
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest),
        "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag},
        "platform": {"os": "linux", "architecture": arch},
    }]});
    std::fs::write(dir.join("index.json"), index.to_string())?;
    Ok(blobs.join(digest(layer).trim_start_matches("sha256:")))
}

/// Writes busybox as a multi-platform image layout in `dir`: `index.json` lists a linux/amd64
/// and a linux/arm64 manifest (same layer; only the config's architecture differs) with no
/// names, as a multi-platform build exports it. Returns the manifest digests by architecture.
pub fn write_busybox_multi_platform_layout(dir: &Path) -> Result<Vec<(String, String)>> {
    let layer = busybox_layer()?;
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for arch in ["amd64", "arm64"] {
        write_layout_for(dir, "unused", &layer, "application/vnd.oci.image.layer.v1.tar", &digest(&layer), arch)?;
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
        let mut entry = index["manifests"][0].clone();
        entry.as_object_mut().context("index entry")?.remove("annotations");
        digests.push((arch.to_string(), entry["digest"].as_str().context("digest")?.to_string()));
        entries.push(entry);
    }
    let index =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    std::fs::write(dir.join("index.json"), index.to_string())?;
    Ok(digests)
}

/// Builds the busybox image and pushes it to `skiff`'s built-in registry as `<api host>/name:tag`;
/// returns the reference pods use.
pub async fn push_busybox(skiff: &Skiff, name: &str, tag: &str) -> Result<String> {
    let dir = tempfile::Builder::new().prefix("skiff-busybox-").tempdir()?;
    write_busybox_layout(dir.path(), tag)?;
    let host = skiff.url.trim_start_matches("https://").trim_end_matches('/');
    let reference = format!("{host}/{name}:{tag}");
    let creds = RegistryCredentials {
        auth: skiff.info.token.clone().map(Auth::Bearer),
        insecure_registries: Vec::new(),
        extra_root_ca_pem: Some(String::from_utf8(skiff.info.ca_pem.clone()).context("cluster CA is not UTF-8")?),
    };
    push_image_layout(dir.path(), &reference, &creds).await.with_context(|| format!("pushing {reference}"))?;
    Ok(reference)
}

/// Writes the busybox image layout (tagged `tag`) as a gzip-compressed tar at `path`, the
/// layout's files at the archive's root (as `skopeo copy … oci-archive:` writes them).
pub fn write_busybox_archive(path: &Path, tag: &str) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("skiff-busybox-").tempdir()?;
    write_busybox_layout(dir.path(), tag)?;
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
    tar.append_dir_all(".", dir.path()).context("archiving the layout")?;
    tar.into_inner()?.finish()?;
    Ok(())
}

/// Pushes the busybox image to `reference` (any registry) with `creds`.
pub async fn push_busybox_to(reference: &str, creds: &RegistryCredentials) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("skiff-busybox-").tempdir()?;
    let tag = reference.rsplit_once(':').map(|(_, t)| t).filter(|t| !t.contains('/')).unwrap_or("latest");
    write_busybox_layout(dir.path(), tag)?;
    push_image_layout(dir.path(), reference, creds).await.with_context(|| format!("pushing {reference}"))?;
    Ok(())
}
