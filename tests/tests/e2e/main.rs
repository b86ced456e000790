//! End-to-end tests: one test binary, one module per concern.
//!
//! Every scenario starts its own `skiff up` (and etcd, for the etcd store) through the
//! `skiff-tests` harness; API-level scenarios run once per store via
//! [`skiff_tests::both_stores!`]. The `skiff` binary and the WASM guests must be built first
//! (`scripts/test.sh` does both). `skiff up` runs controllers, the scheduler and a node, so
//! workload objects created here really run (their images may not exist: that only leaves
//! their pods waiting).

mod bridge_netns;
mod cascade;
mod cluster_dns;
mod container_images;
mod container_lifecycle;
mod container_tty;
mod containers;
mod daemonset;
mod drain;
mod endpoints;
mod guest_dns;
mod hollow;
mod http_api;
mod ingress;
mod init_containers;
mod jobs;
mod kube_rs;
mod kubectl_apply;
mod kubectl_errors;
mod kubectl_verbs;
mod logs;
mod mixed_pods;
mod node_failure;
mod pod_env;
mod port_forward;
mod pull_secrets;
mod registry;
mod restart;
mod rollout;
mod scale_to_zero;
mod scheduling;
mod service_proxy;
mod service_udp;
mod services;
mod statefulset;
mod storage;
mod wasm_pods;
mod watch_compaction;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use skiff_tests::Skiff;

/// Deadline for a single watch event to arrive.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes `text` to `name` in the skiff's private home and returns the path (for `-f`).
pub fn write_manifest(skiff: &Skiff, name: &str, text: &str) -> Result<PathBuf> {
    let path = skiff.home().join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `kubectl get ARGS -o json` parsed.
pub async fn get_json(skiff: &Skiff, args: &[&str]) -> Result<Value> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    skiff.kubectl(&full).await?.json()
}

/// Names of the items of a JSON list.
pub fn item_names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|item| item["metadata"]["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Whether a pod (as JSON) has condition `Ready=True`.
pub fn pod_is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// `skiff push` of the built test guest `guest` as `name` to this cluster's built-in
/// registry; returns the printed image reference.
pub async fn push_guest(skiff: &Skiff, guest: &str, name: &str) -> Result<String> {
    let path = skiff_tests::guests::guest_path(guest);
    let out = tokio::process::Command::new(skiff.binary())
        .args(["push", path.to_str().context("guest path")?, name, "--kubeconfig"])
        .arg(&skiff.kubeconfig)
        .kill_on_drop(true)
        .output()
        .await
        .context("running skiff push")?;
    anyhow::ensure!(out.status.success(), "skiff push failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A Pod running `image` with container port 8080 (the http-probe guest's).
pub fn http_pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: app\n    \
         image: {image}\n    ports:\n    - containerPort: 8080\n"
    )
}

/// How long a pod gets to become Ready in the pod tests, and how often they look.
pub const POD_TIMEOUT: Duration = Duration::from_secs(60);
pub const POD_POLL: Duration = Duration::from_millis(200);

/// Applies [`http_pod`] `name` with `image` and waits until it is Ready; returns the pod.
pub async fn run_http_pod(skiff: &Skiff, name: &str, image: &str) -> Result<Value> {
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&http_pod(name, image))).await?.ok()?;
    skiff_tests::wait_until("the pod to be Ready", POD_TIMEOUT, POD_POLL, || async {
        let pod = get_json(skiff, &["pod", name]).await?;
        Ok(pod_is_ready(&pod).then_some(pod))
    })
    .await
}
