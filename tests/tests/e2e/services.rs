//! Services get their addresses from the API server as in Kubernetes (issue 6): the
//! `kubernetes` Service at the range's first address with Endpoints naming the API server (and
//! `kube-system/kube-dns` at .10);
//! `kubectl create service` / `kubectl expose` get distinct cluster IPs; NodePort Services get
//! node ports in range; a requested IP that is taken, or outside the range, is refused with
//! the Kubernetes message; after a restart (both stores) nothing is handed out twice.

use std::collections::HashSet;

use anyhow::{Result, ensure};
use skiff_tests::{Skiff, StoreKind, both_stores};

use crate::get_json;

async fn cluster_ip(skiff: &Skiff, name: &str) -> Result<String> {
    Ok(get_json(skiff, &["svc", name]).await?["spec"]["clusterIP"].as_str().unwrap_or_default().to_string())
}

async fn services_get_unique_addresses(store: StoreKind) -> Result<()> {
    let mut skiff = Skiff::start(store).await?;
    ensure!(cluster_ip(&skiff, "kubernetes").await? == "10.96.0.1", "the kubernetes Service");
    let ep = get_json(&skiff, &["endpoints", "kubernetes"]).await?;
    let port: u64 = skiff.url.rsplit(':').next().unwrap_or_default().trim_end_matches('/').parse()?;
    ensure!(ep["subsets"][0]["ports"][0]["port"] == port, "kubernetes Endpoints name the API port: {ep}");

    ensure!(get_json(&skiff, &["svc", "kube-dns", "-n", "kube-system"]).await?["spec"]["clusterIP"] == "10.96.0.10");
    let mut seen = HashSet::from(["10.96.0.1".to_string(), "10.96.0.10".to_string()]);
    for name in ["a", "b", "c"] {
        skiff.kubectl(&["create", "service", "clusterip", name, "--tcp=80:8080"]).await?.ok()?;
        let ip = cluster_ip(&skiff, name).await?;
        ensure!(ip.starts_with("10.96.") && seen.insert(ip.clone()), "{name} got {ip:?} (seen {seen:?})");
    }
    skiff.kubectl(&["create", "service", "nodeport", "np", "--tcp=80:8080"]).await?.ok()?;
    let np = get_json(&skiff, &["svc", "np"]).await?;
    let node_port = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap_or_default();
    ensure!((30000..=32767).contains(&node_port), "node port {node_port} out of range: {np}");

    // Requested addresses: taken, outside the range, and a free one.
    let taken = skiff
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: dup}}\nspec:\n  clusterIP: {}\n  ports: [{{port: 80}}]\n",
                cluster_ip(&skiff, "a").await?
            )),
        )
        .await?;
    ensure!(!taken.success && taken.stderr.contains("already allocated"), "taken IP: {}", taken.stderr);
    let outside = skiff
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: Service\nmetadata: {name: far}\nspec:\n  clusterIP: 10.0.0.7\n  ports: [{port: 80}]\n"),
        )
        .await?;
    ensure!(!outside.success && outside.stderr.contains("not in the valid range"), "outside IP: {}", outside.stderr);
    skiff
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec:\n  clusterIP: 10.96.0.53\n  ports: [{port: 53, protocol: UDP}]\n"),
        )
        .await?
        .ok()?;
    seen.insert("10.96.0.53".into());

    // A restart forgets nothing: new Services still get new addresses and ports.
    skiff.restart().await?;
    ensure!(cluster_ip(&skiff, "kubernetes").await? == "10.96.0.1", "kubernetes after restart");
    for name in ["d", "e"] {
        skiff.kubectl(&["create", "service", "clusterip", name, "--tcp=80"]).await?.ok()?;
        let ip = cluster_ip(&skiff, name).await?;
        ensure!(seen.insert(ip.clone()), "{name} got {ip}, already handed out before the restart");
    }
    let clash = skiff
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: np2}}\nspec:\n  type: NodePort\n  ports: [{{port: 80, nodePort: {node_port}}}]\n"
            )),
        )
        .await?;
    ensure!(!clash.success && clash.stderr.contains("already allocated"), "node port clash: {}", clash.stderr);
    skiff.stop().await?;
    Ok(())
}

both_stores!(services_get_unique_addresses);
