//! History compaction as clients see it: a watch from a compacted resourceVersion ends with
//! an `ERROR` event carrying a `410 Expired` Status, and a continue token pinned to a
//! compacted revision is refused with `410`; a fresh list + watch keeps working.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};
use skiff_tests::{Skiff, StartOptions, StoreKind, both_stores};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

async fn watch_compaction(store: StoreKind) -> Result<()> {
    let mut options = StartOptions::new(store);
    // Compact every second: history older than the previous tick goes away.
    options.extra_args = vec!["--compaction-interval".into(), "1".into()];
    let skiff = Skiff::start_with(options).await?;
    let http = skiff.http()?;
    let base = format!("{}{CMS}", skiff.url);

    let mut first_rv = String::new();
    for i in 0..3 {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}, "data": {"i": i.to_string()}});
        let created: Value = http.post(&base).json(&body).send().await?.error_for_status()?.json().await?;
        if i == 0 {
            first_rv = created["metadata"]["resourceVersion"].as_str().context("resourceVersion")?.to_string();
        }
    }
    let page: Value = http.get(format!("{base}?limit=1")).send().await?.error_for_status()?.json().await?;
    let token = page["metadata"]["continue"].as_str().context("continue token")?.to_string();

    // Keep writing so the compactor has newer revisions to compact up to, until the old
    // revision is gone (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let error_event = loop {
        ensure!(Instant::now() < deadline, "revision {first_rv} was never compacted");
        let patch = json!({"data": {"t": format!("{:?}", Instant::now())}});
        http.patch(format!("{base}/c2"))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await?
            .error_for_status()?;
        let resp = http.get(format!("{base}?watch=true&resourceVersion={first_rv}&timeoutSeconds=1")).send().await?;
        ensure!(resp.status() == StatusCode::OK, "watch answered {}", resp.status());
        let text = resp.text().await?;
        let first: Value = match text.lines().next() {
            Some(line) => serde_json::from_str(line).context("watch event JSON")?,
            None => bail!("watch stream was empty"),
        };
        if first["type"] == "ERROR" {
            break first;
        }
        ensure!(first["type"] == "ADDED" || first["type"] == "MODIFIED", "unexpected event {first}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    ensure!(error_event["object"]["kind"] == "Status", "{error_event}");
    ensure!(error_event["object"]["code"] == 410, "{error_event}");
    ensure!(error_event["object"]["reason"] == "Expired", "{error_event}");

    let resp = http.get(format!("{base}?limit=1&continue={token}")).send().await?;
    ensure!(resp.status() == StatusCode::GONE, "stale continue token answered {}", resp.status());
    let status: Value = resp.json().await?;
    ensure!(status["reason"] == "Expired", "{status}");

    // A new list and a watch from its resourceVersion still work.
    let list: Value = http.get(&base).send().await?.error_for_status()?.json().await?;
    ensure!(list["items"].as_array().map(Vec::len) == Some(3), "{list}");
    let rv = list["metadata"]["resourceVersion"].as_str().context("list resourceVersion")?;
    let resp = http.get(format!("{base}?watch=true&resourceVersion={rv}&timeoutSeconds=1")).send().await?;
    ensure!(resp.status() == StatusCode::OK, "fresh watch answered {}", resp.status());
    ensure!(!resp.text().await?.contains("\"ERROR\""), "fresh watch failed");
    Ok(())
}

both_stores!(watch_compaction);
