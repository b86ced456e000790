//! Container images (issue 5, "Images"): where they come from and when they go.
//!
//! `container_images_from_archives_and_private_registries`: skiff inside a test network
//! namespace (as `containers.rs`), the busybox image written as an OCI layout, packed as a
//! `.tar.gz` and uploaded with the real `skiff push` CLI; a Deployment of the printed reference
//! becomes Ready and runs busybox; a multi-platform layout directory is pushed whole and the
//! node runs its own platform's manifest. Then a private `docker-registry` (htpasswd) holding busybox
//! pushed with Basic auth: a pod with the right `kubernetes.io/dockerconfigjson` pull secret
//! runs; one with a wrong password waits with `ErrImagePull`, then `ImagePullBackOff`, both
//! naming the registry's refusal, and a Warning `Failed` event says so.
//!
//! `image_gc_removes_unused_images_only`: `skiff up` with image GC thresholds at 0 %: an image
//! whose pod is gone is removed from the node's real store while the image of a running pod
//! stays, and the node reports `FreeDiskSpaceFailed` (the in-use image cannot be freed).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_oci_shim::image::{Auth, RegistryCredentials};
use skiff_tests::netns::Inside;
use skiff_tests::oci_node::{OciLeftovers, oci_start_options};
use skiff_tests::{DockerRegistry, NetNs, Skiff, StartOptions, StoreKind, wait_until};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{POD_POLL as POLL, get_json, pod_is_ready};

const USER: &str = "bob";
const PASSWORD: &str = "builder-7";
/// Pods here pull images and may wait out a pull back-off.
const POD_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes `127.0.0.1:port` inside a namespace reach `127.0.0.1:port` out here, where the test's
/// registry listens, so the node inside pulls from it under the same reference. Stops (with
/// every connection) on drop.
struct RegistryIntoNetns {
    cancel: CancellationToken,
}

impl RegistryIntoNetns {
    async fn start(netns: &str, port: u16) -> Result<RegistryIntoNetns> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listener = Inside::new(netns)?.listen(addr).await?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Some(_) = connections.join_next() => {}
                    accepted = listener.accept() => {
                        let Ok((mut inside, _)) = accepted else { continue };
                        connections.spawn(async move {
                            if let Ok(mut outside) = tokio::net::TcpStream::connect(addr).await {
                                let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                            }
                        });
                    }
                }
            }
            connections.abort_all();
        });
        Ok(RegistryIntoNetns { cancel })
    }
}

impl Drop for RegistryIntoNetns {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `skiff push FILE NAME:TAG` with the cluster's kubeconfig; returns the printed reference.
async fn skiff_push(skiff: &Skiff, file: &Path, name_tag: &str) -> Result<String> {
    let out = tokio::process::Command::new(skiff_tests::binary::skiff_binary()?)
        .arg("push")
        .arg(file)
        .arg(name_tag)
        .arg("--kubeconfig")
        .arg(&skiff.kubeconfig)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await.context("skiff push timed out")??;
    ensure!(out.status.success(), "skiff push failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn deployment(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: pushed
spec:
  replicas: 1
  selector:
    matchLabels: {{app: pushed}}
  template:
    metadata:
      labels: {{app: pushed}}
    spec:
      runtimeClassName: oci
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: ["sh", "-c", "echo running-from-archive; exec sleep 3600"]
"#
    )
}

fn private_pod(name: &str, image: &str, secret: Option<&str>, policy: &str) -> String {
    let secrets = secret.map(|s| format!("imagePullSecrets:\n  - name: {s}\n  ")).unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  {secrets}containers:
  - name: main
    image: {image}
    imagePullPolicy: {policy}
    command: ["sh", "-c", "echo private-ok; exec sleep 3600"]
"#
    )
}

/// Waits until the pod's container waits with `reason`; returns the message.
async fn wait_reason(skiff: &Skiff, name: &str, reason: &str) -> Result<String> {
    wait_until(&format!("pod {name} waiting with {reason}"), POD_TIMEOUT, POLL, || async {
        let pod = get_json(skiff, &["pod", name]).await?;
        let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
        Ok((waiting["reason"] == reason).then(|| waiting["message"].as_str().unwrap_or_default().to_string()))
    })
    .await
}

async fn ready_pod(skiff: &Skiff, args: &[&str]) -> Result<Value> {
    wait_until(&format!("{args:?} to be Ready"), POD_TIMEOUT, POLL, || async {
        let got = get_json(skiff, args).await?;
        let pods =
            if got["items"].is_array() { got["items"].as_array().cloned().unwrap_or_default() } else { vec![got] };
        Ok(pods.into_iter().find(pod_is_ready))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))
}

/// The registry's refusal, as it may be phrased.
fn mentions_auth_failure(message: &str) -> bool {
    let m = message.to_lowercase();
    ["401", "unauthorized"].iter().any(|w| m.contains(w))
}

/// Events (as JSON) matching `filter`.
async fn events(skiff: &Skiff, filter: impl Fn(&Value) -> bool) -> Result<Vec<Value>> {
    let list = get_json(skiff, &["events", "-A"]).await?;
    Ok(list["items"].as_array().into_iter().flatten().filter(|e| filter(e)).cloned().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_images_from_archives_and_private_registries() -> Result<()> {
    let netns = NetNs::create()?;
    let scripts = tempfile::Builder::new().prefix("skiff-images-e2e-").tempdir()?;
    // Cost 4 (bcrypt's minimum) keeps the registry's check of every request fast.
    let hash = bcrypt::hash(PASSWORD, 4).context("hashing the password")?;
    let registry = DockerRegistry::start_with_htpasswd(&format!("{USER}:{hash}\n")).await?;
    let port: u16 = registry.host_port.rsplit(':').next().context("registry port")?.parse()?;
    let _into_netns = RegistryIntoNetns::start(netns.name(), port).await?;

    let mut options = oci_start_options(&netns, scripts.path())?;
    options.extra_args.extend(["--insecure-registry".to_string(), registry.host_port.clone()]);
    let mut skiff = Skiff::start_with(options).await?;
    let _leftovers = OciLeftovers::new(skiff.data_dir());

    // `skiff push` of a .tar.gz of an OCI layout (named without a telling extension: the
    // content decides) prints the reference to run.
    let archive = scripts.path().join("busybox-image");
    skiff_tests::oci_image::write_busybox_archive(&archive, "v1")?;
    let image = skiff_push(&skiff, &archive, "images/busybox:v1").await?;
    ensure!(image.ends_with("/images/busybox:v1") && image.contains(':'), "skiff push printed {image:?}");
    skiff.apply(&deployment(&image)).await?;
    let pod = ready_pod(&skiff, &["pods", "-l", "app=pushed"]).await?;
    let name = pod["metadata"]["name"].as_str().context("pod name")?.to_string();
    let passwd = skiff.kubectl(&["exec", &name, "--", "cat", "/etc/passwd"]).await?.ok()?;
    ensure!(passwd.contains("nobody:x:65534"), "/etc/passwd of the pushed image: {passwd:?}");
    let version = skiff.kubectl(&["exec", &name, "--", "busybox"]).await?;
    ensure!(version.stdout.contains("BusyBox v"), "busybox in the container: {version:?}");
    let logs = skiff.kubectl(&["logs", &name]).await?.ok()?;
    ensure!(logs.contains("running-from-archive"), "kubectl logs: {logs:?}");

    // A multi-platform layout (a directory this time) is pushed whole; the node runs the
    // manifest of its own platform.
    let multi = scripts.path().join("multi");
    let manifests = skiff_tests::oci_image::write_busybox_multi_platform_layout(&multi)?;
    let multi_image = skiff_push(&skiff, &multi, "images/multi:v1").await?;
    skiff.apply(&private_pod("multi", &multi_image, None, "IfNotPresent")).await?;
    let pod = ready_pod(&skiff, &["pod", "multi"]).await?;
    let image_id = pod["status"]["containerStatuses"][0]["imageID"].as_str().unwrap_or_default();
    let arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" };
    let own = manifests.iter().find(|(a, _)| a == arch).map(|(_, d)| d.as_str()).context("own platform")?;
    ensure!(image_id.ends_with(own), "imageID {image_id} is not the {arch} manifest {own} of {manifests:?}");

    // A private registry: busybox pushed with Basic auth (anonymous pushes are refused).
    let private = format!("{}/private/busybox:v1", registry.host_port);
    let mut creds = RegistryCredentials {
        auth: None,
        insecure_registries: vec![registry.host_port.clone()],
        extra_root_ca_pem: None,
    };
    ensure!(
        skiff_tests::oci_image::push_busybox_to(&private, &creds).await.is_err(),
        "the registry accepted an anonymous push: auth is not on"
    );
    creds.auth = Some(Auth::Basic { username: USER.into(), password: PASSWORD.into() });
    skiff_tests::oci_image::push_busybox_to(&private, &creds).await?;
    for (secret, password) in [("regcred", PASSWORD), ("badcred", "not-the-password")] {
        let (server, user, pass) = (
            format!("--docker-server={}", registry.host_port),
            format!("--docker-username={USER}"),
            format!("--docker-password={password}"),
        );
        skiff.kubectl(&["create", "secret", "docker-registry", secret, &server, &user, &pass]).await?.ok()?;
    }

    // Wrong password first (and `Always`, so a cached copy never hides the refusal).
    skiff.apply(&private_pod("wrong", &private, Some("badcred"), "Always")).await?;
    let first = wait_reason(&skiff, "wrong", "ErrImagePull").await;
    let backoff = wait_reason(&skiff, "wrong", "ImagePullBackOff").await?;
    // ErrImagePull shows only until the first retry fails; a slow poll may miss it.
    if let Ok(message) = &first {
        ensure!(mentions_auth_failure(message), "ErrImagePull without the registry's refusal: {message:?}");
        ensure!(message.contains(&registry.host_port), "ErrImagePull does not name the image: {message:?}");
    }
    ensure!(mentions_auth_failure(&backoff), "ImagePullBackOff without the registry's refusal: {backoff:?}");
    let failed = wait_until("a Warning Failed event for pod wrong", POD_TIMEOUT, POLL, || async {
        let found = events(&skiff, |e| {
            e["involvedObject"]["name"] == "wrong" && e["reason"] == "Failed" && e["type"] == "Warning"
        })
        .await?;
        Ok(found.into_iter().next())
    })
    .await?;
    let message = failed["message"].as_str().unwrap_or_default();
    ensure!(mentions_auth_failure(message), "Failed event without the registry's refusal: {message:?}");

    // The right password: the pod runs the private image.
    skiff.apply(&private_pod("private", &private, Some("regcred"), "IfNotPresent")).await?;
    ready_pod(&skiff, &["pod", "private"])
        .await
        .with_context(|| format!("registry log:\n{}", registry.log_tail(20)))?;
    let logs = skiff.kubectl(&["logs", "private"]).await?.ok()?;
    ensure!(logs.contains("private-ok"), "kubectl logs private: {logs:?}");

    skiff.kubectl(&["delete", "pod", "wrong", "private", "multi", "--timeout=60s"]).await?.ok()?;
    skiff.kubectl(&["delete", "deployment", "pushed", "--timeout=60s"]).await?.ok()?;
    let oci_dir = skiff.data_dir().join("agent").join("oci");
    wait_until("the containers to be removed", POD_TIMEOUT, POLL, || async {
        let left = |d: &str| std::fs::read_dir(oci_dir.join(d)).map(|e| e.count()).unwrap_or(0);
        Ok((left("containers") == 0 && left("netns") == 0).then_some(()))
    })
    .await?;
    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}

/// The references `index.json` of the node's image store lists.
fn stored_references(skiff: &Skiff) -> Result<Value> {
    let path = skiff.data_dir().join("agent/images/index.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Whether blob `digest` is in the node's image store.
fn blob_stored(skiff: &Skiff, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    skiff.data_dir().join("agent/images/blobs/sha256").join(hex).is_file()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_gc_removes_unused_images_only() -> Result<()> {
    let mut options = StartOptions::new(StoreKind::Embedded);
    // Whatever the disk use, collect everything that may go, every second.
    options.extra_args = [
        "--image-gc-high-threshold",
        "0",
        "--image-gc-low-threshold",
        "0",
        "--minimum-image-ttl-duration",
        "0s",
        "--image-gc-period",
        "1s",
    ]
    .map(String::from)
    .to_vec();
    let mut skiff = Skiff::start_with(options).await?;
    let kept = crate::push_guest(&skiff, "http-probe", "gc/kept:v1").await?;
    let gone = crate::push_guest(&skiff, "hello-http", "gc/gone:v1").await?;

    let running = crate::run_http_pod(&skiff, "keep", &kept).await?;
    skiff.apply(&crate::http_pod("brief", &gone)).await?;
    // Once `brief` reports its image, the image is in the store; then the pod goes.
    let gone_id = wait_until("pod brief to report its image", POD_TIMEOUT, POLL, || async {
        let pod = get_json(&skiff, &["pod", "brief"]).await?;
        let id = pod["status"]["containerStatuses"][0]["imageID"].as_str().unwrap_or_default().to_string();
        Ok(id.contains("@sha256:").then_some(id))
    })
    .await?;
    let gone_digest = gone_id.rsplit('@').next().context("imageID digest")?.to_string();
    skiff.kubectl(&["delete", "pod", "brief", "--timeout=60s"]).await?.ok()?;

    wait_until("the unused image to be collected", POD_TIMEOUT, POLL, || async {
        let index = stored_references(&skiff)?;
        let listed = index.as_object().is_some_and(|refs| refs.keys().any(|r| r.ends_with("gc/gone:v1")));
        Ok((!listed && !blob_stored(&skiff, &gone_digest)).then_some(()))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))?;

    // The running pod's image stays, manifest and module, and the pod keeps running.
    let index = stored_references(&skiff)?;
    let kept_entry = index
        .as_object()
        .and_then(|refs| refs.iter().find(|(r, _)| r.ends_with("gc/kept:v1")).map(|(_, e)| e.clone()))
        .with_context(|| format!("the in-use image was collected: {index}\nskiff log tail:\n{}", skiff.log_tail(60)))?;
    let kept_digest = kept_entry["digest"].as_str().context("kept digest")?;
    ensure!(blob_stored(&skiff, kept_digest), "the in-use manifest {kept_digest} was removed");
    let module = kept_entry["kind"]["wasm"]["module_digest"].as_str().context("kept module digest")?;
    ensure!(blob_stored(&skiff, module), "the in-use module {module} was removed");
    let ip = running["status"]["podIP"].as_str().context("podIP")?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    let body = http.get(format!("http://{ip}:8080/")).send().await?.text().await?;
    ensure!(body == "ok", "pod keep after GC answered {body:?}");
    ensure!(pod_is_ready(&get_json(&skiff, &["pod", "keep"]).await?), "pod keep is no longer Ready");

    // 0 % cannot be reached while an image is in use: the node says so, as the kubelet does.
    let event = wait_until("a FreeDiskSpaceFailed node event", POD_TIMEOUT, POLL, || async {
        let found =
            events(&skiff, |e| e["involvedObject"]["kind"] == "Node" && e["reason"] == "FreeDiskSpaceFailed").await?;
        Ok(found.into_iter().next())
    })
    .await?;
    ensure!(event["type"] == "Warning", "event {event}");
    ensure!(
        event["message"].as_str().is_some_and(|m| m.contains("Failed to garbage collect required amount of images")),
        "event {event}"
    );

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}
