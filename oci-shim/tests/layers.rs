//! Container image layers end to end against a real registry (`docker-registry` on
//! loopback): images built here from Debian's static busybox (`busybox-static`), pushed with
//! `oci-client`, pulled into an [`ImageStore`], unpacked, and stacked with a real read-only
//! overlayfs mount (root required, as in CI).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use skiff_oci_shim::image::{ImageError, ImageKind, ImageStore, PullPolicy, push_image_layout};
use support::{OverlayMount, Packing, Registry, TarLayer, TestImage, tree};

const BUSYBOX: &str = "/bin/busybox";
/// Every wait in these tests is bounded.
const TIMEOUT: Duration = Duration::from_secs(120);

async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, future).await.unwrap_or_else(|_| panic!("{what} took over {TIMEOUT:?}"))
}

/// busybox and a few applet symlinks, files the next layer removes, a hard link.
fn base_layer() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).expect("reading /bin/busybox (apt-get install busybox-static)");
    TarLayer::new()
        .dir("bin/")
        .file("bin/busybox", 0o755, &busybox)
        .symlink("bin/sh", "busybox")
        .symlink("bin/ls", "/bin/busybox")
        .symlink("bin/cat", "busybox")
        .dir("etc/")
        .file("etc/motd", 0o644, b"welcome\n")
        .file("etc/keep", 0o644, b"kept\n")
        .hardlink("etc/keep-link", "etc/keep")
        .dir("var/")
        .dir("var/cache/")
        .file("var/cache/old", 0o644, b"stale\n")
        .dir("var/cache/sub/")
        .finish()
}

/// Removes etc/motd (whiteout), makes var/cache opaque and refills it, adds a file.
fn second_layer() -> Vec<u8> {
    TarLayer::new()
        .dir("etc/")
        .file("etc/.wh.motd", 0o644, b"")
        .file("etc/added", 0o600, b"added\n")
        .dir("var/")
        .dir("var/cache/")
        .file("var/cache/.wh..wh..opq", 0o644, b"")
        .file("var/cache/new", 0o644, b"fresh\n")
        .finish()
}

fn busybox_image() -> TestImage {
    TestImage::build(vec![(base_layer(), Packing::Gzip), (second_layer(), Packing::Zstd)], &["/bin/sh"])
}

const EXPECTED_TREE: &[&str] = &[
    "bin",
    "bin/busybox",
    "bin/cat",
    "bin/ls",
    "bin/sh",
    "etc",
    "etc/added",
    "etc/keep",
    "etc/keep-link",
    "var",
    "var/cache",
    "var/cache/new",
];

#[tokio::test]
async fn pulls_unpacks_and_stacks_a_busybox_image() {
    let registry = Registry::start();
    let image = busybox_image();
    let reference = format!("{}/test/busybox:v1", registry.host_port);
    bounded("push", image.push(&reference)).await;
    let store_dir = tempfile::tempdir().expect("store dir");
    let store = ImageStore::open(store_dir.path()).expect("open store");
    let creds = registry.creds();

    let pulled = bounded("pull", store.pull(&reference, PullPolicy::Always, &creds)).await.expect("pull");
    assert_eq!(pulled.digest, image.manifest_digest());
    assert!(matches!(pulled.kind, ImageKind::Container { .. }), "{pulled:?}");
    assert_eq!(store.registry_fetches(), 1);
    assert_eq!(store.registry_blob_fetches(), 3, "config and two layers");
    for (digest, _, _) in &image.layers {
        let path = store_dir.path().join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        assert!(path.is_file(), "layer {digest} in the store");
    }

    let rootfs = bounded("unpack", store.container_rootfs(&pulled)).await.expect("rootfs");
    assert_eq!(rootfs.manifest_digest, image.manifest_digest());
    assert_eq!(rootfs.config.cmd, ["/bin/sh"]);
    assert_eq!(rootfs.config.exposed_ports.first().map(|p| p.port), Some(8080));
    assert_eq!(rootfs.lowerdirs.len(), 2);
    assert!(rootfs.lowerdirs[1].join("bin/busybox").is_file(), "base layer is last (bottom)");
    assert!(rootfs.lowerdirs[0].join("etc/added").is_file(), "top layer first");

    let mount = OverlayMount::new(&rootfs.lowerdirs);
    assert_eq!(tree(&mount.target), EXPECTED_TREE);
    assert_eq!(std::fs::read(mount.target.join("etc/keep-link")).expect("hard link"), b"kept\n");
    // The stacked root runs: busybox through its applet symlinks, inside a chroot.
    let output = std::process::Command::new("chroot")
        .arg(&mount.target)
        .args(["/bin/sh", "-c", "ls /etc && cat /var/cache/new"])
        .output()
        .expect("chroot");
    assert!(output.status.success(), "chroot sh: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "added\nkeep\nkeep-link\nfresh\n");
    drop(mount);

    // A second pull fetches nothing; an Always pull fetches only the manifest.
    let again = store.pull(&reference, PullPolicy::IfNotPresent, &creds).await.expect("cached pull");
    assert_eq!(again, pulled);
    assert_eq!((store.registry_fetches(), store.registry_blob_fetches()), (1, 3));
    bounded("re-pull", store.pull(&reference, PullPolicy::Always, &creds)).await.expect("re-pull");
    assert_eq!((store.registry_fetches(), store.registry_blob_fetches()), (2, 3), "no blob fetched again");
    let again = store.container_rootfs(&pulled).await.expect("rootfs again");
    assert_eq!(again.lowerdirs, rootfs.lowerdirs, "snapshots reused");

    // Another image on the same base: only its config and own layer are fetched, and the
    // base snapshot (same chain ID) is shared.
    let other = TestImage::build(
        vec![(base_layer(), Packing::Gzip), (TarLayer::new().file("hello", 0o644, b"hi\n").finish(), Packing::Tar)],
        &["/bin/cat", "/hello"],
    );
    let other_ref = format!("{}/test/other:v1", registry.host_port);
    bounded("push other", other.push(&other_ref)).await;
    let pulled_other =
        bounded("pull other", store.pull(&other_ref, PullPolicy::IfNotPresent, &creds)).await.expect("pull");
    assert_eq!(store.registry_blob_fetches(), 5, "config + one new layer");
    let other_rootfs = store.container_rootfs(&pulled_other).await.expect("other rootfs");
    assert_eq!(other_rootfs.lowerdirs[1], rootfs.lowerdirs[1], "base snapshot shared");
    assert!(other_rootfs.lowerdirs[0].join("hello").is_file());
}

#[tokio::test]
async fn concurrent_pulls_and_unpacks_share_one_download() {
    let registry = Registry::start();
    let image = busybox_image();
    let reference = format!("{}/test/shared:v1", registry.host_port);
    bounded("push", image.push(&reference)).await;
    let store_dir = tempfile::tempdir().expect("store dir");
    let store = ImageStore::open(store_dir.path()).expect("open store");
    let creds = registry.creds();
    let pulls = (0..4).map(|_| store.pull(&reference, PullPolicy::IfNotPresent, &creds));
    let results = bounded("pulls", futures::future::join_all(pulls)).await;
    let pulled: Vec<_> = results.into_iter().map(|r| r.expect("pull")).collect();
    assert!(pulled.iter().all(|p| *p == pulled[0]));
    let pulled = pulled[0].clone();
    assert_eq!((store.registry_fetches(), store.registry_blob_fetches()), (1, 3));
    let unpacks = (0..4).map(|_| store.container_rootfs(&pulled));
    let rootfs: Vec<_> = bounded("unpacks", futures::future::join_all(unpacks)).await;
    let first = rootfs[0].as_ref().expect("rootfs").clone();
    assert!(rootfs.iter().all(|r| r.as_ref().is_ok_and(|r| r.lowerdirs == first.lowerdirs)));
    assert_eq!(std::fs::read_dir(store_dir.path().join("snapshots")).expect("snapshots").count(), 2);
    assert_eq!(std::fs::read_dir(store_dir.path().join("tmp")).expect("tmp").count(), 0, "no staging left");
}

#[tokio::test]
async fn manifest_lists_resolve_to_linux_amd64() {
    let registry = Registry::start();
    let image = busybox_image();
    let other = TestImage::build(vec![(TarLayer::new().file("s390x", 0o644, b"").finish(), Packing::Tar)], &["/x"]);
    let repo = format!("{}/test/multi", registry.host_port);
    bounded("push amd64", image.push(&format!("{repo}:amd64"))).await;
    bounded("push s390x", other.push(&format!("{repo}:s390x"))).await;
    bounded("push index", image.push_index(&format!("{repo}:v1"), &other.manifest_digest())).await;
    let store_dir = tempfile::tempdir().expect("store dir");
    let store = ImageStore::open(store_dir.path()).expect("open store");
    let pulled =
        bounded("pull", store.pull(&format!("{repo}:v1"), PullPolicy::Always, &registry.creds())).await.expect("pull");
    assert_eq!(pulled.digest, image.manifest_digest(), "the linux/amd64 entry");
    let rootfs = bounded("unpack", store.container_rootfs(&pulled)).await.expect("rootfs");
    assert_eq!(rootfs.lowerdirs.len(), 2);
}

#[tokio::test]
async fn tampered_layers_are_refused() {
    let registry = Registry::start();
    let image = busybox_image();
    let reference = format!("{}/test/tampered:v1", registry.host_port);
    bounded("push", image.push(&reference)).await;
    // Same length, different bytes: only the digest check can notice.
    let blob_file = registry.blob_file(&image.layers[1].0);
    let mut bytes = std::fs::read(&blob_file).expect("registry blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob_file, bytes).expect("tamper");

    let store_dir = tempfile::tempdir().expect("store dir");
    let store = ImageStore::open(store_dir.path()).expect("open store");
    let err =
        bounded("pull", store.pull(&reference, PullPolicy::Always, &registry.creds())).await.expect_err("tampered");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&image.layers[1].0), "{err}");
    assert!(!store_dir.path().join("blobs/sha256").join(image.layers[1].0.trim_start_matches("sha256:")).exists());

    // A config whose DiffID does not match the layer content is caught at unpack.
    let lying = TestImage::build_with_diff_ids(
        vec![(base_layer(), Packing::Gzip)],
        &["/bin/sh"],
        Some(vec![support::digest(b"something else")]),
    );
    let lying_ref = format!("{}/test/lying:v1", registry.host_port);
    bounded("push lying", lying.push(&lying_ref)).await;
    let pulled =
        bounded("pull lying", store.pull(&lying_ref, PullPolicy::Always, &registry.creds())).await.expect("pull");
    let err = store.container_rootfs(&pulled).await.expect_err("diff id mismatch");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(!store_dir.path().join("snapshots").exists() || tree(&store_dir.path().join("snapshots")).is_empty());
}

#[tokio::test]
async fn push_image_layout_round_trips() {
    let registry = Registry::start();
    let image = busybox_image();
    let layout = tempfile::tempdir().expect("layout dir");
    image.write_layout(layout.path(), "v2");
    let reference = format!("{}/test/layout:v2", registry.host_port);
    let creds = registry.creds();
    let pushed = bounded("push layout", push_image_layout(layout.path(), &reference, &creds)).await.expect("push");
    assert_eq!(pushed.digest, image.manifest_digest());
    // Pushing again skips blobs the registry has and still succeeds.
    bounded("push again", push_image_layout(layout.path(), &reference, &creds)).await.expect("push again");

    let store_dir = tempfile::tempdir().expect("store dir");
    let store = ImageStore::open(store_dir.path()).expect("open store");
    let pulled = bounded("pull", store.pull(&reference, PullPolicy::Always, &creds)).await.expect("pull");
    assert_eq!(pulled.digest, pushed.digest);
    let rootfs = bounded("unpack", store.container_rootfs(&pulled)).await.expect("rootfs");
    let mount = OverlayMount::new(&rootfs.lowerdirs);
    assert_eq!(tree(&mount.target), EXPECTED_TREE);
    drop(mount);

    // A corrupted layout blob is refused before anything is uploaded.
    let layer = layout.path().join("blobs/sha256").join(image.layers[0].0.trim_start_matches("sha256:"));
    std::fs::write(&layer, b"not the layer").expect("corrupt");
    let err = push_image_layout(layout.path(), &format!("{}/test/layout:bad", registry.host_port), &creds)
        .await
        .expect_err("corrupt layout");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    let missing = push_image_layout(Path::new("/nonexistent-layout"), &reference, &creds).await.expect_err("no layout");
    assert!(missing.to_string().contains("not a usable OCI image layout"), "{missing}");
}

/// Pull and unpack throughput of a ~50 MiB image of random content (gzip, as most images
/// are) from the loopback registry. Prints the figures; asserts only correctness and a very
/// generous floor, since CI machines vary.
#[tokio::test]
async fn pull_and_unpack_throughput() {
    const FILES: usize = 50;
    const FILE_BYTES: usize = 1 << 20;
    let registry = Registry::start();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut layer = TarLayer::new().dir("data/");
    for i in 0..FILES {
        let bytes: Vec<u8> = (0..FILE_BYTES / 8)
            .flat_map(|_| {
                // xorshift64: random enough that gzip cannot shrink it, and cheap.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        layer = layer.file(&format!("data/file-{i:03}"), 0o644, &bytes);
    }
    let image = TestImage::build(vec![(layer.finish(), Packing::Gzip)], &["/bin/true"]);
    let reference = format!("{}/bench/random:v1", registry.host_port);
    bounded("push", image.push(&reference)).await;
    let mib = image.layers[0].1.len() as f64 / (1024.0 * 1024.0);

    let store_dir = tempfile::tempdir().expect("store dir");
    let store = ImageStore::open(store_dir.path()).expect("open store");
    let started = Instant::now();
    let pulled = bounded("pull", store.pull(&reference, PullPolicy::Always, &registry.creds())).await.expect("pull");
    let pull_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let rootfs = bounded("unpack", store.container_rootfs(&pulled)).await.expect("rootfs");
    let unpack_secs = started.elapsed().as_secs_f64();
    assert_eq!(std::fs::read_dir(rootfs.lowerdirs[0].join("data")).expect("data").count(), FILES);
    let total = pull_secs + unpack_secs;
    eprintln!(
        "image pull+unpack: {mib:.1} MiB gzip layer; pull {pull_secs:.2}s ({:.0} MiB/s), unpack {unpack_secs:.2}s ({:.0} MiB/s), total {:.0} MiB/s",
        mib / pull_secs,
        mib / unpack_secs,
        mib / total
    );
    assert!(mib / total > 1.0, "pull+unpack slower than 1 MiB/s: {total:.1}s for {mib:.1} MiB");
}
