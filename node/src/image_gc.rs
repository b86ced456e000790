//! Image garbage collection on the node, as the kubelet's image GC manager: every period, if
//! the filesystem holding the image store is used at or above the high threshold (percent),
//! images no pod on this node uses are removed, least recently used first, until use would be
//! at the low threshold. Images pulled or started within the minimum age stay (a pod that is
//! being set up may not be in the pod list yet).
//!
//! What it owns: the policy (flags `--image-gc-high-threshold`, `--image-gc-low-threshold`,
//! `--minimum-image-ttl-duration`), the periodic task (cancellation token), the in-use set
//! (the images of every pod bound to this node — WASM and container alike — by reference and
//! by reported imageID), and the node Events `FreeDiskSpaceFailed` / `ImageGCFailed`. What it
//! does not: decide what an image keeps alive on disk or remove files (`ImageStore::gc_with`
//! in `skiff-oci-shim`).

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams};
use skiff_oci_shim::image::{GcReport, ImageError, ImageStore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::events::{EventRecorder, EventType, Record};

/// When and how much to collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Disk use (percent of the filesystem) at or above which GC runs; 100 disables GC.
    pub high_threshold_percent: u8,
    /// Disk use GC frees down to.
    pub low_threshold_percent: u8,
    /// Images used more recently than this are never removed.
    pub min_age: Duration,
    /// How often disk use is checked.
    pub period: Duration,
}

impl Default for ImageGcPolicy {
    /// The kubelet's defaults: 85 %, 80 %, 2 minutes, every 5 minutes.
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
        }
    }
}

impl ImageGcPolicy {
    /// Checks the thresholds as the kubelet does.
    pub fn validate(&self) -> Result<(), String> {
        if self.high_threshold_percent > 100 || self.low_threshold_percent > 100 {
            return Err("image GC thresholds are percentages (0-100)".into());
        }
        if self.low_threshold_percent > self.high_threshold_percent {
            return Err(format!(
                "--image-gc-low-threshold ({}) must not exceed --image-gc-high-threshold ({})",
                self.low_threshold_percent, self.high_threshold_percent
            ));
        }
        if self.period.is_zero() {
            return Err("the image GC period must be positive".into());
        }
        Ok(())
    }

    /// Bytes to free given the filesystem's capacity and available bytes, or `None` when
    /// use is below the high threshold (or GC is disabled). The kubelet's arithmetic.
    pub fn bytes_to_free(&self, capacity: u64, available: u64) -> Option<u64> {
        if self.high_threshold_percent >= 100 || capacity == 0 {
            return None;
        }
        let available = available.min(capacity);
        let usage_percent = 100 - available.saturating_mul(100) / capacity;
        if usage_percent < u64::from(self.high_threshold_percent) {
            return None;
        }
        let low_available = capacity / 100 * u64::from(100 - self.low_threshold_percent)
            + capacity % 100 * u64::from(100 - self.low_threshold_percent) / 100;
        Some(low_available.saturating_sub(available))
    }
}

/// What the agent runs image GC over.
#[derive(Debug, Clone)]
pub struct ImageGc {
    pub store: ImageStore,
    pub policy: ImageGcPolicy,
}

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageGcError {
    #[error("reading the disk use of {path}: {source}")]
    Statvfs { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] ImageError),
    /// The kubelet's wording.
    #[error(
        "Failed to garbage collect required amount of images. Attempted to free {wanted} bytes, but only found {freed} bytes eligible to free."
    )]
    NotEnough { wanted: u64, freed: u64 },
}

/// Total and available bytes of the filesystem holding `path`.
pub fn fs_stats(path: &Path) -> Result<(u64, u64), ImageGcError> {
    let stat = rustix::fs::statvfs(path)
        .map_err(|e| ImageGcError::Statvfs { path: path.display().to_string(), source: e.into() })?;
    Ok((stat.f_blocks.saturating_mul(stat.f_frsize), stat.f_bavail.saturating_mul(stat.f_frsize)))
}

/// The image references of `pods`: every container's `image` and reported `imageID`.
pub fn pod_images(pods: &[Pod]) -> Vec<String> {
    let mut images = Vec::new();
    for pod in pods {
        if let Some(spec) = &pod.spec {
            images.extend(spec.containers.iter().filter_map(|c| c.image.clone()));
            images.extend(spec.init_containers.iter().flatten().filter_map(|c| c.image.clone()));
            images.extend(spec.ephemeral_containers.iter().flatten().filter_map(|c| c.image.clone()));
        }
        if let Some(status) = &pod.status {
            let statuses = [&status.container_statuses, &status.init_container_statuses];
            images.extend(statuses.into_iter().flatten().flatten().map(|s| s.image_id.clone()));
        }
    }
    images.retain(|i| !i.is_empty());
    images
}

/// One collection: frees what `policy` asks for, keeping the images `in_use` (pods' image
/// references and image IDs) stand for.
/// `Ok(None)` when disk use is below the high threshold.
pub async fn collect(
    store: &ImageStore,
    policy: &ImageGcPolicy,
    (capacity, available): (u64, u64),
    in_use: &[String],
) -> Result<Option<GcReport>, ImageGcError> {
    let Some(wanted) = policy.bytes_to_free(capacity, available) else { return Ok(None) };
    let usage = store.disk_usage().await?;
    let report = store.gc_referenced(in_use, usage.saturating_sub(wanted), policy.min_age).await?;
    if report.freed_bytes() < wanted {
        return Err(ImageGcError::NotEnough { wanted, freed: report.freed_bytes() });
    }
    Ok(Some(report))
}

/// Runs image GC every period until `shutdown` fires.
pub async fn run(
    gc: ImageGc,
    client: kube::Client,
    node_name: String,
    events: EventRecorder,
    shutdown: CancellationToken,
) {
    let pods: Api<Pod> = Api::all(client);
    let params = ListParams::default().fields(&format!("spec.nodeName={node_name}"));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + gc.policy.period, gc.policy.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Without the pod list nothing can be known unused: skip rather than guess.
        let listed = match pods.list(&params).await {
            Ok(list) => list.items,
            Err(error) => {
                warn!(%error, "image GC skipped: listing this node's pods failed");
                continue;
            }
        };
        let in_use = pod_images(&listed);
        let outcome = match fs_stats(gc.store.dir()) {
            Ok(stats) => collect(&gc.store, &gc.policy, stats, &in_use).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(report)) => info!(
                freed = report.freed_bytes(),
                images = report.removed_images.len(),
                referenced = in_use.len(),
                "image GC freed disk space"
            ),
            Err(error) => {
                warn!(%error, "image GC");
                let reason = match error {
                    ImageGcError::NotEnough { .. } => "FreeDiskSpaceFailed",
                    _ => "ImageGCFailed",
                };
                events.record(node_event(&node_name, reason, error.to_string()));
            }
        }
    }
}

/// A Warning event about the Node (the kubelet names it with the node name as UID).
fn node_event(node: &str, reason: &str, message: String) -> Record {
    let involved = ObjectReference {
        kind: Some("Node".into()),
        name: Some(node.into()),
        uid: Some(node.into()),
        ..ObjectReference::default()
    };
    Record { involved, type_: EventType::Warning, reason: reason.into(), message, occurrences: 1, at: Timestamp::now() }
}

/// Parses a Go duration as kubelet flags take them (`2m`, `1m30s`, `500ms`, `0`).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (e.g. 2m, 90s, 1h30m)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(value * seconds);
        rest = &rest[unit_len..];
    }
    if text.is_empty() { Err(bad()) } else { Ok(total) }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec, PodStatus};

    use super::*;

    fn policy(high: u8, low: u8) -> ImageGcPolicy {
        ImageGcPolicy { high_threshold_percent: high, low_threshold_percent: low, ..ImageGcPolicy::default() }
    }

    #[test]
    fn thresholds_as_the_kubelet() {
        let gib = 1 << 30;
        // 90 % used of 100 GiB: free down to 80 % = 10 GiB.
        assert_eq!(policy(85, 80).bytes_to_free(100 * gib, 10 * gib), Some(10 * gib));
        assert_eq!(policy(85, 80).bytes_to_free(100 * gib, 20 * gib), None, "80 % is below 85 %");
        assert_eq!(policy(85, 80).bytes_to_free(100 * gib, 15 * gib), Some(5 * gib), "85 % triggers");
        assert_eq!(policy(100, 80).bytes_to_free(100 * gib, 0), None, "100 disables");
        // 0/0: everything used is to be freed, whatever the use.
        assert_eq!(policy(0, 0).bytes_to_free(100 * gib, 60 * gib), Some(40 * gib));
        assert_eq!(policy(0, 0).bytes_to_free(0, 0), None);
        assert!(policy(80, 85).validate().is_err());
        assert!(policy(101, 80).validate().is_err());
        assert!(ImageGcPolicy::default().validate().is_ok());
    }

    #[test]
    fn in_use_images_come_from_specs_and_statuses() {
        let container = |image: &str| Container { name: "c".into(), image: Some(image.into()), ..Container::default() };
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("reg/app:v1")],
                init_containers: Some(vec![container("reg/init:v1")]),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    image_id: "reg/app:v1@sha256:abc".into(),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(pod_images(&[pod]), ["reg/app:v1", "reg/init:v1", "reg/app:v1@sha256:abc"]);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "5", "2x", "m", "1h-"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
