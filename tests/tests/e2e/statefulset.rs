//! StatefulSets end to end with kubectl on `skiff up`: a 3-replica OrderedReady set of
//! http-probe WASM pods under a headless Service — ordered creation, stable names, hostname and
//! subdomain, one claim per ordinal reused by a recreated pod, a reverse-order rolling update
//! that `kubectl rollout status` follows, a partition, and scale-down from the top.
//!
//! The claims get the default `local-path` class and are provisioned on the node when their pod
//! is scheduled; a file written through web-1's claim is read back by its replacement.

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
  # WASM pods are Ready within milliseconds; a second of availability per step makes the
  # reverse-order update observable by polling.
  minReadySeconds: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: app
        image: {image}
        ports: [{{containerPort: 8080}}]
        volumeMounts: [{{name: data, mountPath: /data}}]
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
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&statefulset(&image))).await?.ok()?;

    let pods0 = wait_ordered(&skiff, 3).await?;
    let web0 = &pods0["web-0"];
    ensure!(web0["spec"]["hostname"] == "web-0" && web0["spec"]["subdomain"] == "web", "identity: {web0}");
    ensure!(web0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "web-0");
    let claims = get_json(&skiff, &["pvc"]).await?;
    let names = crate::item_names(&claims);
    ensure!(names == ["data-web-0", "data-web-1", "data-web-2"], "claims: {names:?}");
    ensure!(
        claims["items"].as_array().is_some_and(|c| c.iter().all(|c| c["status"]["phase"] == "Bound")),
        "every claim provisioned and Bound: {claims}"
    );
    let volume_of_1 = claims["items"][1]["spec"]["volumeName"].clone();

    // Data written through web-1's claim survives the pod.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let ip = pods0["web-1"]["status"]["podIP"].as_str().context("web-1 has an IP")?.to_string();
    let wrote = http.get(format!("http://{ip}:8080/write?path=/data/marker")).send().await?;
    ensure!(wrote.status().is_success(), "writing into the claim: {}", wrote.text().await?);

    // A deleted pod comes back with its name and its claim.
    let old_uid = pods0["web-1"]["metadata"]["uid"].clone();
    skiff.kubectl(&["delete", "pod", "web-1", "--wait=false"]).await?.ok()?;
    let web1 = wait_until("web-1 to be recreated", TIMEOUT, POLL, || async {
        let pods = pods(&skiff).await?;
        Ok(pods.get("web-1").filter(|p| p["metadata"]["uid"] != old_uid && pod_is_ready(p)).cloned())
    })
    .await?;
    ensure!(web1["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "data-web-1", "claim: {web1}");
    let ip = web1["status"]["podIP"].as_str().context("new web-1 has an IP")?;
    let read = http.get(format!("http://{ip}:8080/file?path=/data/marker")).send().await?.text().await?;
    ensure!(read == "written", "the new web-1 reads what the old one wrote, got {read:?}");
    let claim = get_json(&skiff, &["pvc", "data-web-1"]).await?;
    ensure!(claim["spec"]["volumeName"] == volume_of_1, "same volume re-attached: {claim}");

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
    let seen: Vec<(String, String)> = pods(&skiff).await?.iter().map(|(n, p)| (n.clone(), revision(p))).collect();
    ensure!(order == ["web-2", "web-1", "web-0"], "update order {order:?} (from {old_rev}; now {seen:?})");
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
