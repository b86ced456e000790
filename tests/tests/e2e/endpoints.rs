//! Endpoints and EndpointSlices end to end with real kubectl on `skiff up` (a real node runs
//! the WASM http-probe guest): a Deployment of 3 pods behind a Service with a named
//! `targetPort` → `kubectl get endpoints` lists the 3 ready pod IPs on port 8080 and the
//! Service's managed EndpointSlices hold the same; scaling to 1 shrinks both.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::Value;
use skiff_tests::{Skiff, StoreKind, wait_until};

use crate::{get_json, pod_is_ready, push_guest};

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn manifests(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    \
         matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      \
         containers:\n      - name: app\n        image: {image}\n        ports:\n        - name: http\n          \
         containerPort: 8080\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    \
         app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n"
    )
}

/// The IPs of the Ready, not terminating `app=web` pods.
async fn ready_pod_ips(skiff: &Skiff) -> Result<BTreeSet<String>> {
    let pods = get_json(skiff, &["pods", "-l", "app=web"]).await?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && pod_is_ready(p))
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect())
}

/// (ready IPs, ports) of the Endpoints `web`, when it has exactly one subset.
fn endpoints_view(ep: &Value) -> Option<(BTreeSet<String>, Vec<i64>)> {
    let subsets = ep["subsets"].as_array()?;
    let [subset] = subsets.as_slice() else { return None };
    let ips = subset["addresses"].as_array()?.iter().filter_map(|a| a["ip"].as_str().map(str::to_string)).collect();
    let ports = subset["ports"].as_array()?.iter().filter_map(|p| p["port"].as_i64()).collect();
    Some((ips, ports))
}

/// (ready endpoint IPs over all slices, every slice's ports) of the Service's slices.
fn slices_view(list: &Value) -> (BTreeSet<String>, Vec<i64>) {
    let slices = list["items"].as_array().cloned().unwrap_or_default();
    let mut ips = BTreeSet::new();
    let mut ports = Vec::new();
    for s in &slices {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            if e["conditions"]["ready"] == true {
                ips.extend(
                    e["addresses"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)),
                );
            }
        }
        ports.extend(s["ports"].as_array().into_iter().flatten().filter_map(|p| p["port"].as_i64()));
    }
    (ips, ports)
}

/// Waits until Endpoints and EndpointSlices both list exactly the `want` Ready pods on 8080.
async fn wait_listed(skiff: &Skiff, want: usize) -> Result<()> {
    wait_until(&format!("endpoints and slices to list {want} ready pods"), WAIT, POLL, || async {
        let pods = ready_pod_ips(skiff).await?;
        if pods.len() != want {
            return Ok(None);
        }
        let ep = get_json(skiff, &["endpoints", "web"]).await?;
        let slices = get_json(skiff, &["endpointslices", "-l", "kubernetes.io/service-name=web"]).await?;
        let ep_ok = endpoints_view(&ep).is_some_and(|(ips, ports)| ips == pods && ports == [8080]);
        let (slice_ips, slice_ports) = slices_view(&slices);
        let slices_ok = slice_ips == pods && !slice_ports.is_empty() && slice_ports.iter().all(|p| *p == 8080);
        Ok((ep_ok && slices_ok).then_some(()))
    })
    .await
}

#[tokio::test]
async fn a_service_lists_its_ready_pods_and_follows_scaling() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_guest(&skiff, "http-probe", "web:v1").await?;
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&manifests(&image))).await?.ok()?;
    skiff.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]).await?.ok()?;
    wait_listed(&skiff, 3).await?;

    // What a user sees: the table names the three pods' IP:port.
    let table = skiff.kubectl(&["get", "endpoints", "web"]).await?.ok()?;
    let ips = ready_pod_ips(&skiff).await?;
    ensure!(ips.iter().all(|ip| table.contains(&format!("{ip}:8080"))), "kubectl get endpoints:\n{table}");
    let slices = get_json(&skiff, &["endpointslices", "-l", "kubernetes.io/service-name=web"]).await?;
    for s in slices["items"].as_array().into_iter().flatten() {
        ensure!(
            s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
                && s["metadata"]["ownerReferences"][0]["kind"] == "Service"
                && s["addressType"] == "IPv4",
            "managed slice: {s}"
        );
    }

    skiff.kubectl(&["scale", "deployment/web", "--replicas=1"]).await?.ok()?;
    wait_listed(&skiff, 1).await?;
    Ok(())
}
