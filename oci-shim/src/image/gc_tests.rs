//! Unit tests of image garbage collection on a store filled by hand (no registry).

use serde_json::json;

use super::*;
use crate::image::push::sha256_digest;
use crate::image::store::{IndexEntry, IndexKind};
use crate::image::{PullPolicy, RegistryCredentials};

/// A fake container image: `layers` are (layer bytes, DiffID seed) bottom first; each
/// layer's snapshot gets a file of `snapshot_bytes`.
async fn add_image(
    store: &ImageStore,
    reference: &str,
    layers: &[&[u8]],
    snapshot_bytes: usize,
    last_used: u64,
) -> String {
    let inner = &store.inner;
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(&[b"diff:", *l].concat())).collect();
    let mut descriptors = Vec::new();
    for layer in layers {
        let digest = sha256_digest(layer);
        inner.write_bytes(reference, &digest, layer).await.expect("layer");
        descriptors.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": layer.len()}),
        );
    }
    for chain in chain_ids(&diff_ids) {
        let fs_dir = inner.snapshot_path(&chain).expect("chain").join("fs");
        std::fs::create_dir_all(&fs_dir).expect("snapshot");
        std::fs::write(fs_dir.join("data"), vec![7u8; snapshot_bytes]).expect("data");
    }
    let config =
        json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).to_string();
    let config_digest = sha256_digest(config.as_bytes());
    inner.write_bytes(reference, &config_digest, config.as_bytes()).await.expect("config");
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descriptors})
    .to_string();
    let digest = sha256_digest(manifest.as_bytes());
    inner.write_bytes(reference, &digest, manifest.as_bytes()).await.expect("manifest");
    let entry = IndexEntry { digest: digest.clone(), kind: IndexKind::Container { config_digest }, last_used };
    inner.record(reference, entry).await.expect("record");
    digest
}

fn snapshot_count(store: &ImageStore) -> usize {
    std::fs::read_dir(store.dir().join("snapshots")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn nothing_happens_below_the_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(dir.path()).expect("open");
    add_image(&store, "r.example/a:1", &[b"base", b"top"], 100_000, 10).await;
    let report = store.gc(&[], u64::MAX).await.expect("gc");
    assert_eq!(report.freed_bytes(), 0);
    assert!(report.removed_blobs.is_empty() && report.removed_images.is_empty());
    assert_eq!(snapshot_count(&store), 2);
}

#[tokio::test]
async fn leftovers_go_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(dir.path()).expect("open");
    add_image(&store, "r.example/a:1", &[b"base"], 4096, 10).await;
    let orphan = sha256_digest(b"orphan");
    store.inner.write_bytes("x", &orphan, b"orphan").await.expect("orphan blob");
    let stray = dir.path().join("snapshots").join("ab".repeat(32)).join("fs");
    std::fs::create_dir_all(&stray).expect("stray");
    std::fs::write(stray.join("big"), vec![1u8; 1 << 20]).expect("big");
    let before = store.inner.disk_usage().expect("usage");

    let report = store.gc(&[], before - 1).await.expect("gc");
    assert_eq!(report.removed_blobs, [orphan]);
    assert_eq!(report.removed_snapshots, ["ab".repeat(32)]);
    assert!(report.removed_images.is_empty(), "leftovers were enough: {report:?}");
    assert!(report.freed_bytes() >= 1 << 20, "{report:?}");
    let image = store.pull("r.example/a:1", PullPolicy::Never, &RegistryCredentials::default()).await;
    assert!(image.is_ok(), "image kept");
}

#[tokio::test]
async fn least_recently_used_images_go_and_in_use_ones_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(dir.path()).expect("open");
    let old = add_image(&store, "r.example/old:1", &[b"base", b"old"], 200_000, 100).await;
    let mid = add_image(&store, "r.example/mid:1", &[b"mid-only"], 200_000, 200).await;
    let used = add_image(&store, "r.example/used:1", &[b"base", b"used"], 200_000, 50).await;
    assert_eq!(snapshot_count(&store), 4, "base shared by old and used");

    // Room for about two images: only the oldest unused one has to go.
    let usage = store.inner.disk_usage().expect("usage");
    let report = store.gc(std::slice::from_ref(&used), usage - 150_000).await.expect("gc");
    assert_eq!(report.removed_images, [old]);
    assert_eq!(report.removed_snapshots.len(), 1, "old's own layer only, base is shared: {report:?}");
    assert!(report.removed_blobs.contains(&sha256_digest(b"old")));
    assert!(!report.removed_blobs.contains(&sha256_digest(b"base")));
    let never = PullPolicy::Never;
    let creds = RegistryCredentials::default();
    assert!(store.pull("r.example/old:1", never, &creds).await.is_err(), "old image gone");
    assert!(store.pull("r.example/mid:1", never, &creds).await.is_ok());

    // Reopened (index persisted), a zero mark removes everything not in use.
    let store = ImageStore::open(dir.path()).expect("reopen");
    let report = store.gc(std::slice::from_ref(&used), 0).await.expect("gc all");
    assert_eq!(report.removed_images, [mid]);
    assert_eq!(snapshot_count(&store), 2, "used keeps base and its own layer");
    let image = store.pull("r.example/used:1", never, &creds).await.expect("in use kept");
    assert_eq!(image.digest, used);
    for blob in [sha256_digest(b"base"), sha256_digest(b"used")] {
        assert!(store.inner.blob_path(&blob).is_file(), "{blob} kept");
    }
}

#[tokio::test]
async fn young_images_stay_and_references_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(dir.path()).expect("open");
    let now = crate::image::store::now_secs();
    let old = add_image(&store, "r.example/old:1", &[b"old"], 4096, now - 3600).await;
    let young = add_image(&store, "r.example/young:1", &[b"young"], 4096, now - 10).await;

    // Pods name images by tag (normalised like a pull) or by digest; unknown ones are skipped.
    let pinned = sha256_digest(b"pinned");
    let by_digest = format!("r.example/x@{pinned}");
    let mut digests = store.digests_of(["r.example/young:1", "r.example/nothing:1", "not a reference", &by_digest]);
    digests.retain(|d| d != &pinned);
    assert_eq!(digests, std::slice::from_ref(&young), "the tag resolves, unknown ones are skipped");
    assert!(store.digests_of([by_digest.as_str()]).contains(&pinned), "a digest reference counts as itself");

    // Nothing in use, everything must go, but the young image is kept by the minimum age.
    let report = store.gc_with(&[], 0, std::time::Duration::from_secs(60)).await.expect("gc");
    assert_eq!(report.removed_images, [old]);
    assert!(report.usage_after > 0 && report.usage_after == store.disk_usage().await.expect("usage"));
    let image = store.pull("r.example/young:1", PullPolicy::Never, &RegistryCredentials::default()).await;
    assert_eq!(image.expect("young kept").digest, young);
}

#[tokio::test]
async fn references_resolve_after_a_pull_in_flight_records_its_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(dir.path()).expect("open");
    let old = add_image(&store, "r.example/old:1", &[b"old"], 4096, 10).await;
    // A pull holds the GC lock shared while it writes and records; the pod naming its image
    // is already listed. GC waits for the pull and must then see the image as in use.
    let pull = store.inner.gc_lock.read().await;
    let gc = tokio::spawn({
        let store = store.clone();
        async move { store.gc_referenced(&["r.example/late:1".to_string()], 0, std::time::Duration::ZERO).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!gc.is_finished(), "gc waits for the pull");
    let late = add_image(&store, "r.example/late:1", &[b"late"], 4096, 20).await;
    drop(pull);
    let report = gc.await.expect("join").expect("gc");
    assert_eq!(report.removed_images, [old], "only the unreferenced image goes");
    let image = store.pull("r.example/late:1", PullPolicy::Never, &RegistryCredentials::default()).await;
    assert_eq!(image.expect("late kept").digest, late);
}
