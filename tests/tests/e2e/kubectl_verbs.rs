//! Imperative kubectl verbs: create, label, annotate, scale, patch (three types), delete.

use anyhow::{Result, ensure};
use skiff_tests::{Skiff, StoreKind, both_stores};

use crate::get_json;

async fn create_verbs(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    let out = skiff.kubectl(&["create", "namespace", "verbs"]).await?.ok()?;
    ensure!(out.contains("namespace/verbs created"), "{out}");

    skiff
        .kubectl(&["create", "configmap", "settings", "-n", "verbs", "--from-literal=a=1", "--from-literal=b=2"])
        .await?
        .ok()?;
    let cm = get_json(&skiff, &["cm", "settings", "-n", "verbs"]).await?;
    ensure!(cm["data"]["a"] == "1" && cm["data"]["b"] == "2", "{cm}");

    skiff
        .kubectl(&["create", "secret", "generic", "creds", "-n", "verbs", "--from-literal=password=hunter2"])
        .await?
        .ok()?;
    let secret = get_json(&skiff, &["secret", "creds", "-n", "verbs"]).await?;
    ensure!(secret["data"]["password"] == "aHVudGVyMg==", "{secret}");
    ensure!(secret["type"] == "Opaque", "{secret}");

    skiff.kubectl(&["create", "deployment", "web", "-n", "verbs", "--image=registry.example/web:1"]).await?.ok()?;
    let deploy = get_json(&skiff, &["deployment", "web", "-n", "verbs"]).await?;
    ensure!(deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:1", "{deploy}");
    Ok(())
}

async fn modify_verbs(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    skiff
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n---\n\
                 apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  \
                 selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    \
                 spec:\n      containers:\n      - name: web\n        image: registry.example/web:1\n",
            ),
        )
        .await?
        .ok()?;

    skiff.kubectl(&["label", "cm", "settings", "tier=backend"]).await?.ok()?;
    let names = skiff.kubectl(&["get", "cm", "-l", "tier=backend", "-o", "name"]).await?.ok()?;
    ensure!(names.trim() == "configmap/settings", "{names}");

    skiff.kubectl(&["annotate", "cm", "settings", "owner=team-a"]).await?.ok()?;
    let cm = get_json(&skiff, &["cm", "settings"]).await?;
    ensure!(cm["metadata"]["annotations"]["owner"] == "team-a", "{cm}");

    let out = skiff.kubectl(&["scale", "deployment", "web", "--replicas=3"]).await?.ok()?;
    ensure!(out.contains("scaled"), "{out}");
    let deploy = get_json(&skiff, &["deployment", "web"]).await?;
    ensure!(deploy["spec"]["replicas"] == 3, "{deploy}");

    skiff.kubectl(&["patch", "cm", "settings", "--type=merge", "-p", r#"{"data":{"c":"3"}}"#]).await?.ok()?;
    skiff
        .kubectl(&["patch", "cm", "settings", "--type=json", "-p", r#"[{"op":"remove","path":"/data/a"}]"#])
        .await?
        .ok()?;
    let cm = get_json(&skiff, &["cm", "settings"]).await?;
    ensure!(cm["data"]["c"] == "3" && cm["data"].get("a").is_none(), "{cm}");

    // Strategic merge: the container list merges by name, so the image changes in place.
    skiff
        .kubectl(&[
            "patch",
            "deployment",
            "web",
            "--type=strategic",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"registry.example/web:2"}]}}}}"#,
        ])
        .await?
        .ok()?;
    let deploy = get_json(&skiff, &["deployment", "web"]).await?;
    let containers = &deploy["spec"]["template"]["spec"]["containers"];
    ensure!(containers.as_array().map(Vec::len) == Some(1), "{deploy}");
    ensure!(containers[0]["image"] == "registry.example/web:2", "{deploy}");

    let out = skiff.kubectl(&["delete", "cm", "settings"]).await?.ok()?;
    ensure!(out.contains("deleted"), "{out}");
    let gone = skiff.kubectl(&["get", "cm", "settings"]).await?.err()?;
    ensure!(gone.contains("NotFound"), "{gone}");
    let out = skiff.kubectl(&["delete", "deployment", "web"]).await?.ok()?;
    ensure!(out.contains("deleted"), "{out}");
    Ok(())
}

// `kubectl create namespace|configmap|secret|deployment` send protobuf request bodies
// (typed client-go clients), which the API server decodes into JSON.
both_stores!(create_verbs, modify_verbs);
