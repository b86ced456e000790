//! Scale-to-zero for WASM HTTP Deployments (issue 6), for real: `skiff up --pod-network bridge`
//! inside a network namespace this test creates, curl and ss inside it, kubectl outside.
//!
//! A hello-http Deployment annotated `skiff.dev/scale-to-zero: "true"` with a short idle period
//! and `replicas: 0`, behind a ClusterIP Service: the Service's address listens with no pod;
//! the first curl is held, the Deployment goes to one replica (`ScaledFromZero`), and the
//! curl gets 200 and the greeting. Idle for the period, it goes back to zero (`ScaledToZero`),
//! and the next curl wakes it again. An unannotated Deployment at zero behind a Service is
//! still refused at once (curl exit 7); a bad annotation gets a Warning event naming it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::{NetNs, Skiff, StartOptions, StoreKind, wait_until};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, push_guest};

fn deployment(name: &str, image: &str, annotations: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations: {{{annotations}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: hello
        image: {image}
        ports: [{{name: http, containerPort: 8080}}]
"#
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  \
         ports: [{{port: 80, targetPort: http}}]\n"
    )
}

/// curl's exit code, the HTTP status and body of GET `url` from inside the namespace, and how
/// long it took.
async fn curl(netns: &NetNs, url: &str) -> Result<(i32, String, String, Duration)> {
    let started = Instant::now();
    let out = netns
        .command("curl")
        .args(["-sS", "-m", "45", "-w", "\n%{http_code}", url])
        .output()
        .await
        .context("running curl")?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Ok((out.status.code().unwrap_or(-1), status.to_string(), body.to_string(), took))
}

async fn cluster_ip(skiff: &Skiff, name: &str) -> Result<String> {
    let svc = get_json(skiff, &["service", name]).await?;
    Ok(svc["spec"]["clusterIP"].as_str().context("no clusterIP")?.to_string())
}

async fn replicas(skiff: &Skiff, name: &str) -> Result<i64> {
    let d = get_json(skiff, &["deployment", name]).await?;
    d["spec"]["replicas"].as_i64().context("no spec.replicas")
}

/// How many times an event with `reason` happened to Deployment `name` (repeats are folded
/// into one Event's `count`).
async fn times(skiff: &Skiff, name: &str, reason: &str) -> Result<usize> {
    let found = events(skiff, name, reason).await?;
    Ok(found.iter().map(|e| e["count"].as_u64().unwrap_or(1)).sum::<u64>().try_into()?)
}

/// Events about Deployment `name` with `reason`.
async fn events(skiff: &Skiff, name: &str, reason: &str) -> Result<Vec<Value>> {
    let list = get_json(skiff, &["events"]).await?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == reason && e["involvedObject"]["name"] == name)
        .filter(|e| e["involvedObject"]["kind"] == "Deployment")
        .cloned()
        .collect())
}

/// Waits until something listens on `ip:80` inside the namespace.
async fn listening(netns: &NetNs, ip: &str) -> Result<()> {
    wait_until(&format!("a listener on {ip}:80"), POD_TIMEOUT, POLL, || async {
        let out = netns.command("ss").args(["-Hltn"]).output().await.context("running ss")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(text.lines().any(|l| l.split_whitespace().any(|col| col == format!("{ip}:80"))).then_some(()))
    })
    .await
}

/// Pods of Deployment `name`.
async fn pods(skiff: &Skiff, name: &str) -> Result<usize> {
    let list = get_json(skiff, &["pods", "-l", &format!("app={name}")]).await?;
    Ok(list["items"].as_array().map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_from_zero_answers_the_first_request_and_idle_scales_back_to_zero() -> Result<()> {
    let netns = NetNs::create()?;
    let mut options = StartOptions::new(StoreKind::Embedded);
    options.netns = Some(netns.name().to_string());
    options.extra_args = vec!["--pod-network".into(), "bridge".into()];
    let mut skiff = Skiff::start_with(options).await?;
    let image = push_guest(&skiff, "hello-http", "zero/hello-http:v1").await?;

    let on = r#"skiff.dev/scale-to-zero: "true", skiff.dev/scale-to-zero-idle: "4s""#;
    skiff.apply(&deployment("fn", &image, on)).await?;
    skiff.apply(&service("fn")).await?;
    skiff.apply(&deployment("plain", &image, "")).await?;
    skiff.apply(&service("plain")).await?;
    skiff.apply(&deployment("bad", &image, r#"skiff.dev/scale-to-zero: "sometimes""#)).await?;

    // With no pod at all, the annotated Service's address listens; the plain one refuses.
    let fn_ip = cluster_ip(&skiff, "fn").await?;
    listening(&netns, &fn_ip).await.with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))?;
    ensure!(pods(&skiff, "fn").await? == 0 && replicas(&skiff, "fn").await? == 0, "fn should start at zero");
    let plain_ip = cluster_ip(&skiff, "plain").await?;
    let (code, _, _, took) = curl(&netns, &format!("http://{plain_ip}/")).await?;
    ensure!(code == 7, "an unannotated Service with no backend: curl exit {code}, want 7 (refused)");
    ensure!(took < Duration::from_secs(2), "refusing took {took:?}");

    for round in 1..=2 {
        // The first request is held, the Deployment scaled to one, and the request answered.
        let (code, status, body, took) = curl(&netns, &format!("http://{fn_ip}/first")).await?;
        ensure!(
            code == 0 && status == "200" && body.trim_end() == "Hello from Skiff: /first",
            "round {round}: curl exit {code}, status {status}, body {body:?}\nskiff log tail:\n{}",
            skiff.log_tail(40)
        );
        ensure!(took < Duration::from_secs(30), "round {round}: scale-from-zero took {took:?}");
        eprintln!("round {round}: first request answered in {took:?}");
        ensure!(replicas(&skiff, "fn").await? == 1, "round {round}: fn should have one replica now");
        wait_until("a ScaledFromZero event", POD_TIMEOUT, POLL, || async {
            Ok((times(&skiff, "fn", "ScaledFromZero").await? >= round).then_some(()))
        })
        .await?;

        // Idle for 4s: back to zero replicas and no pod.
        wait_until("fn to be scaled back to zero", POD_TIMEOUT, POLL, || async {
            Ok((replicas(&skiff, "fn").await? == 0).then_some(()))
        })
        .await
        .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))?;
        wait_until("fn's pod to go", POD_TIMEOUT, POLL, || async {
            Ok((pods(&skiff, "fn").await? == 0).then_some(()))
        })
        .await?;
        ensure!(times(&skiff, "fn", "ScaledToZero").await? >= round, "round {round}: no ScaledToZero event");
        listening(&netns, &fn_ip).await?;
    }

    // A bad annotation: a Warning naming it, and the feature off (the plain Service behaviour).
    let warning = wait_until("an InvalidScaleToZero warning", POD_TIMEOUT, POLL, || async {
        Ok(events(&skiff, "bad", "InvalidScaleToZero").await?.into_iter().next())
    })
    .await?;
    ensure!(warning["type"] == "Warning", "{warning}");
    let message = warning["message"].as_str().unwrap_or_default();
    ensure!(message.contains("skiff.dev/scale-to-zero") && message.contains("sometimes"), "{message}");
    ensure!(replicas(&skiff, "bad").await? == 0 && replicas(&skiff, "plain").await? == 0);

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}
