//! WASM guests resolve cluster names (issue 6): `skiff up --pod-network bridge` inside a
//! network namespace this test creates (cluster IPs never touch the machine's network). A
//! hello-http Deployment behind Service `hello`, and a dns-probe WASM pod whose guest answers
//! `/resolve?name=N` from `wasi:sockets/ip-name-lookup` and `/fetch?url=U` with an outgoing
//! `wasi:http` GET; curl asks it from inside the namespace.
//!
//! The guest resolves `hello.default.svc.cluster.local`, `hello.default` and the short `hello`
//! (its namespace's search path) to the ClusterIP; a missing cluster name fails with
//! `name-unresolvable` (and the pod keeps serving); `http://hello/` answers hello-http's
//! greeting through the Service. A second pod in another namespace does not see `hello` as a
//! short name but does as `hello.default`; one with `dnsPolicy: Default` gets no cluster names.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use skiff_tests::{NetNs, Skiff, StartOptions, StoreKind, wait_until};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, pod_is_ready, push_guest};

fn hello(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: hello}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: hello}}}}
  template:
    metadata: {{labels: {{app: hello}}}}
    spec:
      containers:
      - name: app
        image: {image}
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: hello}}
spec:
  selector: {{app: hello}}
  ports: [{{port: 80, targetPort: http}}]
"#
    )
}

fn probe(name: &str, namespace: &str, image: &str, dns_policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  \
         dnsPolicy: {dns_policy}\n  containers:\n  - name: app\n    image: {image}\n    \
         ports: [{{containerPort: 8080}}]\n"
    )
}

/// The curl exit code, HTTP status and body of GET `url` from inside the namespace.
async fn curl(netns: &NetNs, url: &str) -> Result<(i32, String, String)> {
    let out = netns
        .command("curl")
        .args(["-sS", "-m", "40", "-w", "\n%{http_code}", url])
        .output()
        .await
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or((text.as_str(), ""));
    Ok((out.status.code().unwrap_or(-1), status.to_owned(), body.to_owned()))
}

/// The pod IP of a Ready pod `name` in `namespace`.
async fn ready_pod_ip(skiff: &Skiff, namespace: &str, name: &str) -> Result<String> {
    wait_until(&format!("pod {namespace}/{name} to be ready"), POD_TIMEOUT, POLL, || async {
        let pod = get_json(skiff, &["pod", name, "-n", namespace]).await?;
        Ok(pod_is_ready(&pod).then(|| pod["status"]["podIP"].as_str().map(str::to_owned)).flatten())
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))
}

/// `/resolve?name=NAME` of the guest at `base`: (HTTP status, body).
async fn resolve(netns: &NetNs, base: &str, name: &str) -> Result<(String, String)> {
    let (code, status, body) = curl(netns, &format!("{base}/resolve?name={name}")).await?;
    ensure!(code == 0, "GET {base}/resolve?name={name}: curl exit {code}");
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_guests_resolve_and_fetch_cluster_names() -> Result<()> {
    let netns = NetNs::create()?;
    let mut options = StartOptions::new(StoreKind::Embedded);
    options.netns = Some(netns.name().to_string());
    options.extra_args = vec!["--pod-network".into(), "bridge".into()];
    let skiff = Skiff::start_with(options).await?;

    let hello_image = push_guest(&skiff, "hello-http", "guestdns/hello-http:v1").await?;
    let probe_image = push_guest(&skiff, "dns-probe", "guestdns/dns-probe:v1").await?;
    skiff.apply(&hello(&hello_image)).await?;
    skiff.kubectl(&["create", "namespace", "other"]).await?;
    skiff.apply(&probe("probe", "default", &probe_image, "ClusterFirst")).await?;
    skiff.apply(&probe("elsewhere", "other", &probe_image, "ClusterFirst")).await?;
    skiff.apply(&probe("hostdns", "default", &probe_image, "Default")).await?;

    let svc = get_json(&skiff, &["service", "hello"]).await?;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().context("no clusterIP")?.to_owned();
    let base = format!("http://{}:8080", ready_pod_ip(&skiff, "default", "probe").await?);

    // The full name, the namespace-relative one and the short one: all the ClusterIP.
    let full = "hello.default.svc.cluster.local";
    let answer = wait_until("the guest to resolve the Service", Duration::from_secs(30), POLL, || async {
        let (status, body) = resolve(&netns, &base, full).await?;
        Ok((status == "200").then_some(body))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))?;
    ensure!(answer.trim() == cluster_ip, "{full} resolved to {answer:?}, not the ClusterIP {cluster_ip}");
    for name in ["hello", "hello.default", "HELLO.default.svc.cluster.local."] {
        let (status, body) = resolve(&netns, &base, name).await?;
        ensure!(status == "200" && body.trim() == cluster_ip, "{name}: {status} {body:?}, not {cluster_ip}");
    }

    // A cluster name that does not exist: a clear lookup error, and the guest serves on.
    let (status, body) = resolve(&netns, &base, "nothere.default.svc.cluster.local").await?;
    ensure!(status == "500" && body.contains("name-unresolvable"), "missing name: {status} {body:?}");
    let (status, body) = resolve(&netns, &base, "hello").await?;
    ensure!(status == "200" && body.trim() == cluster_ip, "after a failed lookup: {status} {body:?}");

    // Outgoing wasi:http to the short name: hello-http's greeting through the Service.
    let fetched = wait_until("the guest to fetch http://hello/", POD_TIMEOUT, POLL, || async {
        let (code, status, body) = curl(&netns, &format!("{base}/fetch?url=http://hello/from-guest")).await?;
        Ok((code == 0 && status == "200" && body.starts_with("200\n")).then_some(body))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))?;
    ensure!(fetched.contains("Hello from Skiff: /from-guest"), "fetch through the Service answered {fetched:?}");
    let (_, status, body) =
        curl(&netns, &format!("{base}/fetch?url=http://nothere.default.svc.cluster.local/")).await?;
    ensure!(status == "502" && body.to_lowercase().contains("dns"), "fetching a missing name: {status} {body:?}");

    // Another namespace: `hello` alone is not its Service; `hello.default` is.
    let other = format!("http://{}:8080", ready_pod_ip(&skiff, "other", "elsewhere").await?);
    let (status, body) = resolve(&netns, &other, "hello.default").await?;
    ensure!(status == "200" && body.trim() == cluster_ip, "hello.default from namespace other: {status} {body:?}");
    let (status, body) = resolve(&netns, &other, "hello.svc.cluster.local").await?;
    ensure!(status == "500" && body.contains("name-unresolvable"), "a namespace-less name: {status} {body:?}");

    // dnsPolicy: Default: the host's resolver, which knows nothing of the cluster.
    let host = format!("http://{}:8080", ready_pod_ip(&skiff, "default", "hostdns").await?);
    // (Whatever the host's resolver says — an error, or a timeout where its nameservers are
    // unreachable from the namespace — it is not the ClusterIP.)
    let (status, body) = resolve(&netns, &host, full).await?;
    ensure!(status != "200" && !body.contains(&cluster_ip), "dnsPolicy Default resolved {full}: {status} {body:?}");
    Ok(())
}
