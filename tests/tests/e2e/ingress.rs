//! Ingress for real (issue 6): `skiff up --pod-network bridge` inside a network namespace this
//! test creates; the node serves Ingresses on ports 80 and 443 of every address there, and
//! real `curl` (HTTP/1.1 and HTTP/2 over TLS) talks to it from inside the namespace.
//!
//! Two Services over two http-probe WASM pods told apart by an env var; one Ingress routing
//! two hosts and two paths to them (port by number and by name), TLS from a
//! `kubernetes.io/tls` Secret made with openssl here. Checked: routing and precedence, SNI
//! with the Secret's certificate (and its replacement picked up without a restart),
//! `X-Forwarded-*` as the backend saw them, 404 without a rule, 503 and a Warning Event for a
//! missing Service, the default self-signed certificate and a Warning Event for a missing
//! Secret, the `skiff` IngressClass, and `status.loadBalancer` = the node's InternalIP.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::{NetNs, Skiff, StartOptions, StoreKind, wait_until};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, pod_is_ready, push_guest};

const ALPHA: &str = "alpha.example.test";
const BETA: &str = "beta.example.test";
/// A TLS host whose Secret does not exist: it gets the default certificate.
const GAMMA: &str = "gamma.example.test";

fn backend(name: &str, image: &str, port_name: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  containers:
  - name: app
    image: {image}
    env: [{{name: BACKEND, value: {name}}}]
    ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports: [{{name: {port_name}, port: {port}, targetPort: 8080}}]
"#
    )
}

/// `alpha`: `/` → alpha (port 80 by number), `/env` → beta (port `web` by name), `/missing`
/// → a Service that does not exist; `beta`: `/` → beta. TLS for alpha and beta from `web-tls`,
/// gamma from a Secret that does not exist.
const INGRESS: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
spec:
  tls:
  - hosts: [alpha.example.test, beta.example.test]
    secretName: web-tls
  - hosts: [gamma.example.test]
    secretName: absent-tls
  rules:
  - host: alpha.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 80}}}}
      - {path: /env, pathType: Prefix, backend: {service: {name: beta, port: {name: web}}}}
      - {path: /missing, pathType: Exact, backend: {service: {name: nope, port: {number: 80}}}}
  - host: beta.example.test
    http:
      paths:
      - {path: /, pathType: ImplementationSpecific, backend: {service: {name: beta, port: {name: web}}}}
"#;

/// A self-signed certificate for alpha and beta in `dir` (`<name>.crt`, `<name>.key`).
async fn make_cert(dir: &Path, name: &str) -> Result<()> {
    let out = tokio::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={name}"), "-addext", &format!("subjectAltName=DNS:{ALPHA},DNS:{BETA}")])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")))
        .output()
        .await
        .context("running openssl")?;
    ensure!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// `kubectl create secret tls web-tls` from `<name>.crt/.key` (replacing it if present).
async fn apply_secret(skiff: &Skiff, dir: &Path, name: &str) -> Result<()> {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let yaml = skiff
        .kubectl(&[
            "create",
            "secret",
            "tls",
            "web-tls",
            &format!("--cert={}", crt.display()),
            &format!("--key={}", key.display()),
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .await?
        .ok()?;
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&yaml)).await?.ok()?;
    Ok(())
}

/// curl inside the namespace, `host` resolved to the node; `(status, body)`.
async fn curl(netns: &NetNs, scheme: &str, host: &str, path: &str, extra: &[&str]) -> Result<(u16, String)> {
    let port = if scheme == "https" { 443 } else { 80 };
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("{scheme}://{host}{path}");
    let mut args = vec!["-sS", "-m", "10", "--resolve", resolve.as_str(), "-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url.as_str());
    let out = netns.run("curl", &args).await?;
    let (body, code) = out.rsplit_once('\n').context("curl output has no status line")?;
    Ok((code.trim().parse().with_context(|| format!("status {code:?}"))?, body.to_string()))
}

/// Waits until `GET path` on `host` answers 200 with `want`.
async fn wait_body(
    netns: &NetNs,
    skiff: &Skiff,
    scheme: &str,
    host: &str,
    path: &str,
    extra: &[&str],
    want: &str,
) -> Result<()> {
    let last = std::sync::Mutex::new(String::new());
    wait_until(&format!("{scheme}://{host}{path} to answer {want:?}"), POD_TIMEOUT, POLL, || async {
        let got = curl(netns, scheme, host, path, extra).await;
        let ok = matches!(&got, Ok((200, body)) if body == want);
        *last.lock().unwrap_or_else(|p| p.into_inner()) = format!("{got:?}");
        Ok(ok.then_some(()))
    })
    .await
    .with_context(|| {
        format!(
            "last answer: {}\nskiff log tail:\n{}",
            last.lock().unwrap_or_else(|p| p.into_inner()),
            skiff.log_tail(30)
        )
    })
}

/// The Warning Events about Ingress `web`: `(reason, message)`.
async fn ingress_warnings(skiff: &Skiff) -> Result<Vec<(String, String)>> {
    let events = get_json(skiff, &["events"]).await?;
    Ok(events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["kind"] == "Ingress" && e["involvedObject"]["name"] == "web")
        .filter(|e| e["type"] == "Warning")
        .map(|e| (e["reason"].as_str().unwrap_or_default().into(), e["message"].as_str().unwrap_or_default().into()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_routes_hosts_and_paths_over_http_and_https() -> Result<()> {
    let netns = NetNs::create()?;
    let certs = tempfile::Builder::new().prefix("skiff-ingress-e2e-").tempdir()?;
    make_cert(certs.path(), "first").await?;
    make_cert(certs.path(), "second").await?;
    let mut options = StartOptions::new(StoreKind::Embedded);
    options.netns = Some(netns.name().to_string());
    options.extra_args = ["--pod-network", "bridge", "--runtimes", "wasm"].map(String::from).to_vec();
    let mut skiff = Skiff::start_with(options).await?;

    let class = get_json(&skiff, &["ingressclass", "skiff"]).await?;
    ensure!(class["spec"]["controller"] == "skiff.dev/ingress", "IngressClass skiff: {class}");
    ensure!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true",
        "IngressClass skiff is the default: {class}"
    );

    let image = push_guest(&skiff, "http-probe", "probes/http:v1").await?;
    skiff.apply(&backend("alpha", &image, "http", 80)).await?;
    skiff.apply(&backend("beta", &image, "web", 8080)).await?;
    apply_secret(&skiff, certs.path(), "first").await?;
    skiff.apply(INGRESS).await?;
    for pod in ["alpha", "beta"] {
        wait_until(&format!("pod {pod} to be Ready"), POD_TIMEOUT, POLL, || async {
            Ok(pod_is_ready(&get_json(&skiff, &["pod", pod]).await?).then_some(()))
        })
        .await
        .with_context(|| skiff.log_tail(30))?;
    }

    // HTTP: hosts and paths, longest prefix first, port by number and by name.
    wait_body(&netns, &skiff, "http", ALPHA, "/env/BACKEND", &[], "beta").await?;
    ensure!(curl(&netns, "http", ALPHA, "/", &[]).await? == (200, "ok".into()), "alpha /");
    ensure!(curl(&netns, "http", BETA, "/env/BACKEND", &[]).await? == (200, "beta".into()), "beta /env/BACKEND");
    let (status, _) = curl(&netns, "http", "other.example.test", "/", &[]).await?;
    ensure!(status == 404, "a host without a rule answered {status}");

    // Missing Service: 503 and a Warning Event on the Ingress.
    let (status, body) = curl(&netns, "http", ALPHA, "/missing", &[]).await?;
    ensure!(status == 503 && body.contains("nope"), "missing service: {status} {body:?}");
    let warnings = wait_until("the Ingress's warning events", POD_TIMEOUT, POLL, || async {
        let w = ingress_warnings(&skiff).await?;
        let both = w.iter().any(|(r, m)| r == "ServiceNotFound" && m.contains("nope"))
            && w.iter().any(|(r, m)| r == "InvalidTLSSecret" && m.contains("absent-tls"));
        Ok(both.then_some(w))
    })
    .await?;
    ensure!(warnings.len() >= 2, "{warnings:?}");

    // HTTPS with the Secret's certificate (verified against it), HTTP/1.1 and HTTP/2.
    let ca_first = certs.path().join("first.crt");
    let ca_first = ca_first.to_str().context("cert path")?;
    wait_body(&netns, &skiff, "https", ALPHA, "/", &["--cacert", ca_first], "ok").await?;
    let (status, body) = curl(&netns, "https", BETA, "/env/BACKEND", &["--cacert", ca_first, "--http2"]).await?;
    ensure!((status, body.as_str()) == (200, "beta"), "beta over h2: {status} {body:?}");
    let (resolve, url) = (format!("{ALPHA}:443:127.0.0.1"), format!("https://{ALPHA}/"));
    let version = netns
        .run(
            "curl",
            &[
                "-sS",
                "-m",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version}",
                "--http2",
                "--cacert",
                ca_first,
                "--resolve",
                resolve.as_str(),
                url.as_str(),
            ],
        )
        .await?;
    ensure!(version == "2", "ALPN should pick h2, curl spoke HTTP/{version}");

    // What the backend saw.
    let (_, headers) = curl(&netns, "https", ALPHA, "/headers", &["--cacert", ca_first]).await?;
    let forwarded_host = format!("x-forwarded-host: {ALPHA}");
    for line in
        ["x-forwarded-for: 127.0.0.1", "x-forwarded-proto: https", forwarded_host.as_str(), "x-forwarded-port: 443"]
    {
        ensure!(headers.lines().any(|l| l == line), "backend headers lack {line:?}:\n{headers}");
    }
    let (_, headers) = curl(&netns, "http", ALPHA, "/headers", &["-H", "X-Forwarded-For: 192.0.2.7"]).await?;
    ensure!(
        headers.lines().any(|l| l == "x-forwarded-for: 192.0.2.7, 127.0.0.1"),
        "X-Forwarded-For should chain:\n{headers}"
    );

    // A host whose Secret is missing gets the default (self-signed) certificate.
    let untrusted = curl(&netns, "https", GAMMA, "/", &["--cacert", ca_first]).await;
    ensure!(untrusted.is_err(), "gamma must not present web-tls's certificate: {untrusted:?}");
    let (status, _) = curl(&netns, "https", GAMMA, "/", &["-k"]).await?;
    ensure!(status == 404, "gamma has TLS but no rule: {status}");

    // A replaced Secret is served without a restart.
    apply_secret(&skiff, certs.path(), "second").await?;
    let ca_second = certs.path().join("second.crt");
    wait_body(&netns, &skiff, "https", BETA, "/", &["--cacert", ca_second.to_str().context("cert path")?], "ok")
        .await?;

    // status.loadBalancer: the node's InternalIP.
    let lb = wait_until("status.loadBalancer of the Ingress", POD_TIMEOUT, POLL, || async {
        let ing = get_json(&skiff, &["ingress", "web"]).await?;
        let lb = ing["status"]["loadBalancer"]["ingress"].clone();
        Ok((!lb.is_null()).then_some(lb))
    })
    .await?;
    let node = get_json(&skiff, &["nodes"]).await?;
    let internal: Vec<Value> = node["items"][0]["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "InternalIP")
        .map(|a| serde_json::json!({"ip": a["address"]}))
        .collect();
    ensure!(lb == Value::Array(internal), "loadBalancer {lb} vs the node's InternalIPs {node}");

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}
