//! The node agent's service proxy for real (issue 6): `skiff up --pod-network bridge` inside a
//! network namespace this test creates, so cluster IPs (made local by the node) and node ports
//! never touch the machine's network; curl runs inside the namespace.
//!
//! A Deployment of three http-probe WASM pods (each answers `/env/POD_NAME` with its name)
//! behind several Services: round robin over all three through the cluster IP; one pod for
//! every connection with `sessionAffinity: ClientIP`; the node port on the node's address;
//! a LoadBalancer port on the node's address with `status.loadBalancer.ingress` naming it; a
//! pod whose readiness probe starts failing (a hostPath file the test removes) leaves the
//! endpoints and gets no more connections; a Service with no ready backend, and a deleted
//! Service, refuse a connection at once (curl exit 7). A second test has a busybox container
//! reach a cluster IP from its own network namespace (real runc and CNI).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use skiff_tests::oci_node::{OciLeftovers, oci_start_options};
use skiff_tests::{NetNs, Skiff, StartOptions, StoreKind, wait_until};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, push_guest};

/// Requests made per distribution check.
const REQUESTS: usize = 30;

fn deployment(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web, tier: web}}}}
    spec:
      containers:
      - name: app
        image: {image}
        ports: [{{name: http, containerPort: 8080}}]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
"#
    )
}

/// A pod selected by the `tier: web` Services (not by the Deployment, whose ReplicaSet would
/// adopt it) whose readiness is the file `flag_dir/ready`.
fn flip_pod(image: &str, flag_dir: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: flip, labels: {{tier: web}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {image}
    ports: [{{name: http, containerPort: 8080}}]
    env:
    - name: POD_NAME
      value: flip
    volumeMounts: [{{name: flag, mountPath: /flag}}]
    readinessProbe:
      httpGet: {{path: "/file?path=/flag/ready", port: 8080}}
      periodSeconds: 1
      failureThreshold: 1
  volumes:
  - name: flag
    hostPath: {{path: {flag_dir}, type: Directory}}
"#
    )
}

/// A Service `name` over the `tier: <selector>` pods, port `port` → `http`.
fn service(name: &str, selector: &str, port: u16, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{tier: {selector}}}\n  \
         ports: [{{port: {port}, targetPort: http}}]\n{extra}"
    )
}

/// The curl exit code and body of GET `url` from inside the namespace, and how long it took.
async fn curl(netns: &NetNs, url: &str) -> Result<(i32, String, Duration)> {
    let started = Instant::now();
    let out = netns.command("curl").args(["-sS", "-m", "10", url]).output().await.context("running curl")?;
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), started.elapsed()))
}

/// `REQUESTS` GETs of `/env/POD_NAME` through `base`, each a new connection: answers per pod.
async fn spread(netns: &NetNs, base: &str) -> Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for _ in 0..REQUESTS {
        let (code, body, _) = curl(netns, &format!("{base}/env/POD_NAME")).await?;
        ensure!(code == 0, "GET {base}/env/POD_NAME: curl exit {code}");
        *seen.entry(body).or_insert(0) += 1;
    }
    Ok(seen)
}

/// Waits until `base` answers (the proxy has picked the Service up).
async fn answering(skiff: &Skiff, netns: &NetNs, base: &str) -> Result<()> {
    wait_until(&format!("{base} to answer"), POD_TIMEOUT, POLL, || async {
        let (code, _, _) = curl(netns, &format!("{base}/")).await?;
        Ok((code == 0).then_some(()))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))
}

/// `spec.clusterIP` of Service `name`.
async fn cluster_ip(skiff: &Skiff, name: &str) -> Result<String> {
    let svc = get_json(skiff, &["service", name]).await?;
    Ok(svc["spec"]["clusterIP"].as_str().context("no clusterIP")?.to_string())
}

/// Ready endpoint addresses of Service `name` (all its slices).
async fn ready_endpoints(skiff: &Skiff, name: &str) -> Result<Vec<String>> {
    let slices = get_json(skiff, &["endpointslices", "-l", &format!("kubernetes.io/service-name={name}")]).await?;
    let mut ips = Vec::new();
    for endpoint in
        slices["items"].as_array().into_iter().flatten().flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
    {
        if endpoint["conditions"]["ready"] != Value::Bool(false) {
            ips.extend(
                endpoint["addresses"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)),
            );
        }
    }
    Ok(ips)
}

/// Asserts a connection to `url` is refused at once (curl exit 7 well within 2 s).
async fn refused(netns: &NetNs, url: &str) -> Result<()> {
    let (code, body, took) = curl(netns, url).await?;
    ensure!(code == 7, "{url}: curl exit {code} (body {body:?}); a refused connection exits 7");
    ensure!(took < Duration::from_secs(2), "{url}: refusing took {took:?}");
    Ok(())
}

/// The node's InternalIP.
async fn node_ip(skiff: &Skiff) -> Result<String> {
    let nodes = get_json(skiff, &["nodes"]).await?;
    let addresses = nodes["items"][0]["status"]["addresses"].as_array().cloned().unwrap_or_default();
    let ip = addresses.iter().find(|a| a["type"] == "InternalIP").and_then(|a| a["address"].as_str());
    Ok(ip.context("the node has no InternalIP")?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_node_ports_and_load_balancers_balance_over_ready_wasm_pods() -> Result<()> {
    let netns = NetNs::create()?;
    let mut options = StartOptions::new(StoreKind::Embedded);
    options.netns = Some(netns.name().to_string());
    options.extra_args = vec!["--pod-network".into(), "bridge".into()];
    let mut skiff = Skiff::start_with(options).await?;
    let flag_dir = tempfile::Builder::new().prefix("skiff-proxy-flag-").tempdir()?;
    let flag = flag_dir.path().join("ready");
    std::fs::write(&flag, "ready")?;

    let image = push_guest(&skiff, "http-probe", "proxy/http-probe:v1").await?;
    skiff.apply(&deployment(&image)).await?;
    skiff.apply(&service("web", "web", 80, "")).await?;
    skiff.apply(&service("sticky", "web", 80, "  sessionAffinity: ClientIP\n")).await?;
    skiff.apply(&service("np", "web", 80, "  type: NodePort\n")).await?;
    skiff.apply(&service("lb", "web", 8090, "  type: LoadBalancer\n")).await?;
    skiff.apply(&service("empty", "nothing", 80, "")).await?;
    wait_until("three ready endpoints", POD_TIMEOUT, POLL, || async {
        Ok((ready_endpoints(&skiff, "web").await?.len() == 3).then_some(()))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))?;

    // Round robin per connection through the cluster IP: every pod, evenly.
    let web = format!("http://{}", cluster_ip(&skiff, "web").await?);
    answering(&skiff, &netns, &web).await?;
    let seen = spread(&netns, &web).await?;
    ensure!(seen.len() == 3, "{REQUESTS} requests through {web} reached {seen:?}, not all three pods");
    ensure!(seen.values().all(|n| *n >= 8), "round robin should spread {REQUESTS} requests evenly: {seen:?}");
    ensure!(seen.keys().all(|pod| pod.starts_with("web-")), "{seen:?}");

    // ClientIP affinity: one pod for every connection of this client.
    let sticky = format!("http://{}", cluster_ip(&skiff, "sticky").await?);
    answering(&skiff, &netns, &sticky).await?;
    let seen = spread(&netns, &sticky).await?;
    ensure!(seen.len() == 1, "with ClientIP affinity {REQUESTS} requests reached {seen:?}");

    // The node port on the node's address.
    let node = node_ip(&skiff).await?;
    let np = get_json(&skiff, &["service", "np"]).await?;
    let node_port = np["spec"]["ports"][0]["nodePort"].as_u64().context("no nodePort")?;
    let np_url = format!("http://{node}:{node_port}");
    answering(&skiff, &netns, &np_url).await?;
    ensure!(spread(&netns, &np_url).await?.len() == 3, "the node port should reach every pod");

    // The load balancer: its port on the node's address, and the node in its status.
    let ingress = wait_until("status.loadBalancer.ingress", POD_TIMEOUT, POLL, || async {
        let lb = get_json(&skiff, &["service", "lb"]).await?;
        Ok(lb["status"]["loadBalancer"]["ingress"].as_array().filter(|i| !i.is_empty()).cloned())
    })
    .await?;
    ensure!(ingress == [serde_json::json!({"ip": node})], "ingress {ingress:?}, node {node}");
    let lb_url = format!("http://{node}:8090");
    answering(&skiff, &netns, &lb_url).await?;
    let (code, body, _) = curl(&netns, &format!("{lb_url}/env/POD_NAME")).await?;
    ensure!(code == 0 && body.starts_with("web-"), "{lb_url}: exit {code}, {body:?}");

    // A selector-less Service with manual Endpoints (one web pod's address): its slice is
    // mirrored, so the proxy serves it too, and only that pod answers.
    let chosen = ready_endpoints(&skiff, "web").await?.first().cloned().context("a web endpoint")?;
    skiff
        .apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: manual}}\nspec:\n  ports: [{{name: http, port: 80}}]\n\
             ---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: manual}}\nsubsets:\n\
             - addresses: [{{ip: \"{chosen}\"}}]\n  ports: [{{name: http, port: 8080}}]\n"
        ))
        .await?;
    let manual = format!("http://{}", cluster_ip(&skiff, "manual").await?);
    answering(&skiff, &netns, &manual).await?;
    let seen = spread(&netns, &manual).await?;
    ensure!(seen.len() == 1 && seen.keys().all(|p| p.starts_with("web-")), "manual endpoints reached {seen:?}");

    // A fourth pod, ready while its flag file exists, gets its share; once the probe fails it
    // leaves the endpoints and gets nothing more.
    skiff.apply(&flip_pod(&image, flag_dir.path().to_str().context("flag dir")?)).await?;
    wait_until("the flip pod to get connections", POD_TIMEOUT, POLL, || async {
        let (_, body, _) = curl(&netns, &format!("{web}/env/POD_NAME")).await?;
        Ok((body == "flip").then_some(()))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))?;
    std::fs::remove_file(&flag)?;
    wait_until("the flip pod to leave the ready endpoints", POD_TIMEOUT, POLL, || async {
        Ok((ready_endpoints(&skiff, "web").await?.len() == 3).then_some(()))
    })
    .await?;
    // The proxy follows the slice: give it a moment, bounded, then no request may reach flip.
    wait_until("the proxy to drop the flip pod", Duration::from_secs(10), POLL, || async {
        let seen = spread(&netns, &web).await?;
        Ok((!seen.contains_key("flip")).then_some(()))
    })
    .await?;
    let seen = spread(&netns, &web).await?;
    ensure!(!seen.contains_key("flip") && seen.len() == 3, "an unready pod got requests: {seen:?}");

    // No ready backend, or no Service any more: refused at once, never a hang.
    refused(&netns, &format!("http://{}/", cluster_ip(&skiff, "empty").await?)).await?;
    let sticky_ip = cluster_ip(&skiff, "sticky").await?;
    skiff.kubectl(&["delete", "service", "sticky"]).await?.ok()?;
    wait_until("the deleted Service's address to refuse", Duration::from_secs(10), POLL, || async {
        let (code, _, _) = curl(&netns, &format!("http://{sticky_ip}/")).await?;
        Ok((code == 7).then_some(()))
    })
    .await?;
    refused(&netns, &format!("http://{sticky_ip}/")).await?;

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_pod_reaches_a_cluster_ip() -> Result<()> {
    let netns = NetNs::create()?;
    let scripts = tempfile::Builder::new().prefix("skiff-proxy-e2e-").tempdir()?;
    let options = oci_start_options(&netns, scripts.path())?;
    let mut skiff = Skiff::start_with(options).await?;
    let _leftovers = OciLeftovers::new(skiff.data_dir());
    let busybox = skiff_tests::oci_image::push_busybox(&skiff, "busybox", "v1").await?;
    let image = push_guest(&skiff, "http-probe", "proxy/http-probe:v1").await?;
    skiff.apply(&deployment(&image)).await?;
    skiff.apply(&service("web", "web", 80, "")).await?;
    skiff
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: shell}}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
             containers:\n  - name: shell\n    image: {busybox}\n    command: [sleep, \"3600\"]\n"
        ))
        .await?;
    let ip = cluster_ip(&skiff, "web").await?;
    let url = format!("http://{ip}/env/POD_NAME");
    let last = std::sync::Mutex::new(String::new());
    let body = wait_until("busybox to reach the cluster IP", POD_TIMEOUT, POLL, || async {
        // No `-T`: busybox 1.35's static wget crashes with it; `timeout` bounds it instead.
        let out = skiff.kubectl(&["exec", "shell", "--", "timeout", "10", "wget", "-qO-", &url]).await?;
        *last.lock().unwrap_or_else(|p| p.into_inner()) = out.stderr.clone();
        Ok(out.success.then_some(out.stdout))
    })
    .await
    .with_context(|| {
        let last = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        format!("last wget error: {last}\nskiff log tail:\n{}", skiff.log_tail(40))
    })?;
    if !body.starts_with("web-") {
        bail!("{url} from busybox answered {body:?}");
    }
    skiff.kubectl(&["delete", "pod", "shell", "--timeout=60s"]).await?.ok()?;
    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}
