//! Objects survive a SIGTERM + restart on the same data dir; SIGTERM exits with status 0.

use anyhow::{Result, ensure};
use skiff_tests::{Skiff, StoreKind, both_stores};

use crate::get_json;

async fn restart_keeps_objects(store: StoreKind) -> Result<()> {
    let mut skiff = Skiff::start(store).await?;
    skiff
        .kubectl(&["create", "namespace", "durable"])
        .await?
        .ok()?;
    skiff
        .kubectl(&[
            "create",
            "configmap",
            "kept",
            "-n",
            "durable",
            "--from-literal=k=v",
        ])
        .await?
        .ok()?;
    skiff
        .kubectl(&[
            "create",
            "deployment",
            "web",
            "-n",
            "durable",
            "--image=registry.example/web:1",
        ])
        .await?
        .ok()?;
    let before = get_json(&skiff, &["cm", "kept", "-n", "durable"]).await?;

    skiff.restart().await?;

    let after = get_json(&skiff, &["cm", "kept", "-n", "durable"]).await?;
    ensure!(after["data"]["k"] == "v", "{after}");
    ensure!(
        after["metadata"]["uid"] == before["metadata"]["uid"],
        "uid changed: {after}"
    );
    let deploy = get_json(&skiff, &["deployment", "web", "-n", "durable"]).await?;
    ensure!(deploy["metadata"]["name"] == "web", "{deploy}");
    // Writes keep working after the restart.
    skiff
        .kubectl(&["label", "cm", "kept", "-n", "durable", "after=restart"])
        .await?
        .ok()?;

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}");
    Ok(())
}

both_stores!(restart_keeps_objects);
