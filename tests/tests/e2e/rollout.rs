//! Deployment rollouts end to end with real kubectl on `skiff up` (a real node runs the WASM
//! http-probe guest): `rollout status`, a rolling update watched pod by pod (Ready pods never
//! below `replicas - maxUnavailable`, never more than `replicas + maxSurge` pods), `rollout
//! history`, `undo` (to the previous and to a chosen revision), `pause` / `resume`,
//! `restart` and `scale`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::Value;
use skiff_tests::{Skiff, StoreKind, wait_until};

use crate::{get_json, pod_is_ready, push_guest};

const REPLICAS: usize = 3;
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {REPLICAS}\n  \
         selector:\n    matchLabels:\n      app: web\n  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      \
         maxSurge: 1\n      maxUnavailable: 0\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      \
         containers:\n      - name: app\n        image: {image}\n        ports:\n        - containerPort: 8080\n        \
         env:\n        - name: VERSION\n          value: v1\n"
    )
}

/// `kubectl rollout status` until done (fails on a timeout or an exceeded deadline).
async fn rollout_status(skiff: &Skiff) -> Result<()> {
    let out = skiff.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]).await?.ok()?;
    ensure!(out.contains("successfully rolled out"), "rollout status said: {out}");
    Ok(())
}

/// (pods not terminating, of which Ready).
async fn pod_counts(skiff: &Skiff) -> Result<(usize, usize)> {
    let list = get_json(skiff, &["pods", "-l", "app=web"]).await?;
    let live: Vec<&Value> = list["items"]
        .as_array()
        .map(|items| items.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect())
        .unwrap_or_default();
    Ok((live.len(), live.iter().filter(|p| pod_is_ready(p)).count()))
}

fn env_version(d: &Value) -> Option<&str> {
    d["spec"]["template"]["spec"]["containers"][0]["env"].as_array()?.iter().find(|e| e["name"] == "VERSION")?["value"]
        .as_str()
}

fn revision(d: &Value) -> Option<&str> {
    d["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str()
}

#[tokio::test]
async fn rolling_update_history_undo_pause_restart_and_scale() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_guest(&skiff, "http-probe", "web:v1").await?;
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&deployment(&image))).await?.ok()?;
    rollout_status(&skiff).await?;
    ensure!(pod_counts(&skiff).await? == (REPLICAS, REPLICAS), "3 Ready pods after the first rollout");

    // v1 -> v2, watched: every poll must keep 3 Ready and at most 4 pods.
    let stop = AtomicBool::new(false);
    let watch = async {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            seen.push(pod_counts(&skiff).await?);
            tokio::task::yield_now().await;
        }
        anyhow::Ok(seen)
    };
    let roll = async {
        let result = async {
            skiff.kubectl(&["set", "env", "deployment/web", "VERSION=v2"]).await?.ok()?;
            rollout_status(&skiff).await
        }
        .await;
        stop.store(true, Ordering::Relaxed);
        result
    };
    let (seen, rolled) = tokio::join!(watch, roll);
    rolled?;
    let seen = seen?;
    // WASM pods start in milliseconds: the whole rollout may take only a few polls.
    ensure!(!seen.is_empty(), "the watcher polled during the rollout");
    for &(live, ready) in &seen {
        ensure!(ready >= REPLICAS, "maxUnavailable 0: Ready pods dropped to {ready} ({seen:?})");
        ensure!(live <= REPLICAS + 1, "maxSurge 1: {live} pods at once ({seen:?})");
    }

    let history = skiff.kubectl(&["rollout", "history", "deployment/web"]).await?.ok()?;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    ensure!(revisions == ["1", "2"], "two revisions in history:\n{history}");

    // Undo to v1: revision 3. Undo to revision 2 (v2): revision 4.
    skiff.kubectl(&["rollout", "undo", "deployment/web"]).await?.ok()?;
    rollout_status(&skiff).await?;
    let d = get_json(&skiff, &["deployment", "web"]).await?;
    ensure!(env_version(&d) == Some("v1") && revision(&d) == Some("3"), "undo: v1 as revision 3: {d}");
    skiff.kubectl(&["rollout", "undo", "deployment/web", "--to-revision=2"]).await?.ok()?;
    rollout_status(&skiff).await?;
    let d = get_json(&skiff, &["deployment", "web"]).await?;
    ensure!(env_version(&d) == Some("v2") && revision(&d) == Some("4"), "undo --to-revision=2: {d}");

    // Paused: a template change does not roll out until resumed.
    skiff.kubectl(&["rollout", "pause", "deployment/web"]).await?.ok()?;
    skiff.kubectl(&["set", "env", "deployment/web", "VERSION=v3"]).await?.ok()?;
    let paused = wait_until("the Progressing condition to say paused", WAIT, POLL, || async {
        let d = get_json(&skiff, &["deployment", "web"]).await?;
        let conds = d["status"]["conditions"].as_array().cloned().unwrap_or_default();
        Ok(conds.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused").then_some(d))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rs_before = get_json(&skiff, &["replicasets", "-l", "app=web"]).await?["items"].as_array().map(Vec::len);
    ensure!(rs_before == Some(2), "no ReplicaSet for v3 while paused: {rs_before:?} {paused}");
    skiff.kubectl(&["rollout", "resume", "deployment/web"]).await?.ok()?;
    rollout_status(&skiff).await?;
    let d = get_json(&skiff, &["deployment", "web"]).await?;
    ensure!(env_version(&d) == Some("v3") && revision(&d) == Some("5"), "resumed: v3 as revision 5");

    // Restart: a new revision with the same containers.
    skiff.kubectl(&["rollout", "restart", "deployment/web"]).await?.ok()?;
    rollout_status(&skiff).await?;
    let d = get_json(&skiff, &["deployment", "web"]).await?;
    ensure!(
        revision(&d) == Some("6")
            && d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(),
        "restart: revision 6 with restartedAt: {d}"
    );

    // Scale up and down.
    skiff.kubectl(&["scale", "deployment/web", "--replicas=5"]).await?.ok()?;
    rollout_status(&skiff).await?;
    wait_until("5 Ready pods", WAIT, POLL, || async { Ok((pod_counts(&skiff).await? == (5, 5)).then_some(())) })
        .await?;
    skiff.kubectl(&["scale", "deployment/web", "--replicas=2"]).await?.ok()?;
    wait_until("2 pods", WAIT, POLL, || async { Ok((pod_counts(&skiff).await? == (2, 2)).then_some(())) }).await?;
    let events = get_json(&skiff, &["events"]).await?;
    let messages: Vec<&str> = events["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|e| e["involvedObject"]["name"] == "web" && e["reason"] == "ScalingReplicaSet")
                .filter_map(|e| e["message"].as_str())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        messages.iter().any(|m| m.starts_with("Scaled up replica set web-") && m.ends_with("from 0 to 1"))
            && messages.iter().any(|m| m.starts_with("Scaled down replica set web-")),
        "ScalingReplicaSet events: {messages:?}"
    );
    Ok(())
}
