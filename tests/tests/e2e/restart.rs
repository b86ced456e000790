//! Objects survive a SIGTERM + restart on the same data dir; SIGTERM exits with status 0.

use anyhow::{Result, ensure};
use skiff_tests::{Skiff, StoreKind, both_stores};

use crate::get_json;

async fn restart_keeps_objects(store: StoreKind) -> Result<()> {
    let mut skiff = Skiff::start(store).await?;
    skiff
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: durable\n---\n\
                 apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  namespace: durable\ndata:\n  k: v\n---\n\
                 apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: durable\nspec:\n  \
                 selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    \
                 spec:\n      containers:\n      - name: web\n        image: registry.example/web:1\n",
            ),
        )
        .await?
        .ok()?;
    let before = get_json(&skiff, &["cm", "kept", "-n", "durable"]).await?;

    skiff.restart().await?;

    let after = get_json(&skiff, &["cm", "kept", "-n", "durable"]).await?;
    ensure!(after["data"]["k"] == "v", "{after}");
    ensure!(after["metadata"]["uid"] == before["metadata"]["uid"], "uid changed: {after}");
    let deploy = get_json(&skiff, &["deployment", "web", "-n", "durable"]).await?;
    ensure!(deploy["metadata"]["name"] == "web", "{deploy}");
    // Writes keep working after the restart.
    skiff.kubectl(&["label", "cm", "kept", "-n", "durable", "after=restart"]).await?.ok()?;

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}");
    Ok(())
}

both_stores!(restart_keeps_objects);
