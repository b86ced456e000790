//! The node's pod environment against a real API server: env values resolved from
//! ConfigMaps, Secrets and pod fields (and Kubernetes' errors when they are missing), and
//! volumes materialised on the node — configMap contents following an update, secrets kept
//! off persistent disk, `readOnly` reflected in the mounts.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_node::environment::NodePodEnvironment;
use skiff_node::pod_env::PodEnvironment;
use skiff_node::runtime::PodRef;
use skiff_node::volumes::memory::is_memory_backed;
use skiff_tests::{Skiff, StoreKind, wait_until};

async fn objects(skiff: &Skiff) -> Result<()> {
    let client = skiff.kube_client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "cfg"}, "data": {"A": "alpha", "B": "beta", "1bad": "skipped", "file.txt": "v1"}}),
    )?;
    cms.create(&PostParams::default(), &cm).await?;
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}}))?;
    secrets.create(&PostParams::default(), &s).await?;
    Ok(())
}

fn pod(spec: serde_json::Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "e2e-uid-1", "labels": {"app": "web"}},
        "spec": spec,
    }))?)
}

fn container(pod: &Pod) -> Result<Container> {
    pod.spec.as_ref().and_then(|s| s.containers.first().cloned()).context("container")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_resolution() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    objects(&skiff).await?;
    let dir = tempfile::tempdir()?;
    let env = NodePodEnvironment::new(dir.path(), skiff.kube_client().await?);
    let ip = IpAddr::V4(Ipv4Addr::new(127, 244, 0, 9));
    let p = pod(json!({"nodeName": "n1", "containers": [{"name": "app", "envFrom": [
        {"configMapRef": {"name": "cfg"}},
        {"secretRef": {"name": "absent", "optional": true}},
    ], "env": [
        {"name": "GREETING", "value": "$(A)-$(NOPE)-$$(B)"},
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "absent", "optional": true}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "A", "value": "overridden"},
    ]}]}))?;
    let vars = env.container_env(&p, &container(&p)?, ip).await?;
    let expected: Vec<(String, String)> = [
        ("A", "overridden"),
        ("B", "beta"),
        ("file.txt", "v1"),
        ("GREETING", "alpha-$(NOPE)-$(B)"),
        ("FROM_CM", "beta"),
        ("PASSWORD", "hunter2"),
        ("POD_NAME", "web"),
        ("POD_IP", "127.244.0.9"),
        ("NODE", "n1"),
        ("APP", "web"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // `1bad` is not a valid variable name: skipped, as the kubelet does.
    ensure!(vars == expected, "env: {vars:?}");

    for (env_entry, message) in [
        (
            json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}),
            "configmap \"nope\" not found",
        ),
        (
            json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "zz"}}}),
            "couldn't find key zz in ConfigMap default/cfg",
        ),
        (
            json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "zz"}}}),
            "couldn't find key zz in Secret default/creds",
        ),
        (
            json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "zz"}}}),
            "secret \"nope\" not found",
        ),
    ] {
        let p = pod(json!({"containers": [{"name": "app", "env": [env_entry]}]}))?;
        let err = env.container_env(&p, &container(&p)?, ip).await.expect_err("missing reference");
        ensure!(err.to_string() == message, "got {err}, want {message}");
    }
    let p = pod(json!({"containers": [{"name": "app", "envFrom": [{"configMapRef": {"name": "nope"}}]}]}))?;
    let err = env.container_env(&p, &container(&p)?, ip).await.expect_err("missing envFrom");
    ensure!(err.to_string() == "configmap \"nope\" not found", "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    objects(&skiff).await?;
    let dir = tempfile::tempdir()?;
    let client = skiff.kube_client().await?;
    let env = NodePodEnvironment::new(dir.path(), client.clone());
    let p = pod(json!({"containers": [{"name": "app", "volumeMounts": [
        {"name": "config", "mountPath": "/etc/config"},
        {"name": "secret", "mountPath": "/etc/secret"},
        {"name": "scratch", "mountPath": "/scratch", "readOnly": true},
        {"name": "scratch", "mountPath": "/sub", "subPath": "nested"},
        {"name": "ram", "mountPath": "/ram"},
    ]}], "volumes": [
        {"name": "config", "configMap": {"name": "cfg", "items": [{"key": "file.txt", "path": "app/file.txt"}]}},
        {"name": "secret", "secret": {"secretName": "creds", "defaultMode": 256}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "ram", "emptyDir": {"medium": "Memory"}},
    ]}))?;
    let volumes = env.prepare_volumes(&p).await?;
    let mounts = volumes.mounts(&container(&p)?)?;
    let by_path: BTreeMap<&str, &skiff_node::runtime::Mount> =
        mounts.iter().map(|m| (m.container_path.as_str(), m)).collect();
    ensure!(
        by_path["/etc/config"].read_only && by_path["/etc/secret"].read_only,
        "configMap and secret volumes are read-only"
    );
    ensure!(
        by_path["/scratch"].read_only && !by_path["/sub"].read_only && !by_path["/ram"].read_only,
        "readOnly follows volumeMounts"
    );
    ensure!(by_path["/sub"].host_path.is_dir(), "subPath directory created");

    let secret_dir = &by_path["/etc/secret"].host_path;
    ensure!(std::fs::read_to_string(secret_dir.join("password"))? == "hunter2");
    ensure!(is_memory_backed(secret_dir), "secret volume {} is not on tmpfs", secret_dir.display());
    ensure!(is_memory_backed(&by_path["/ram"].host_path), "medium: Memory is on tmpfs");
    ensure!(
        !is_memory_backed(&by_path["/scratch"].host_path) || is_memory_backed(dir.path()),
        "disk emptyDir is on the data dir's filesystem"
    );

    let config_file = by_path["/etc/config"].host_path.join("app/file.txt");
    ensure!(std::fs::read_to_string(&config_file)? == "v1");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.patch("cfg", &PatchParams::default(), &Patch::Merge(&json!({"data": {"file.txt": "v2"}}))).await?;
    wait_until("configMap volume to follow the update", Duration::from_secs(15), Duration::from_millis(200), || {
        let now = std::fs::read_to_string(&config_file).unwrap_or_default();
        async move { Ok((now == "v2").then_some(())) }
    })
    .await?;

    drop(volumes);
    let pod_ref = PodRef { namespace: "default".into(), name: "web".into(), uid: "e2e-uid-1".into() };
    env.cleanup(&pod_ref).await;
    ensure!(!secret_dir.exists(), "cleanup removed the secret volume");
    ensure!(!dir.path().join("pods/e2e-uid-1").exists(), "cleanup removed the pod's volumes");
    Ok(())
}
