//! Bridge-mode pod networking for real: `skiff up --pod-network bridge` inside a network
//! namespace this test creates (only `lo` and what skiff adds, no route out), so the bridge,
//! its addresses and any routing mistake stay inside it and vanish with it.
//!
//! Covers issue 3's "running as root, the IPs live on the node bridge": the bridge `skiff0`
//! with the gateway address, a WASM pod's IP as a /32 on it and answering HTTP from inside the
//! namespace, the address removed with the pod, and the pod keeping its IP across a restart of
//! skiff on the same data dir.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::{Fatal, NetNs, Skiff, StartOptions, StoreKind, wait_until};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, pod_is_ready, push_guest, run_http_pod};

/// The node bridge (node/src/bridge.rs `BRIDGE`).
const BRIDGE: &str = "skiff0";

/// Fails if the namespace has a default route (IPv4 or IPv6, any table).
fn ensure_no_route_out(netns: &NetNs) -> Result<()> {
    for family in ["-4", "-6"] {
        let routes = netns.ip(&[family, "route", "show", "table", "all"])?;
        ensure!(!routes.contains("default"), "netns {} has a default route ({family}):\n{routes}", netns.name());
    }
    Ok(())
}

/// GET `http://ip:8080/` with curl run inside the namespace; the body.
async fn get_inside(netns: &NetNs, ip: Ipv4Addr) -> Result<String> {
    netns.run("curl", &["-sS", "--fail", "-m", "10", &format!("http://{ip}:8080/")]).await
}

async fn wait_node_ready(skiff: &Skiff) -> Result<()> {
    wait_until("the Node to be Ready", POD_TIMEOUT, POLL, || async {
        let nodes = get_json(skiff, &["nodes"]).await?;
        let ready = nodes["items"].as_array().is_some_and(|items| {
            items.iter().any(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
        });
        Ok(ready.then_some(()))
    })
    .await
}

fn pod_ip(pod: &Value) -> Result<Ipv4Addr> {
    let ip = pod["status"]["podIP"].as_str().context("pod has no podIP")?;
    ip.parse().with_context(|| format!("podIP {ip:?} is not IPv4"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_pod_ips_live_on_skiff0_and_survive_a_restart() -> Result<()> {
    let netns = NetNs::create()?;
    ensure_no_route_out(&netns)?;
    let mut options = StartOptions::new(StoreKind::Embedded);
    options.netns = Some(netns.name().to_string());
    options.extra_args = vec!["--pod-network".into(), "bridge".into()];
    let mut skiff = Skiff::start_with(options).await?;

    wait_node_ready(&skiff).await?;
    let bridge = netns.ipv4_addrs(BRIDGE)?;
    ensure!(bridge == ["10.244.0.1/24"], "{BRIDGE} addresses: {bridge:?}");
    let node = get_json(&skiff, &["nodes"]).await?;
    ensure!(node["items"][0]["spec"]["podCIDR"] == "10.244.0.0/24", "{}", node["items"][0]["spec"]);

    let image = push_guest(&skiff, "http-probe", "probes/http:v1").await?;
    let pod = run_http_pod(&skiff, "web", &image).await?;
    let ip = pod_ip(&pod)?;
    let [a, b, c, d] = ip.octets();
    ensure!((a, b, c) == (10, 244, 0) && d > 1 && d < 255, "pod IP {ip} is not a pod address of 10.244.0.0/24");
    let bridge = netns.ipv4_addrs(BRIDGE)?;
    ensure!(bridge.contains(&format!("{ip}/32")), "{ip}/32 not on {BRIDGE}: {bridge:?}");
    let body = get_inside(&netns, ip).await?;
    ensure!(body == "ok", "GET http://{ip}:8080/ answered {body:?}");
    ensure_no_route_out(&netns)?;

    // Restart on the same data dir: the pod comes back on the same address and answers.
    skiff.restart().await?;
    let again = wait_until("the pod to answer again after the restart", POD_TIMEOUT, POLL, || async {
        let pod = get_json(&skiff, &["pod", "web"]).await?;
        if !pod_is_ready(&pod) {
            return Ok(None);
        }
        let now = pod_ip(&pod)?;
        if now != ip {
            return Err(Fatal(format!("pod IP changed across the restart: {ip} -> {now}")).into());
        }
        let body = get_inside(&netns, ip).await?;
        Ok((body == "ok").then_some(pod))
    })
    .await?;
    ensure!(pod_ip(&again)? == ip, "{}", again["status"]);
    let bridge = netns.ipv4_addrs(BRIDGE)?;
    ensure!(
        bridge.iter().filter(|a| **a == format!("{ip}/32")).count() == 1 && bridge.contains(&"10.244.0.1/24".into()),
        "{BRIDGE} after the restart: {bridge:?}"
    );

    // Deleting the pod takes its address off the bridge (and leaves the gateway).
    skiff.kubectl(&["delete", "pod", "web", "--timeout=60s"]).await?.ok()?;
    let bridge = wait_until("the pod address to leave the bridge", POD_TIMEOUT, POLL, || async {
        let addrs = netns.ipv4_addrs(BRIDGE)?;
        Ok((!addrs.contains(&format!("{ip}/32"))).then_some(addrs))
    })
    .await?;
    ensure!(bridge == ["10.244.0.1/24"], "{BRIDGE} after the delete: {bridge:?}");
    ensure_no_route_out(&netns)?;

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}

/// A pod force-deleted while its node was down: the next agent start must hand back its
/// address (IPAM entry and /32 on the bridge), or every such pod leaks one for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_of_pods_deleted_while_the_node_was_down_are_released() -> Result<()> {
    let netns = NetNs::create()?;
    let bridge_up = |data_dir: Option<std::path::PathBuf>, control_plane_only: bool| {
        let mut options = StartOptions::new(StoreKind::Embedded);
        options.netns = Some(netns.name().to_string());
        options.data_dir = data_dir;
        options.control_plane_only = control_plane_only;
        if !control_plane_only {
            options.extra_args = vec!["--pod-network".into(), "bridge".into()];
        }
        options
    };
    let mut first = Skiff::start_with(bridge_up(None, false)).await?;
    let data_dir = first.data_dir().to_path_buf();
    let image = push_guest(&first, "http-probe", "probes/http:v1").await?;
    let pod = run_http_pod(&first, "doomed", &image).await?;
    let ip = pod_ip(&pod)?;
    let status = first.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}");
    ensure!(netns.ipv4_addrs(BRIDGE)?.contains(&format!("{ip}/32")), "a stopped agent keeps the pod's address");

    // The control plane alone (no node): the pod is force-deleted while the node is down.
    let mut server = Skiff::start_with(bridge_up(Some(data_dir.clone()), true)).await?;
    server.kubectl(&["delete", "pod", "doomed", "--grace-period=0", "--force"]).await?.ok()?;
    let status = server.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}");

    // The node comes back: the dead pod's address leaves the bridge.
    let again = Skiff::start_with(bridge_up(Some(data_dir.clone()), false)).await?;
    wait_until("the dead pod's address to leave the bridge", POD_TIMEOUT, POLL, || async {
        let addrs = netns.ipv4_addrs(BRIDGE)?;
        Ok((addrs == ["10.244.0.1/24"]).then_some(()))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", again.log_tail(30)))?;
    let ipam = std::fs::read_to_string(data_dir.join("agent").join("ipam.json")).context("reading ipam.json")?;
    let state: Value = serde_json::from_str(&ipam)?;
    ensure!(state["pods"].as_object().is_some_and(|p| p.is_empty()), "IPAM still holds addresses: {ipam}");
    Ok(())
}
