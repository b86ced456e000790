//! Artifacts: `skiff push` to the built-in registry and to Debian's `docker-registry`, pulls
//! back through the node's `ImageStore` under each pull policy, digest verification, pull
//! de-duplication, both upload paths of the built-in registry (monolithic and chunked, driven
//! raw with reqwest), OCI errors and authentication.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};
use skiff_oci_shim::image::push::sha256_digest;
use skiff_oci_shim::image::{
    Auth, ImageError, ImageKind, ImageStore, PullPolicy, PulledImage, RegistryCredentials, push_wasm,
};
use skiff_tests::binary::skiff_binary;
use skiff_tests::{DockerRegistry, Skiff, StoreKind, with_timeout};

/// The smallest valid core module, `(module)`.
const MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// A different valid module of the same length class: `(module)` plus an empty custom section.
const OTHER_MODULE: &[u8] = b"\0asm\x01\0\0\0\0\x02\x01x";
const STEP: Duration = Duration::from_secs(60);

/// Runs `skiff ARGS`, returning (success, stdout, stderr).
async fn skiff_cli(args: &[&str]) -> Result<(bool, String, String)> {
    let output = with_timeout("skiff push", STEP, async {
        tokio::process::Command::new(skiff_binary()?).args(args).output().await.context("running skiff")
    })
    .await?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    ))
}

fn module_bytes(image: &PulledImage) -> Result<Vec<u8>> {
    match &image.kind {
        ImageKind::Wasm { module_path, .. } => std::fs::read(module_path).context("reading pulled module"),
        other => anyhow::bail!("expected a wasm artifact, got {other:?}"),
    }
}

fn write_module(dir: &Path, name: &str, bytes: &[u8]) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).context("writing module")?;
    Ok(path.display().to_string())
}

/// Push with the CLI to docker-registry; pull with each policy; dedup; corruption detected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_registry_pull_policies() -> Result<()> {
    let registry = DockerRegistry::start().await?;
    let work = tempfile::tempdir()?;
    let file = write_module(work.path(), "app.wasm", MODULE)?;
    let (ok, stdout, stderr) =
        skiff_cli(&["push", &file, "demo/hello:v1", "--registry", &registry.host_port, "--insecure"]).await?;
    ensure!(ok, "skiff push failed: {stderr}\n--- registry ---\n{}", registry.log_tail(20));
    let reference = format!("{}/demo/hello:v1", registry.host_port);
    ensure!(stdout == reference, "push printed {stdout:?}, expected {reference:?}");

    let creds = RegistryCredentials { insecure_registries: vec![registry.host_port.clone()], ..Default::default() };
    let store = ImageStore::open(&work.path().join("images"))?;
    let never = store.pull(&reference, PullPolicy::Never, &creds).await;
    ensure!(matches!(never, Err(ImageError::NotPresent { .. })), "Never on an empty store: {never:?}");
    let first =
        with_timeout("pull", STEP, async { Ok(store.pull(&reference, PullPolicy::IfNotPresent, &creds).await?) })
            .await?;
    ensure!(module_bytes(&first)? == MODULE, "pulled bytes differ");
    ensure!(first.digest.starts_with("sha256:"), "imageID {}", first.digest);
    ensure!(store.registry_fetches() == 1, "fetches {}", store.registry_fetches());
    let cached = store.pull(&reference, PullPolicy::IfNotPresent, &creds).await?;
    ensure!(cached == first && store.registry_fetches() == 1, "IfNotPresent contacted the registry");
    let never = store.pull(&reference, PullPolicy::Never, &creds).await?;
    ensure!(never == first, "Never with a local copy");
    store.pull(&reference, PullPolicy::Always, &creds).await?;
    ensure!(store.registry_fetches() == 2, "Always must ask the registry");

    // Concurrent pulls of one reference share one download.
    let fresh = ImageStore::open(&work.path().join("fresh"))?;
    let pulls = (0..5).map(|_| fresh.pull(&reference, PullPolicy::Always, &creds));
    let results = with_timeout("concurrent pulls", STEP, async { Ok(futures::future::join_all(pulls).await) }).await?;
    for result in results {
        let image = result?;
        ensure!(image.digest == first.digest && module_bytes(&image)? == MODULE, "a concurrent pull differs");
    }
    ensure!(fresh.registry_fetches() == 1, "concurrent pulls fetched {} times", fresh.registry_fetches());

    // A registry serving bytes that do not match the digest is caught.
    let bad_ref = format!("{}/demo/bad:v1", registry.host_port);
    push_wasm(&bad_ref, OTHER_MODULE.to_vec(), &creds).await?;
    let blob = registry.blob_file(&sha256_digest(OTHER_MODULE));
    let mut corrupt = OTHER_MODULE.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] = b'y';
    std::fs::write(&blob, &corrupt).with_context(|| format!("corrupting {}", blob.display()))?;
    let err = store.pull(&bad_ref, PullPolicy::Always, &creds).await.expect_err("corrupt blob must fail");
    ensure!(matches!(err, ImageError::DigestMismatch { .. }), "expected a digest mismatch, got {err}");
    ensure!(store.pull(&bad_ref, PullPolicy::Never, &creds).await.is_err(), "a failed pull left an image behind");

    // The registry's own message reaches the error.
    let missing = format!("{}/demo/hello:nope", registry.host_port);
    let err = store.pull(&missing, PullPolicy::Always, &creds).await.expect_err("unknown tag");
    ensure!(err.to_string().to_lowercase().contains("manifest unknown"), "error lacks the registry's message: {err}");
    Ok(())
}

/// `skiff up` → `skiff push` → pull back with the cluster CA and admin token; raw API paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_registry() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let kubeconfig = skiff.kubeconfig.display().to_string();
    let file = write_module(skiff.home(), "guest.wasm", MODULE)?;
    let (ok, stdout, stderr) = skiff_cli(&["push", &file, "demo/hello:v1", "--kubeconfig", &kubeconfig]).await?;
    ensure!(ok, "skiff push failed: {stderr}\n--- skiff ---\n{}", skiff.log_tail(30));
    let host_port = skiff.url.trim_start_matches("https://").to_string();
    let reference = format!("{host_port}/demo/hello:v1");
    ensure!(stdout == reference, "push printed {stdout:?}, expected {reference:?}");

    let ca = String::from_utf8(skiff.info.ca_pem.clone())?;
    let token = skiff.info.token.clone().context("kubeconfig token")?;
    let work = tempfile::tempdir()?;
    for (i, auth) in [Auth::Bearer(token.clone()), Auth::Basic { username: "skiff".into(), password: token.clone() }]
        .into_iter()
        .enumerate()
    {
        let creds = RegistryCredentials { auth: Some(auth), extra_root_ca_pem: Some(ca.clone()), ..Default::default() };
        let store = ImageStore::open(&work.path().join(format!("store{i}")))?;
        let image =
            with_timeout("pull", STEP, async { Ok(store.pull(&reference, PullPolicy::Always, &creds).await?) }).await?;
        ensure!(module_bytes(&image)? == MODULE, "pulled bytes differ");
    }

    let http = skiff.http()?;
    let base = format!("{}/v2", skiff.url);
    let tags: Value = http.get(format!("{base}/demo/hello/tags/list")).send().await?.json().await?;
    ensure!(tags == json!({"name": "demo/hello", "tags": ["v1"]}), "tags: {tags}");

    // Monolithic upload.
    let blob = b"monolithic blob".to_vec();
    let digest = sha256_digest(&blob);
    let response =
        http.post(format!("{base}/demo/raw/blobs/uploads/?digest={digest}")).body(blob.clone()).send().await?;
    ensure!(response.status() == StatusCode::CREATED, "monolithic: {}", response.status());
    ensure!(response.headers()["docker-content-digest"] == digest.as_str(), "digest header");
    let head = http.head(format!("{base}/demo/raw/blobs/{digest}")).send().await?;
    ensure!(
        head.status() == StatusCode::OK && head.headers()["content-length"] == blob.len().to_string().as_str(),
        "HEAD blob"
    );
    let got = http.get(format!("{base}/demo/raw/blobs/{digest}")).send().await?.bytes().await?;
    ensure!(got.as_ref() == blob.as_slice(), "GET blob");

    // Chunked upload: two PATCHes with Content-Range, an out-of-order one rejected, a wrong
    // digest rejected, then the right one accepted.
    let start = http.post(format!("{base}/demo/raw/blobs/uploads/")).send().await?;
    ensure!(start.status() == StatusCode::ACCEPTED, "start: {}", start.status());
    let location = start.headers()["location"].to_str()?.to_string();
    ensure!(start.headers().contains_key("docker-upload-uuid"), "no upload uuid");
    let url = format!("{}{location}", skiff.url);
    let (a, b) = (b"chunk one, ".to_vec(), b"chunk two".to_vec());
    let patch = http.patch(&url).header("content-range", format!("0-{}", a.len() - 1)).body(a.clone()).send().await?;
    ensure!(
        patch.status() == StatusCode::ACCEPTED && patch.headers()["range"] == format!("0-{}", a.len() - 1).as_str(),
        "patch 1"
    );
    let wrong = http.patch(&url).header("content-range", "0-3").body(b"xxxx".to_vec()).send().await?;
    ensure!(wrong.status() == StatusCode::RANGE_NOT_SATISFIABLE, "overlapping chunk: {}", wrong.status());
    let end = a.len() + b.len() - 1;
    let patch = http.patch(&url).header("content-range", format!("{}-{end}", a.len())).body(b.clone()).send().await?;
    ensure!(patch.status() == StatusCode::ACCEPTED, "patch 2: {}", patch.status());
    let whole = [a, b].concat();
    let bad = http.put(format!("{url}?digest={}", sha256_digest(b"nope"))).send().await?;
    ensure!(bad.status() == StatusCode::BAD_REQUEST, "wrong digest: {}", bad.status());
    let body: Value = bad.json().await?;
    ensure!(body["errors"][0]["code"] == "DIGEST_INVALID", "wrong digest body: {body}");
    // The mismatch discarded the upload; redo it in one PATCH and finish.
    let start = http.post(format!("{base}/demo/raw/blobs/uploads/")).send().await?;
    let url = format!("{}{}", skiff.url, start.headers()["location"].to_str()?);
    http.patch(&url).body(whole.clone()).send().await?.error_for_status()?;
    let done = http.put(format!("{url}?digest={}", sha256_digest(&whole))).send().await?;
    ensure!(done.status() == StatusCode::CREATED, "finish: {}", done.status());
    let got = http.get(format!("{base}/demo/raw/blobs/{}", sha256_digest(&whole))).send().await?.bytes().await?;
    ensure!(got.as_ref() == whole.as_slice(), "chunked blob content");

    // Manifests: unknown blobs refused, unknown manifests in the OCI error format, delete.
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": digest, "size": 15},
        "layers": [{"mediaType": "application/wasm", "digest": sha256_digest(b"absent"), "size": 6}]});
    let put = http
        .put(format!("{base}/demo/raw/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await?;
    ensure!(put.status() == StatusCode::BAD_REQUEST, "manifest with unknown blob: {}", put.status());
    let missing = http.get(format!("{base}/demo/raw/manifests/nope")).send().await?;
    ensure!(missing.status() == StatusCode::NOT_FOUND, "unknown manifest: {}", missing.status());
    let body: Value = missing.json().await?;
    ensure!(body["errors"][0]["code"] == "MANIFEST_UNKNOWN", "{body}");
    let head = http.head(format!("{base}/demo/hello/manifests/v1")).send().await?;
    let manifest_digest = head.headers()["docker-content-digest"].to_str()?.to_string();
    ensure!(head.headers()["content-type"] == "application/vnd.oci.image.manifest.v1+json", "content type kept");
    let deleted = http.delete(format!("{base}/demo/hello/manifests/{manifest_digest}")).send().await?;
    ensure!(deleted.status() == StatusCode::ACCEPTED, "delete: {}", deleted.status());
    let tags: Value = http.get(format!("{base}/demo/hello/tags/list")).send().await?.json().await?;
    ensure!(tags["tags"] == json!([]), "tags after delete: {tags}");

    // Without credentials: 401 with a Basic challenge, for reads and pushes alike.
    let anonymous = skiff.http_anonymous()?;
    let denied = anonymous.get(format!("{base}/")).send().await?;
    ensure!(denied.status() == StatusCode::UNAUTHORIZED, "anonymous /v2/: {}", denied.status());
    ensure!(denied.headers()["www-authenticate"].to_str()?.starts_with("Basic"), "challenge");
    let denied = anonymous.post(format!("{base}/demo/x/blobs/uploads/")).send().await?;
    ensure!(denied.status() == StatusCode::UNAUTHORIZED, "anonymous upload: {}", denied.status());
    let creds = RegistryCredentials { extra_root_ca_pem: Some(ca), ..Default::default() };
    let err =
        push_wasm(&format!("{host_port}/demo/anon:v1"), MODULE.to_vec(), &creds).await.expect_err("anonymous push");
    ensure!(err.to_string().contains("401") || err.to_string().to_uppercase().contains("UNAUTHORIZED"), "{err}");

    // CLI errors: not wasm, missing file, bad reference.
    let not_wasm = write_module(skiff.home(), "notwasm.txt", b"hello world")?;
    for (args, expect) in [
        (vec!["push", not_wasm.as_str(), "demo/x:v1", "--kubeconfig", &kubeconfig], "neither a WebAssembly binary"),
        (vec!["push", "/nonexistent/app.wasm", "demo/x:v1", "--kubeconfig", &kubeconfig], "reading"),
        (vec!["push", file.as_str(), "Demo/X", "--kubeconfig", &kubeconfig], "NAME:TAG"),
    ] {
        let (ok, _, stderr) = skiff_cli(&args).await?;
        ensure!(!ok && stderr.contains(expect), "{args:?}: ok={ok} stderr={stderr}");
    }
    Ok(())
}
