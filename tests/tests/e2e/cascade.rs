//! Garbage collection and namespace deletion with real kubectl against `skiff up`: cascading
//! deletes of a WASM Deployment in the background (kubectl's default), with
//! `--cascade=orphan` and with `--cascade=foreground`; deleting a namespace with a running
//! WASM pod, a Deployment, ConfigMaps, Secrets and a Service in it; and the system
//! namespaces refusing deletion.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::Value;
use skiff_tests::{Skiff, StoreKind, wait_until};

use crate::{POD_POLL, POD_TIMEOUT, get_json, item_names, pod_is_ready, push_guest};

/// A merge patch adding a finalizer only this test removes.
const HOLD: &str = r#"{"metadata":{"finalizers":["skiff.test/hold"]}}"#;

/// How long a cascade may take once started (pods on a node stop gracefully first).
const CASCADE_TIMEOUT: Duration = Duration::from_secs(45);

/// A Deployment `name` running `image` with `replicas` pods, labelled `app: name`.
fn deployment(name: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  replicas: {replicas}\n  \
         selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    \
         spec:\n      containers:\n      - name: app\n        image: {image}\n        ports:\n        - containerPort: 8080\n"
    )
}

/// `kubectl get KIND -l app=APP [-n NS] -o json`.
async fn labelled(skiff: &Skiff, kind: &str, app: &str, ns: &str) -> Result<Value> {
    get_json(skiff, &[kind, "-l", &format!("app={app}"), "-n", ns]).await
}

/// Applies a Deployment and waits until its ReplicaSet and `replicas` pods exist.
async fn deploy(skiff: &Skiff, name: &str, image: &str, replicas: u32) -> Result<()> {
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&deployment(name, image, replicas))).await?.ok()?;
    wait_until("the ReplicaSet and its pods", POD_TIMEOUT, POD_POLL, || async {
        let rs = item_names(&labelled(skiff, "rs", name, "default").await?);
        let pods = item_names(&labelled(skiff, "pods", name, "default").await?);
        Ok((rs.len() == 1 && pods.len() == replicas as usize).then_some(()))
    })
    .await
}

/// Waits until no ReplicaSet or pod labelled `app` is left.
async fn wait_dependents_gone(skiff: &Skiff, app: &str) -> Result<()> {
    wait_until("the ReplicaSets and pods to be gone", CASCADE_TIMEOUT, POD_POLL, || async {
        let rs = item_names(&labelled(skiff, "rs", app, "default").await?);
        let pods = item_names(&labelled(skiff, "pods", app, "default").await?);
        Ok((rs.is_empty() && pods.is_empty()).then_some(()))
    })
    .await
}

async fn exists(skiff: &Skiff, args: &[&str]) -> Result<bool> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    let out = skiff.kubectl(&full).await?;
    if out.success {
        return Ok(true);
    }
    ensure!(out.stderr.contains("NotFound") || out.stderr.contains("not found"), "kubectl get failed: {}", out.stderr);
    Ok(false)
}

#[tokio::test]
async fn cascading_and_orphan_deletes_and_namespace_deletion() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_guest(&skiff, "http-probe", "cascade:v1").await?;

    // Background (kubectl's default): the ReplicaSet and its pods go after the Deployment.
    deploy(&skiff, "bg", &image, 2).await?;
    skiff.kubectl(&["delete", "deployment", "bg"]).await?.ok()?;
    wait_dependents_gone(&skiff, "bg").await?;

    // Orphan: the Deployment goes at once; its ReplicaSet and pods stay, unowned.
    deploy(&skiff, "or", &image, 2).await?;
    skiff.kubectl(&["delete", "deployment", "or", "--cascade=orphan"]).await?.ok()?;
    ensure!(!exists(&skiff, &["deployment", "or"]).await?, "the orphaning Deployment is gone");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rs = labelled(&skiff, "rs", "or", "default").await?;
    let rs_items = rs["items"].as_array().cloned().unwrap_or_default();
    ensure!(rs_items.len() == 1, "the ReplicaSet stays: {rs}");
    ensure!(rs_items[0]["metadata"].get("ownerReferences").is_none(), "without an owner: {rs}");
    let pods = labelled(&skiff, "pods", "or", "default").await?;
    let pod_items = pods["items"].as_array().cloned().unwrap_or_default();
    ensure!(pod_items.len() == 2, "the pods stay: {pods}");
    ensure!(
        pod_items.iter().all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"),
        "still owned by their ReplicaSet: {pods}"
    );
    skiff.kubectl(&["delete", "rs", "--all"]).await?.ok()?;

    // Foreground: the Deployment stays, with its finalizer, until its ReplicaSet and running
    // pod are gone; then it goes. A WASM pod stops in milliseconds, so the pod gets a
    // finalizer of the test's own to hold the cascade where it can be looked at.
    deploy(&skiff, "fg", &image, 1).await?;
    let pod = wait_until("the fg pod to be Ready", POD_TIMEOUT, POD_POLL, || async {
        let pods = labelled(&skiff, "pods", "fg", "default").await?;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        Ok(items.iter().all(pod_is_ready).then(|| item_names(&pods).pop()).flatten())
    })
    .await?;
    skiff.kubectl(&["patch", "pod", &pod, "--type=merge", "-p", HOLD]).await?.ok()?;
    skiff.kubectl(&["delete", "deployment", "fg", "--cascade=foreground", "--wait=false"]).await?.ok()?;
    let held = wait_until("the pod to be terminated", CASCADE_TIMEOUT, POD_POLL, || async {
        let p = get_json(&skiff, &["pod", &pod]).await?;
        Ok(p["metadata"]["deletionTimestamp"].is_string().then_some(p))
    })
    .await?;
    ensure!(held["metadata"]["finalizers"] == serde_json::json!(["skiff.test/hold"]), "{held}");
    for kind in ["deployment", "rs"] {
        let owners = labelled(&skiff, kind, "fg", "default").await?;
        let items = owners["items"].as_array().cloned().unwrap_or_default();
        ensure!(items.len() == 1, "the {kind} waits for the pod: {owners}");
        let meta = &items[0]["metadata"];
        ensure!(meta["deletionTimestamp"].is_string(), "{kind} being deleted: {owners}");
        ensure!(meta["finalizers"] == serde_json::json!(["foregroundDeletion"]), "{kind} in the foreground: {owners}");
    }
    skiff.kubectl(&["patch", "pod", &pod, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]).await?.ok()?;
    wait_until("the fg Deployment to be gone", CASCADE_TIMEOUT, POD_POLL, || async {
        let gone = !exists(&skiff, &["deployment", "fg"]).await?;
        if !gone {
            return Ok(None);
        }
        // Dependents went first: nothing is left by the time the owner is gone.
        let rs = item_names(&labelled(&skiff, "rs", "fg", "default").await?);
        let pods = item_names(&labelled(&skiff, "pods", "fg", "default").await?);
        ensure!(rs.is_empty() && pods.is_empty(), "the owner went before its dependents: {rs:?} {pods:?}");
        Ok(Some(()))
    })
    .await?;

    namespace_deletion(&skiff, &image).await?;

    let err = skiff.kubectl(&["delete", "namespace", "default"]).await?.err()?;
    ensure!(
        err.contains("Forbidden")
            && err.contains("namespaces \"default\" is forbidden: this namespace may not be deleted"),
        "{err}"
    );
    ensure!(exists(&skiff, &["namespace", "default"]).await?);
    Ok(())
}

async fn namespace_deletion(skiff: &Skiff, image: &str) -> Result<()> {
    skiff.kubectl(&["create", "namespace", "ns1"]).await?.ok()?;
    let manifest = format!(
        "{}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: solo\n  labels: {{app: solo}}\nspec:\n  containers:\n  \
         - name: app\n    image: {image}\n    ports:\n    - containerPort: 8080\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\ndata:\n  a: \"1\"\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm2\n  finalizers: [skiff.test/hold]\ndata:\n  b: \"2\"\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: s1\nstringData:\n  p: x\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\nspec:\n  selector: {{app: web}}\n  ports:\n  - port: 80\n",
        deployment("web", image, 1)
    );
    skiff.kubectl_stdin(&["apply", "-n", "ns1", "-f", "-"], Some(&manifest)).await?.ok()?;
    wait_until("the pods in ns1 to be Ready", POD_TIMEOUT, POD_POLL, || async {
        let pods = get_json(skiff, &["pods", "-n", "ns1"]).await?;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        Ok((items.len() == 2 && items.iter().all(pod_is_ready)).then_some(()))
    })
    .await?;

    skiff.kubectl(&["delete", "namespace", "ns1", "--wait=false"]).await?.ok()?;
    let ns = get_json(skiff, &["namespace", "ns1"]).await?;
    ensure!(ns["status"]["phase"] == "Terminating", "{ns}");
    let late = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\n  namespace: ns1\n";
    let err = skiff.kubectl_stdin(&["create", "-f", "-"], Some(late)).await?.err()?;
    ensure!(
        err.contains("Forbidden")
            && err.contains("unable to create new content in namespace ns1 because it is being terminated"),
        "{err}"
    );
    // The held ConfigMap keeps the namespace Terminating, and the conditions say why.
    let ns = wait_until("ns1 to report what remains", CASCADE_TIMEOUT, POD_POLL, || async {
        let ns = get_json(skiff, &["namespace", "ns1"]).await?;
        let pods = get_json(skiff, &["pods", "-n", "ns1"]).await?;
        let remaining = ns["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
            c["type"] == "NamespaceContentRemaining"
                && c["message"] == "Some resources are remaining: configmaps. has 1 resource instances"
        });
        Ok((remaining && item_names(&pods).is_empty()).then_some(ns))
    })
    .await?;
    ensure!(ns["status"]["phase"] == "Terminating", "{ns}");
    let finalizers = ns["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "NamespaceFinalizersRemaining");
    ensure!(
        finalizers.is_some_and(|c| c["status"] == "True"
            && c["message"]
                == "Some content in the namespace has finalizers remaining: skiff.test/hold in 1 resource instances"),
        "{ns}"
    );
    let cms = item_names(&get_json(skiff, &["configmaps", "-n", "ns1"]).await?);
    ensure!(cms == ["cm2"], "only the held ConfigMap is left: {cms:?}");
    skiff
        .kubectl(&["patch", "cm", "cm2", "-n", "ns1", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#])
        .await?
        .ok()?;
    wait_until("namespace ns1 to be gone", CASCADE_TIMEOUT, POD_POLL, || async {
        Ok((!exists(skiff, &["namespace", "ns1"]).await?).then_some(()))
    })
    .await?;
    for kind in ["deployments", "replicasets", "pods", "configmaps", "secrets", "services"] {
        let all = get_json(skiff, &[kind, "-A"]).await?;
        let left: Vec<&Value> =
            all["items"].as_array().into_iter().flatten().filter(|o| o["metadata"]["namespace"] == "ns1").collect();
        ensure!(left.is_empty(), "{kind} left in the deleted namespace: {left:?}");
    }
    Ok(())
}
