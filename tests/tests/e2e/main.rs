//! End-to-end tests: one test binary, one module per concern.
//!
//! Every scenario starts its own `skiff up` (and etcd, for the etcd store) through the
//! `skiff-tests` harness and runs once per store via [`skiff_tests::both_stores!`]. The `skiff`
//! binary must be built first (`cargo build -p skiff`; `scripts/test.sh` does it). Per the
//! contract of this issue there are no controllers yet, so no test waits for pods to appear.

mod http_api;
mod kube_rs;
mod kubectl_apply;
mod kubectl_errors;
mod kubectl_verbs;
mod registry;
mod logs;
mod pod_env;
mod restart;
mod scheduling;
mod watch_compaction;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use skiff_tests::Skiff;

/// Deadline for a single watch event to arrive.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes `text` to `name` in the skiff's private home and returns the path (for `-f`).
pub fn write_manifest(skiff: &Skiff, name: &str, text: &str) -> Result<PathBuf> {
    let path = skiff.home().join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `kubectl get ARGS -o json` parsed.
pub async fn get_json(skiff: &Skiff, args: &[&str]) -> Result<Value> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    skiff.kubectl(&full).await?.json()
}

/// Names of the items of a JSON list.
pub fn item_names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
