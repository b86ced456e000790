//! StatefulSets end to end with kubectl on `skiff up`: a 3-replica OrderedReady set of
//! http-probe WASM pods under a headless Service — ordered creation, stable names, hostname and
//! subdomain, one claim per ordinal reused by a recreated pod, a reverse-order rolling update
//! that `kubectl rollout status` follows, a partition, and scale-down from the top.
//!
//! The claims are made bound by the test (hostPath PersistentVolumes, status patched), since
//! volume provisioning is another controller's job; the StatefulSet adopts them by name.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::{Fatal, Skiff, StoreKind, wait_until};

use crate::{get_json, pod_is_ready, push_guest};

const TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

fn statefulset(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{port: 8080}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: web
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: app
        image: {image}
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Mi}}}}
"#
    )
}

/// A hostPath volume and a claim `data-web-<i>` bound to it (what a provisioner would do).
async fn bound_claim(skiff: &Skiff, i: usize) -> Result<()> {
    let dir = skiff.home().join(format!("pv-{i}"));
    std::fs::create_dir_all(&dir)?;
    let manifest = format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv-web-{i}}}
spec:
  capacity: {{storage: 1Mi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: {path}}}
  claimRef: {{namespace: default, name: data-web-{i}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data-web-{i}, labels: {{app: web}}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Mi}}}}
  volumeName: pv-web-{i}
"#,
        path = dir.display()
    );
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest)).await?.ok()?;
    let claim = format!("data-web-{i}");
    let status = r#"{"status":{"phase":"Bound"}}"#;
    skiff.kubectl(&["patch", "pvc", &claim, "--subresource=status", "--type=merge", "-p", status]).await?.ok()?;
    Ok(())
}

/// The set's pods by name.
async fn pods(skiff: &Skiff) -> Result<BTreeMap<String, Value>> {
    let list = get_json(skiff, &["pods", "-l", "app=web"]).await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    Ok(items.into_iter().filter_map(|p| Some((p["metadata"]["name"].as_str()?.to_string(), p))).collect())
}

fn revision(pod: &Value) -> String {
    pod["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap_or_default().to_string()
}

/// Waits until the set reports `ready` ready pods, checking on every look that a pod never
/// exists before its predecessor was seen Ready.
async fn wait_ordered(skiff: &Skiff, ready: usize) -> Result<BTreeMap<String, Value>> {
    let seen_ready: RefCell<HashSet<usize>> = RefCell::new(HashSet::new());
    let seen_ready = &seen_ready;
    wait_until("pods to become Ready in order", TIMEOUT, POLL, || async move {
        let pods = pods(skiff).await?;
        let mut seen = seen_ready.borrow_mut();
        for i in 0..3 {
            if pods.get(&format!("web-{i}")).is_some_and(pod_is_ready) {
                seen.insert(i);
            }
        }
        for i in 1..3 {
            if pods.contains_key(&format!("web-{i}")) && !seen.contains(&(i - 1)) {
                return Err(Fatal(format!("web-{i} exists before web-{} was Ready", i - 1)).into());
            }
        }
        Ok((pods.values().filter(|p| pod_is_ready(p)).count() == ready).then_some(pods))
    })
    .await
}

#[tokio::test]
async fn ordered_statefulset_with_claims_rolling_update_and_scale_down() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_guest(&skiff, "http-probe", "probe:v1").await?;
    for i in 0..3 {
        bound_claim(&skiff, i).await?;
    }
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&statefulset(&image))).await?.ok()?;

    let pods0 = wait_ordered(&skiff, 3).await?;
    let web0 = &pods0["web-0"];
    ensure!(web0["spec"]["hostname"] == "web-0" && web0["spec"]["subdomain"] == "web", "identity: {web0}");
    ensure!(web0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "web-0");
    let claims = get_json(&skiff, &["pvc"]).await?;
    let names = crate::item_names(&claims);
    ensure!(names == ["data-web-0", "data-web-1", "data-web-2"], "claims: {names:?}");

    // A deleted pod comes back with its name and its claim.
    let old_uid = pods0["web-1"]["metadata"]["uid"].clone();
    skiff.kubectl(&["delete", "pod", "web-1", "--wait=false"]).await?.ok()?;
    let web1 = wait_until("web-1 to be recreated", TIMEOUT, POLL, || async {
        let pods = pods(&skiff).await?;
        Ok(pods.get("web-1").filter(|p| p["metadata"]["uid"] != old_uid && pod_is_ready(p)).cloned())
    })
    .await?;
    ensure!(web1["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "data-web-1", "claim: {web1}");

    // A template change rolls 2, 1, 0, followed by `kubectl rollout status`.
    let old_rev = revision(&web1);
    let patch = r#"{"spec":{"template":{"metadata":{"annotations":{"rev":"2"}}}}}"#;
    skiff.kubectl(&["patch", "sts", "web", "--type=merge", "-p", patch]).await?.ok()?;
    let order: RefCell<Vec<String>> = RefCell::new(Vec::new());
    let order_ref = &order;
    let old_rev = &old_rev;
    let skiff_ref = &skiff;
    wait_until("the rolling update", TIMEOUT, POLL, || async move {
        let pods = pods(skiff_ref).await?;
        let mut order = order_ref.borrow_mut();
        for (name, pod) in &pods {
            if !revision(pod).is_empty() && revision(pod) != *old_rev && !order.contains(name) {
                order.push(name.clone());
            }
        }
        Ok((order.len() == 3).then_some(()))
    })
    .await?;
    let order = order.into_inner();
    ensure!(order == ["web-2", "web-1", "web-0"], "update order {order:?}");
    skiff.kubectl(&["rollout", "status", "sts/web", "--timeout=60s"]).await?.ok()?;

    // With partition 2 only web-2 moves to the next template.
    let patch = r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}},"template":{"metadata":{"annotations":{"rev":"3"}}}}}"#;
    skiff.kubectl(&["patch", "sts", "web", "--type=merge", "-p", patch]).await?.ok()?;
    skiff.kubectl(&["rollout", "status", "sts/web", "--timeout=60s"]).await?.ok()?;
    let after = pods(&skiff).await?;
    ensure!(revision(&after["web-0"]) == revision(&after["web-1"]), "web-0 and web-1 below the partition");
    ensure!(revision(&after["web-2"]) != revision(&after["web-1"]), "web-2 updated");

    // Scale to 1: web-2 goes, then web-1; the claims stay.
    skiff.kubectl(&["scale", "sts", "web", "--replicas=1"]).await?.ok()?;
    wait_until("scale down to web-0", TIMEOUT, POLL, || async {
        let pods = pods(&skiff).await?;
        if pods.contains_key("web-2") && !pods.contains_key("web-1") {
            return Err(Fatal("web-1 was removed before web-2".into()).into());
        }
        Ok((pods.keys().collect::<Vec<_>>() == ["web-0"]).then_some(()))
    })
    .await?;
    let names = crate::item_names(&get_json(&skiff, &["pvc"]).await?);
    ensure!(names.len() == 3, "claims kept: {names:?}");
    let history = skiff.kubectl(&["rollout", "history", "sts/web"]).await?.ok().context("rollout history")?;
    ensure!(history.contains('3'), "three revisions: {history}");
    Ok(())
}
