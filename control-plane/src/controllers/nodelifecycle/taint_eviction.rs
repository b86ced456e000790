//! Taint-based eviction (Kubernetes' NoExecute taint manager): a pod on a node with a
//! `NoExecute` taint it does not tolerate is deleted at once; one it tolerates for
//! `tolerationSeconds` is deleted that long after the taint was added (on the controller's
//! clock; the key is requeued for then). Each eviction records the Event
//! `TaintManagerEviction` "Marking for deletion Pod ns/name". Pods of a node whose agent is
//! silent (Ready=Unknown) are deleted with grace 0: nobody is left to confirm a graceful end,
//! and the ReplicaSet controller only replaces what is gone or terminating.
//!
//! Not here: adding the taints ([`super`]), PDBs (taint eviction ignores them, as Kubernetes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use tracing::{info as log_info, instrument};

use super::health;
use crate::apiserver::error::ApiError;
use crate::controllers::events::{self, EventType};
use crate::controllers::informer::{Change, key_of};
use crate::controllers::workqueue::WorkQueue;
use crate::controllers::{Context, Ctx, Reconcile, ReconcileError, info};
use crate::registry::rest::DeleteOptions;
use crate::scheduler::filters::tolerates;

/// What to do about one pod on a tainted node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// No NoExecute taint, or tolerated forever.
    Never,
    /// A taint it does not tolerate.
    Now,
    /// Tolerated until then.
    At(Timestamp),
}

/// The NoExecute taints of a node.
pub fn no_execute_taints(node: &Node) -> Vec<Taint> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
    taints.iter().filter(|t| t.effect == "NoExecute").cloned().collect()
}

/// When a pod with `tolerations` must leave a node with the NoExecute `taints`: every taint
/// needs a tolerating toleration (the first that matches, as Kubernetes'
/// `GetMatchingTolerations`); the smallest `tolerationSeconds` among them counts from the
/// latest `timeAdded` (`added` supplies it for a taint without one).
pub fn eviction_time(tolerations: &[Toleration], taints: &[Taint], added: impl Fn(&Taint) -> Timestamp) -> Eviction {
    if taints.is_empty() {
        return Eviction::Never;
    }
    let mut min_seconds: Option<i64> = None;
    let mut start: Option<Timestamp> = None;
    for taint in taints {
        let Some(t) = tolerations.iter().find(|t| tolerates(t, taint)) else { return Eviction::Now };
        if let Some(secs) = t.toleration_seconds {
            let secs = secs.max(0);
            min_seconds = Some(min_seconds.map_or(secs, |m| m.min(secs)));
        }
        let at = taint.time_added.as_ref().map(|t| t.0).unwrap_or_else(|| added(taint));
        start = Some(start.map_or(at, |s| s.max(at)));
    }
    match (min_seconds, start) {
        (Some(secs), Some(start)) => Eviction::At(start + SignedDuration::from_secs(secs)),
        _ => Eviction::Never,
    }
}

/// The taint eviction controller; keys are pod keys (`ns/name`).
#[derive(Debug, Clone)]
pub struct TaintEvictionController {
    ctx: Ctx,
    queue: WorkQueue,
    /// When a taint without `timeAdded` was first seen (`node/key:effect`).
    first_seen: Arc<Mutex<HashMap<String, Timestamp>>>,
}

impl TaintEvictionController {
    /// Creates the controller and subscribes it to pods and nodes.
    pub fn new(ctx: &Ctx) -> Self {
        let c = TaintEvictionController { ctx: ctx.clone(), queue: WorkQueue::new(), first_seen: Arc::default() };
        let q = c.queue.clone();
        ctx.inf.pods.subscribe(move |change: &Change<Pod>| {
            if let Change::Added(p) | Change::Updated { new: p, .. } = change
                && p.spec.as_ref().is_some_and(|s| s.node_name.is_some())
                && p.metadata.deletion_timestamp.is_none()
            {
                q.add(&key_of(&p.metadata));
            }
        });
        let q = c.queue.clone();
        let pods = ctx.inf.pods.clone();
        ctx.inf.nodes.subscribe(move |change: &Change<Node>| {
            let changed = match change {
                Change::Added(n) => !no_execute_taints(n).is_empty(),
                Change::Updated { old, new } => no_execute_taints(old) != no_execute_taints(new),
                Change::Deleted(_) => false,
            };
            if changed {
                let name = change.object().metadata.name.clone();
                for p in pods.list_where(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()) == name) {
                    q.add(&key_of(&p.metadata));
                }
            }
        });
        c
    }

    fn first_seen(&self, node: &str, taint: &Taint) -> Timestamp {
        let key = format!("{node}/{}:{}", taint.key, taint.effect);
        let mut map = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(key).or_insert_with(|| self.ctx.config.clock.now())
    }

    async fn evict(&self, pod: &Pod, node: &Node) -> Result<(), ReconcileError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        log_info!(pod = %format!("{ns}/{name}"), node = ?node.metadata.name, "taint eviction");
        let reference = events::reference("v1", "Pod", &pod.metadata);
        let message = format!("Marking for deletion Pod {ns}/{name}");
        events::record(
            &self.ctx.registry,
            "taint-eviction-controller",
            &reference,
            EventType::Normal,
            "TaintManagerEviction",
            &message,
        )
        .await;
        // A silent node cannot confirm a graceful stop: delete at once.
        let silent = health::ready_status(node) == Some("Unknown");
        let opts = DeleteOptions {
            grace_period_seconds: silent.then_some(0),
            precondition_uid: pod.metadata.uid.clone(),
            ..DeleteOptions::default()
        };
        match self.ctx.registry.delete(info("", "pods"), Some(ns), name, &opts).await {
            Ok(_) | Err(ApiError::NotFound { .. } | ApiError::Conflict(_)) => Ok(()),
            Err(e) => Err(e).context(|| format!("evicting pod {ns}/{name}")),
        }
    }
}

impl Reconcile for TaintEvictionController {
    const NAME: &'static str = "taint-eviction";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    #[instrument(level = "debug", skip(self), fields(controller = Self::NAME))]
    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(pod) = self.ctx.inf.pods.get(key) else { return Ok(()) };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { return Ok(()) };
        let Some(node) = self.ctx.inf.nodes.get(&node_name) else { return Ok(()) };
        let taints = no_execute_taints(&node);
        let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
        match eviction_time(&tolerations, &taints, |t| self.first_seen(&node_name, t)) {
            Eviction::Never => Ok(()),
            Eviction::Now => self.evict(&pod, &node).await,
            Eviction::At(at) => {
                let now = self.ctx.config.clock.now();
                if now >= at {
                    return self.evict(&pod, &node).await;
                }
                let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
                self.queue.add_after(key, wait + Duration::from_millis(100));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    fn taint(key: &str, added: Option<i64>) -> Taint {
        Taint { key: key.into(), effect: "NoExecute".into(), value: None, time_added: added.map(|s| Time(ts(s))) }
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            ..Toleration::default()
        }
    }

    #[test]
    fn eviction_time_rules() {
        let never = |_: &Taint| ts(0);
        assert_eq!(eviction_time(&[], &[], never), Eviction::Never);
        assert_eq!(eviction_time(&[], &[taint(health::UNREACHABLE, Some(10))], never), Eviction::Now);
        let tols = [tol(health::UNREACHABLE, Some(300)), tol(health::NOT_READY, Some(300))];
        assert_eq!(eviction_time(&tols, &[taint(health::UNREACHABLE, Some(10))], never), Eviction::At(ts(310)));
        assert_eq!(
            eviction_time(&[tol(health::UNREACHABLE, None)], &[taint(health::UNREACHABLE, Some(10))], never),
            Eviction::Never
        );
        let both = [taint(health::UNREACHABLE, Some(10)), taint("other", Some(20))];
        assert_eq!(eviction_time(&tols, &both, never), Eviction::Now, "other not tolerated");
        let tols2 = [tol(health::UNREACHABLE, Some(300)), tol("other", Some(5))];
        assert_eq!(eviction_time(&tols2, &both, never), Eviction::At(ts(25)), "min seconds from latest taint");
        assert_eq!(eviction_time(&tols, &[taint(health::UNREACHABLE, None)], |_| ts(100)), Eviction::At(ts(400)));
    }
}
