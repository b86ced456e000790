//! The `Recreate` strategy (Kubernetes' `recreate.go`): scale every old ReplicaSet to 0,
//! wait until none of their pods is left running (terminating ones count), and only then
//! create or scale up the new ReplicaSet — old and new pods never run together.

use k8s_openapi::api::core::v1::Pod;

use super::sync::Rollout;
use crate::controllers::ReconcileError;
use crate::controllers::owner::controller_ref;

/// Whether a pod still runs (or may: `Unknown` counts) — not `Succeeded` or `Failed`.
pub fn still_running(pod: &Pod) -> bool {
    !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

impl Rollout<'_> {
    /// One pass of a recreate rollout (`rolloutRecreate`).
    pub async fn recreate(&mut self) -> Result<(), ReconcileError> {
        let new = self.sync_revision(false).await?;
        let mut scaled = false;
        for i in self.olds(new) {
            scaled |= self.scale(i, 0).await?;
        }
        if scaled || self.old_pods_running(new) {
            return self.finish_rollout();
        }
        let new = match new {
            Some(i) => Some(i),
            None => self.sync_revision(true).await?,
        };
        if let Some(i) = new {
            self.reconcile_new(i).await?;
        }
        if self.was_complete() {
            self.cleanup().await?;
        }
        self.finish_rollout()
    }

    /// Some old ReplicaSet still reports pods, or a pod it controls has not finished.
    fn old_pods_running(&self, new: Option<usize>) -> bool {
        let olds = self.olds(new);
        if olds.iter().any(|&i| self.rss[i].status.as_ref().is_some_and(|s| s.replicas > 0)) {
            return true;
        }
        let uids: Vec<&str> = olds.iter().filter_map(|&i| self.rss[i].metadata.uid.as_deref()).collect();
        let ns = self.d.metadata.namespace.as_deref().unwrap_or_default();
        self.c
            .pods
            .list_namespace(ns)
            .iter()
            .any(|p| controller_ref(&p.metadata).is_some_and(|r| uids.contains(&r.uid.as_str())) && still_running(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finished_pods_do_not_hold_a_recreate_back() {
        let pod = |phase: &str| -> Pod { serde_json::from_value(json!({"status": {"phase": phase}})).expect("pod") };
        assert!(still_running(&pod("Running")));
        assert!(still_running(&pod("Pending")));
        assert!(still_running(&pod("Unknown")));
        assert!(!still_running(&pod("Succeeded")));
        assert!(!still_running(&pod("Failed")));
    }
}
