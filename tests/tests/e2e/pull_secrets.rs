//! `imagePullSecrets` against a registry that demands credentials: Debian's `docker-registry`
//! with htpasswd (bcrypt) auth on loopback, the http-probe guest pushed there with Basic
//! credentials. A pod without secrets shows `ErrImagePull`/`ImagePullBackOff` with the
//! registry's refusal; a pod with a `kubernetes.io/dockerconfigjson` Secret runs and answers;
//! a pod whose Secret appears only later is pulled at its next retry. Also: concurrent pulls
//! of one reference with different credentials do not share a result.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use skiff_oci_shim::image::{Auth, ImageStore, PullPolicy, RegistryCredentials, push_wasm};
use skiff_tests::guests::guest_path;
use skiff_tests::{DockerRegistry, Skiff, StartOptions, StoreKind, wait_until, with_timeout};

use crate::{get_json, write_manifest};

const USER: &str = "alice";
const PASSWORD: &str = "wonderland-42";
/// Generous: the pod whose Secret appears late waits out its pull back-off (10s, 20s, 40s).
const POD_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);
const STEP: Duration = Duration::from_secs(60);

/// A registry that requires `USER`/`PASSWORD`, holding the http-probe guest; returns it and
/// the image reference.
async fn private_registry() -> Result<(DockerRegistry, String)> {
    // Cost 4 (bcrypt's minimum) keeps the registry's check of every request fast.
    let hash = bcrypt::hash(PASSWORD, 4).context("hashing the password")?;
    let registry = DockerRegistry::start_with_htpasswd(&format!("{USER}:{hash}\n")).await?;
    let image = format!("{}/private/http-probe:v1", registry.host_port);
    let wasm = std::fs::read(guest_path("http-probe")).context("reading the http-probe guest")?;
    let mut creds = credentials(&registry, None);
    let anonymous = with_timeout("anonymous push", STEP, async { Ok(push_wasm(&image, wasm.clone(), &creds).await) });
    ensure!(anonymous.await?.is_err(), "the registry accepted an anonymous push: auth is not on");
    creds.auth = Some(Auth::Basic { username: USER.into(), password: PASSWORD.into() });
    with_timeout("authenticated push", STEP, async { Ok(push_wasm(&image, wasm, &creds).await?) }).await?;
    Ok((registry, image))
}

fn credentials(registry: &DockerRegistry, auth: Option<Auth>) -> RegistryCredentials {
    RegistryCredentials { auth, insecure_registries: vec![registry.host_port.clone()], extra_root_ca_pem: None }
}

fn pod(name: &str, image: &str, secret: Option<&str>) -> String {
    let secrets = secret.map(|s| format!("imagePullSecrets:\n  - name: {s}\n  ")).unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  {secrets}containers:
  - name: app
    image: {image}
    ports:
    - containerPort: 8080
"#
    )
}

async fn apply(skiff: &Skiff, name: &str, text: &str) -> Result<()> {
    let path = write_manifest(skiff, &format!("{name}.yaml"), text)?;
    skiff.kubectl(&["apply", "-f", path.to_str().context("path")?]).await?.ok()?;
    Ok(())
}

/// A `kubernetes.io/dockerconfigjson` Secret for `registry` (with `auth`, as `kubectl create
/// secret docker-registry` writes it).
async fn create_pull_secret(skiff: &Skiff, name: &str, registry: &str) -> Result<()> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let config = json!({"auths": {registry: {"username": USER, "password": PASSWORD, "auth": auth}}});
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config.to_string()},
    }))?;
    let api: Api<Secret> = Api::namespaced(skiff.kube_client().await?, "default");
    api.create(&PostParams::default(), &secret).await.context("creating the pull secret")?;
    Ok(())
}

fn waiting(pod: &Value) -> (&str, &str) {
    let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
    (waiting["reason"].as_str().unwrap_or_default(), waiting["message"].as_str().unwrap_or_default())
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Waits until the pod shows `reason`, returning its waiting message.
async fn wait_reason(skiff: &Skiff, name: &str, reason: &str) -> Result<String> {
    wait_until(&format!("pod {name} waiting with {reason}"), POD_TIMEOUT, POLL, || async {
        let pod = get_json(skiff, &["pod", name]).await?;
        let (r, message) = waiting(&pod);
        Ok((r == reason).then(|| message.to_string()))
    })
    .await
}

/// A refusal as the registry phrases it, in some form.
fn mentions_auth_failure(message: &str) -> bool {
    let m = message.to_lowercase();
    ["401", "unauthorized", "not authorized", "authentication required", "denied"].iter().any(|w| m.contains(w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_images_need_their_pull_secret() -> Result<()> {
    let (registry, image) = private_registry().await?;
    let mut options = StartOptions::new(StoreKind::Embedded);
    options.extra_args = vec!["--insecure-registry".into(), registry.host_port.clone()];
    let skiff = Skiff::start_with(options).await?;

    apply(&skiff, "anon", &pod("anon", &image, None)).await?;
    // References a Secret that does not exist yet: not fatal, the pull goes on without it.
    apply(&skiff, "late", &pod("late", &image, Some("regcred"))).await?;

    let first = wait_reason(&skiff, "anon", "ErrImagePull").await;
    let backoff = wait_reason(&skiff, "anon", "ImagePullBackOff").await?;
    // ErrImagePull is shown only until the first retry fails; a slow poll may miss it.
    if let Ok(message) = first {
        ensure!(mentions_auth_failure(&message), "ErrImagePull without the registry's refusal: {message:?}");
    }
    ensure!(mentions_auth_failure(&backoff), "ImagePullBackOff without the registry's refusal: {backoff:?}");
    let late = wait_reason(&skiff, "late", "ImagePullBackOff").await?;
    ensure!(mentions_auth_failure(&late), "missing secret: {late:?}");

    create_pull_secret(&skiff, "regcred", &registry.host_port).await?;
    apply(&skiff, "private", &pod("private", &image, Some("regcred"))).await?;
    for name in ["private", "late"] {
        let pod = wait_until(&format!("pod {name} ready"), POD_TIMEOUT, POLL, || async {
            let pod = get_json(&skiff, &["pod", name]).await?;
            Ok(is_ready(&pod).then_some(pod))
        })
        .await
        .with_context(|| format!("registry log:\n{}", registry.log_tail(20)))?;
        let ip = pod["status"]["podIP"].as_str().context("podIP")?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
        let response = http.get(format!("http://{ip}:8080/")).send().await?;
        let (status, body) = (response.status(), response.text().await?);
        ensure!(status.is_success() && body == "ok", "pod {name} answered {status} {body:?}");
    }

    // Kubernetes lets a pulled image serve any pod on the node under IfNotPresent, but the
    // tag `v1` here defaults to IfNotPresent: the anonymous pod may now start from the cache.
    // What must hold is only that the authorised pods ran; the anonymous one is left alone.
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_do_not_share_credentials() -> Result<()> {
    let (registry, image) = private_registry().await?;
    let dir = tempfile::tempdir()?;
    let store = ImageStore::open(dir.path())?;
    let anonymous = credentials(&registry, None);
    let authorised = credentials(&registry, Some(Auth::Basic { username: USER.into(), password: PASSWORD.into() }));
    // The anonymous pull starts first; sharing its download would fail the authorised one.
    let (anon, authed) = with_timeout("two concurrent pulls", STEP, async {
        Ok(tokio::join!(
            store.pull(&image, PullPolicy::Always, &anonymous),
            store.pull(&image, PullPolicy::Always, &authorised)
        ))
    })
    .await?;
    let err = anon.expect_err("an anonymous pull of a private image must fail");
    ensure!(mentions_auth_failure(&err.to_string()), "anonymous pull: {err}");
    let pulled = authed.context("the authorised pull")?;
    ensure!(pulled.digest.starts_with("sha256:"), "{pulled:?}");
    ensure!(store.registry_fetches() == 2, "expected two separate pulls, got {}", store.registry_fetches());
    Ok(())
}
