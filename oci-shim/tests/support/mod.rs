//! Test support for the image layer tests: a throw-away `docker-registry` on loopback (a
//! trimmed copy of `tests/src/registry.rs`; oci-shim must not depend on skiff-tests), test
//! images built in memory with the `tar` crate, and pushing them with `oci-client`.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use skiff_oci_shim::image::RegistryCredentials;

/// A running `docker-registry` (apt package `docker-registry`) on a free loopback port,
/// killed on drop.
pub struct Registry {
    pub host_port: String,
    child: Child,
    storage: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new().prefix("skiff-layers-registry-").tempdir().expect("registry dir");
        let storage = dir.path().join("storage");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let host_port = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host_port}\n",
            storage.display()
        );
        std::fs::write(&config, yaml).expect("registry config");
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log).expect("log");
        let err = out.try_clone().expect("log clone");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting /usr/bin/docker-registry (apt-get install docker-registry)");
        let registry = Registry { host_port, child, storage, log, _dir: dir };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(&self.host_port) {
                stream.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
                let request = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.host_port);
                let mut answer = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.")
                    && answer.contains(" 200 ")
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "docker-registry not ready in 30 s:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The registry's own file for blob `digest`.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// Credentials reaching this registry over plain HTTP.
    pub fn creds(&self) -> RegistryCredentials {
        RegistryCredentials { insecure_registries: vec![self.host_port.clone()], ..RegistryCredentials::default() }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sha256:<hex>`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A layer tarball being built.
pub struct TarLayer(tar::Builder<Vec<u8>>);

impl TarLayer {
    pub fn new() -> TarLayer {
        TarLayer(tar::Builder::new(Vec::new()))
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

    pub fn dir(mut self, path: &str) -> TarLayer {
        let mut header = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.0.append_data(&mut header, path, std::io::empty()).expect("dir");
        self
    }

    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> TarLayer {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut header, path, data).expect("file");
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> TarLayer {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut header, path, target).expect("symlink");
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> TarLayer {
        let mut header = Self::header(tar::EntryType::Link, 0o644, 0);
        self.0.append_link(&mut header, path, target).expect("hardlink");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.into_inner().expect("tar")
    }
}

/// How a test layer is compressed in the image.
#[derive(Debug, Clone, Copy)]
pub enum Packing {
    Tar,
    Gzip,
    Zstd,
}

/// An image built in memory: blobs by digest plus config and manifest documents.
pub struct TestImage {
    /// (digest, bytes, media type) of each layer blob, bottom first.
    pub layers: Vec<(String, Vec<u8>, String)>,
    pub diff_ids: Vec<String>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl TestImage {
    pub fn build(layers: Vec<(Vec<u8>, Packing)>, cmd: &[&str]) -> TestImage {
        TestImage::build_with_diff_ids(layers, cmd, None)
    }

    /// `diff_ids` overrides the real ones (to build an inconsistent image).
    pub fn build_with_diff_ids(
        layers: Vec<(Vec<u8>, Packing)>,
        cmd: &[&str],
        diff_ids: Option<Vec<String>>,
    ) -> TestImage {
        let real_diff_ids: Vec<String> = layers.iter().map(|(tar, _)| digest(tar)).collect();
        let diff_ids = diff_ids.unwrap_or(real_diff_ids);
        let layers: Vec<(String, Vec<u8>, String)> = layers
            .into_iter()
            .map(|(tar, packing)| {
                let (blob, media_type) = match packing {
                    Packing::Tar => (tar, "application/vnd.oci.image.layer.v1.tar"),
                    Packing::Gzip => {
                        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                        encoder.write_all(&tar).expect("gzip");
                        (encoder.finish().expect("gzip"), "application/vnd.oci.image.layer.v1.tar+gzip")
                    }
                    Packing::Zstd => (
                        zstd::encode_all(tar.as_slice(), 3).expect("zstd"),
                        "application/vnd.oci.image.layer.v1.tar+zstd",
                    ),
                };
                (digest(&blob), blob, media_type.to_string())
            })
            .collect();
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/", "ExposedPorts": {"8080/tcp": {}}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .into_bytes();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": layers.iter().map(|(d, b, m)| json!({"mediaType": m, "digest": d, "size": b.len()})).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        TestImage { layers, diff_ids, config, manifest }
    }

    pub fn manifest_digest(&self) -> String {
        digest(&self.manifest)
    }

    /// Pushes blobs, config and manifest to `reference` with `oci-client`.
    pub async fn push(&self, reference: &str) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let reference: Reference = reference.parse().expect("reference");
        let client = Client::new(ClientConfig { protocol: ClientProtocol::Http, ..ClientConfig::default() });
        client.store_auth_if_needed(reference.resolve_registry(), &RegistryAuth::Anonymous).await;
        for (d, blob, _) in &self.layers {
            client.push_blob(&reference, blob.clone(), d).await.expect("push layer");
        }
        client.push_blob(&reference, self.config.clone(), &digest(&self.config)).await.expect("push config");
        let content_type = http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
        client.push_manifest_raw(&reference, self.manifest.clone(), content_type).await.expect("push manifest");
    }

    /// Pushes an index at `reference` listing this image (already pushed in the same
    /// repository) for linux/amd64 after an entry for another platform.
    pub async fn push_index(&self, reference: &str, other_platform_digest: &str) {
        let reference: Reference = reference.parse().expect("reference");
        let client = Client::new(ClientConfig { protocol: ClientProtocol::Http, ..ClientConfig::default() });
        client.store_auth_if_needed(reference.resolve_registry(), &RegistryAuth::Anonymous).await;
        let manifest_type = "application/vnd.oci.image.manifest.v1+json";
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {"mediaType": manifest_type, "digest": other_platform_digest, "size": 2,
             "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": manifest_type, "digest": self.manifest_digest(), "size": self.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        let content_type = http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json");
        client.push_manifest_raw(&reference, index.to_string().into_bytes(), content_type).await.expect("push index");
    }

    /// Writes the image as an OCI image layout in `dir`, tagged `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("layout blobs");
        let write = |bytes: &[u8]| {
            std::fs::write(blobs.join(digest(bytes).trim_start_matches("sha256:")), bytes).expect("layout blob")
        };
        for (_, blob, _) in &self.layers {
            write(blob);
        }
        write(&self.config);
        write(&self.manifest);
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": self.manifest_digest(),
            "size": self.manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag},
            "platform": {"os": "linux", "architecture": "amd64"},
        }]});
        std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
    }
}

/// An overlayfs mounted read-only from `lowerdirs` (top first), unmounted on drop.
pub struct OverlayMount {
    pub target: PathBuf,
    _dir: tempfile::TempDir,
}

impl OverlayMount {
    pub fn new(lowerdirs: &[PathBuf]) -> OverlayMount {
        let dir = tempfile::tempdir().expect("mount dir");
        let target = dir.path().join("merged");
        std::fs::create_dir(&target).expect("merged");
        let lower = lowerdirs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("ro,lowerdir={lower}"))
            .arg(&target)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting overlay lowerdir={lower}: {status}");
        OverlayMount { target, _dir: dir }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.target).status();
    }
}

/// Every path below `root` (relative, sorted), not following symlinks.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            out.push(path.strip_prefix(root).expect("below root").display().to_string());
            if entry.file_type().expect("type").is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
