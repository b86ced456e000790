//! `kubectl apply` of a multi-document app, re-apply of a changed version, the `get` output
//! formats and selectors, `get -w`, and `describe`.

use anyhow::{Context, Result, ensure};
use skiff_tests::{Skiff, StoreKind, both_stores};

use crate::{EVENT_TIMEOUT, get_json, item_names, write_manifest};

const APP_V1: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
  labels: {app: web}
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.example/web:1
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"#;

/// Apply, then apply a changed version and check the change landed.
async fn apply_and_update(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    let v1 = write_manifest(&skiff, "app-v1.yaml", APP_V1)?;
    let v1 = v1.to_str().context("utf-8 path")?;
    let out = skiff.kubectl(&["apply", "-f", v1]).await?.ok()?;
    for created in
        ["namespace/shop created", "configmap/web-config created", "deployment.apps/web created", "service/web created"]
    {
        ensure!(out.contains(created), "missing {created:?} in:\n{out}");
    }

    let changed = APP_V1.replace("greeting: hello", "greeting: hi").replace("replicas: 2", "replicas: 3");
    let v2 = write_manifest(&skiff, "app-v2.yaml", &changed)?;
    let out = skiff.kubectl(&["apply", "-f", v2.to_str().context("utf-8 path")?]).await?.ok()?;
    ensure!(out.contains("configmap/web-config configured"), "{out}");
    ensure!(out.contains("deployment.apps/web configured"), "{out}");
    ensure!(out.contains("service/web unchanged"), "{out}");

    let cm = get_json(&skiff, &["cm", "web-config", "-n", "shop"]).await?;
    ensure!(cm["data"]["greeting"] == "hi", "configmap not updated: {cm}");
    let deploy = get_json(&skiff, &["deployment", "web", "-n", "shop"]).await?;
    ensure!(deploy["spec"]["replicas"] == 3, "deployment not updated: {deploy}");
    Ok(())
}

/// `get` in every output format, with a label selector and across namespaces.
async fn get_formats(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(APP_V1)).await?.ok()?;

    let wide = skiff.kubectl(&["get", "deploy", "-n", "shop", "-o", "wide"]).await?.ok()?;
    ensure!(wide.contains("NAME") && wide.contains("web"), "{wide}");
    let wide = skiff.kubectl(&["get", "svc", "-n", "shop", "-o", "wide"]).await?.ok()?;
    ensure!(wide.contains("web") && wide.contains("80"), "{wide}");

    let yaml = skiff.kubectl(&["get", "cm", "web-config", "-n", "shop", "-o", "yaml"]).await?.ok()?;
    ensure!(yaml.contains("greeting: hello") && yaml.contains("kind: ConfigMap"), "{yaml}");

    let json = get_json(&skiff, &["cm", "web-config", "-n", "shop"]).await?;
    ensure!(json["metadata"]["resourceVersion"].is_string(), "{json}");
    ensure!(json["metadata"]["uid"].is_string(), "{json}");

    let selected = get_json(&skiff, &["cm", "-n", "shop", "-l", "app=web"]).await?;
    ensure!(item_names(&selected) == ["web-config"], "{selected}");
    let none = get_json(&skiff, &["cm", "-n", "shop", "-l", "app=other"]).await?;
    ensure!(item_names(&none).is_empty(), "{none}");

    let all = skiff.kubectl(&["get", "deployments", "-A"]).await?.ok()?;
    ensure!(all.contains("NAMESPACE") && all.contains("shop") && all.contains("web"), "{all}");
    let all = get_json(&skiff, &["services", "-A"]).await?;
    ensure!(item_names(&all).contains(&"web".to_string()), "{all}");

    let namespaces = get_json(&skiff, &["ns"]).await?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease", "shop"] {
        ensure!(item_names(&namespaces).iter().any(|n| n == ns), "no {ns}: {namespaces}");
    }
    Ok(())
}

/// `kubectl get -w` prints a line when the object changes; `describe` shows the object.
async fn watch_and_describe(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(APP_V1)).await?.ok()?;

    let mut watch = skiff.kubectl_spawn(&["get", "cm", "web-config", "-n", "shop", "-w"])?;
    watch.wait_for_line(EVENT_TIMEOUT, |line| line.starts_with("web-config")).await.context("initial watch line")?;
    skiff
        .kubectl(&["patch", "cm", "web-config", "-n", "shop", "--type=merge", "-p", r#"{"data":{"extra":"1"}}"#])
        .await?
        .ok()?;
    // The DATA column goes from 1 to 2 keys.
    watch
        .wait_for_line(EVENT_TIMEOUT, |line| {
            let mut cols = line.split_whitespace();
            cols.next() == Some("web-config") && cols.next() == Some("2")
        })
        .await
        .context("watch line after the change")?;

    let described = skiff.kubectl(&["describe", "deployment", "web", "-n", "shop"]).await?.ok()?;
    ensure!(described.contains("Name:") && described.contains("web"), "{described}");
    ensure!(described.contains("Replicas:"), "{described}");
    ensure!(described.contains("registry.example/web:1"), "{described}");
    let described = skiff.kubectl(&["describe", "cm", "web-config", "-n", "shop"]).await?.ok()?;
    ensure!(described.contains("greeting") && described.contains("hello"), "{described}");
    Ok(())
}

both_stores!(apply_and_update, get_formats, watch_and_describe);
