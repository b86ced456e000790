//! Scale-to-zero: Deployments annotated `skiff.dev/scale-to-zero: "true"` are scaled to zero
//! replicas once no connection reached them for their idle period
//! (`skiff.dev/scale-to-zero-idle`, see [`skiff_api::scale_to_zero`]). Scaling back up is the
//! node agents' job: their service proxies hold the first connection and scale from zero.
//!
//! Why the control plane owns scale-down: it is one decision per Deployment, and the one
//! place that sees every Deployment is here — a node agent sees only its own connections, and
//! several agents deciding would fight. The agents report traffic as the `skiff.dev/last-activity`
//! annotation (patched at most every few seconds, so the API is not written per connection);
//! this controller compares it with the idle period, and with when it first saw the
//! Deployment above zero (a Deployment created or scaled up by hand gets a full idle period).
//!
//! What it owns: the scale-down write (a compare-and-swap: it re-checks the decision on the
//! object it replaces, so an agent's activity write or scale-up in between wins), the
//! `ScaledToZero` event, and a `Warning` event (`InvalidScaleToZero`) naming a bad annotation —
//! the feature is then off for that Deployment. What it does not: scale up (agents), or touch
//! Deployments that did not opt in.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;
use skiff_api::scale_to_zero::{self, IdleDecision, ScaleToZero};
use tracing::{info, instrument};

use super::events::{self, EventType};
use super::informer::key_of;
use super::workqueue::WorkQueue;
use super::{Context, Ctx, Reconcile, ReconcileError, info as resource_info};
use crate::apiserver::error::ApiError;
use crate::registry::rest::WriteOptions;

/// The component events are reported as.
const COMPONENT: &str = "scale-to-zero-controller";

/// Scales idle opted-in Deployments to zero (keys `ns/name`).
#[derive(Debug, Clone)]
pub struct ScaleToZeroController {
    ctx: Ctx,
    queue: WorkQueue,
    /// When each Deployment was first seen above zero (cleared at zero).
    up_since: Arc<Mutex<HashMap<String, Timestamp>>>,
    /// Bad annotations already reported, by key and message (said once, not per update).
    reported: Arc<Mutex<HashSet<(String, String)>>>,
}

impl ScaleToZeroController {
    /// Creates the controller, subscribed to Deployments.
    pub fn new(ctx: &Ctx) -> Self {
        let c = ScaleToZeroController {
            ctx: ctx.clone(),
            queue: WorkQueue::new(),
            up_since: Arc::default(),
            reported: Arc::default(),
        };
        let q = c.queue.clone();
        ctx.inf.deployments.subscribe(move |change| {
            let meta = &change.object().metadata;
            let annotations = meta.annotations.as_ref();
            if annotations.is_some_and(|a| a.contains_key(scale_to_zero::SCALE_TO_ZERO)) {
                q.add(&key_of(meta));
            }
        });
        c
    }

    /// Warns once about a bad annotation of `d`.
    async fn warn_invalid(&self, key: &str, d: &Deployment, error: &scale_to_zero::AnnotationError) {
        let message = format!("scale-to-zero is off for this Deployment: {error}");
        let fresh = self.reported.lock().unwrap_or_else(PoisonError::into_inner).insert((key.into(), message.clone()));
        if fresh {
            info!(deployment = key, %error, "invalid scale-to-zero annotation");
            let involved = events::reference("apps/v1", "Deployment", &d.metadata);
            events::record(
                &self.ctx.registry,
                COMPONENT,
                &involved,
                EventType::Warning,
                "InvalidScaleToZero",
                &message,
            )
            .await;
        }
    }

    /// Scales `ns/name` to zero if, on the stored object, it is still opted in, above zero and
    /// idle; true if it did.
    async fn scale_down(&self, ns: &str, name: &str, up_since: Timestamp) -> Result<bool, ReconcileError> {
        let now = self.ctx.config.clock.now();
        let mut still_idle = true;
        let result = self
            .ctx
            .registry
            .update_with(
                resource_info("apps", "deployments"),
                Some(ns),
                name,
                None,
                WriteOptions::default(),
                None,
                |old| {
                    let d: Deployment =
                        serde_json::from_value(old.clone()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
                    still_idle = decide(&d, up_since, now) == Some(IdleDecision::ScaleDown);
                    if !still_idle {
                        return Err(ApiError::Conflict("no longer idle".into()));
                    }
                    let mut new = old.clone();
                    new["spec"]["replicas"] = json!(0);
                    Ok(new)
                },
            )
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(ApiError::NotFound { .. }) => Ok(false),
            Err(ApiError::Conflict(_)) if !still_idle => Ok(false),
            Err(e) => Err(e).context(|| format!("scaling deployment {ns}/{name} to zero")),
        }
    }
}

/// The decision for `d` (None: not opted in, or its annotations are invalid).
fn decide(d: &Deployment, up_since: Timestamp, now: Timestamp) -> Option<IdleDecision> {
    let annotations = d.metadata.annotations.as_ref();
    let settings: ScaleToZero = scale_to_zero::parse(annotations).ok()??;
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    Some(scale_to_zero::idle_decision(replicas, scale_to_zero::last_activity(annotations), up_since, now, settings))
}

impl Reconcile for ScaleToZeroController {
    const NAME: &'static str = "scale-to-zero";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    #[instrument(level = "debug", skip(self), fields(controller = Self::NAME))]
    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(d) = self.ctx.inf.deployments.get(key) else {
            self.up_since.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
            return Ok(());
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        if let Err(error) = scale_to_zero::parse(d.metadata.annotations.as_ref()) {
            self.warn_invalid(key, &d, &error).await;
            return Ok(());
        }
        let now = self.ctx.config.clock.now();
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let up_since = {
            let mut up = self.up_since.lock().unwrap_or_else(PoisonError::into_inner);
            if replicas <= 0 {
                up.remove(key);
                now
            } else {
                *up.entry(key.to_string()).or_insert(now)
            }
        };
        match decide(&d, up_since, now) {
            None | Some(IdleDecision::AtZero) => Ok(()),
            Some(IdleDecision::RecheckIn(after)) => {
                // A little past the deadline, so the recheck does not land just before it.
                self.queue.add_after(key, after + Duration::from_millis(100));
                Ok(())
            }
            Some(IdleDecision::ScaleDown) => {
                let (ns, name) = key.split_once('/').unwrap_or(("default", key));
                if self.scale_down(ns, name, up_since).await? {
                    self.up_since.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
                    let idle = scale_to_zero::parse(d.metadata.annotations.as_ref()).ok().flatten().map(|s| s.idle);
                    let message = format!(
                        "Scaled from {replicas} to 0 replicas: no connection for {}s",
                        idle.unwrap_or_default().as_secs_f64()
                    );
                    info!(deployment = key, "scaled to zero after the idle period");
                    let involved = events::reference("apps/v1", "Deployment", &d.metadata);
                    events::record(
                        &self.ctx.registry,
                        COMPONENT,
                        &involved,
                        EventType::Normal,
                        "ScaledToZero",
                        &message,
                    )
                    .await;
                } else {
                    // Activity or a scale change won the race: look again with the new object.
                    self.queue.add(key);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::controllers::testing::TestCluster;

    fn deployment(name: &str, replicas: i32, annotations: Value) -> Value {
        json!({"metadata": {"name": name, "annotations": annotations},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}}}})
    }

    async fn replicas(tc: &TestCluster, name: &str) -> i64 {
        let d = tc.get("apps", "deployments", Some("default"), name).await.expect("deployment");
        d["spec"]["replicas"].as_i64().expect("replicas")
    }

    async fn events_of(tc: &TestCluster, reason: &str) -> Vec<Value> {
        let list = crate::registry::list::list(
            tc.registry().store(),
            &resource_info("", "events").key_prefix(),
            &crate::registry::list::Filter::default(),
            0,
            None,
        )
        .await
        .expect("events");
        list.items.into_iter().filter(|e| e["reason"] == reason).collect()
    }

    #[tokio::test]
    async fn idle_deployments_go_to_zero_and_active_ones_stay() {
        let tc = TestCluster::start().await;
        let c = ScaleToZeroController::new(&tc.ctx);
        let opt_in = json!({"skiff.dev/scale-to-zero": "true", "skiff.dev/scale-to-zero-idle": "30s"});
        tc.create("apps", "deployments", Some("default"), deployment("idle", 2, opt_in.clone())).await;
        tc.create("apps", "deployments", Some("default"), deployment("plain", 2, json!({}))).await;
        tc.settle().await;
        for key in ["default/idle", "default/plain"] {
            c.reconcile(key).await.expect("reconcile");
        }
        tc.clock.advance(Duration::from_secs(20));
        c.reconcile("default/idle").await.expect("reconcile");
        assert_eq!(replicas(&tc, "idle").await, 2, "20s of a 30s idle period");

        // Traffic at 20s: another full period from then.
        let at = tc.clock.now().to_string();
        tc.update("apps", "deployments", Some("default"), "idle", None, |d| {
            d["metadata"]["annotations"]["skiff.dev/last-activity"] = json!(at);
        })
        .await;
        tc.settle().await;
        tc.clock.advance(Duration::from_secs(20));
        c.reconcile("default/idle").await.expect("reconcile");
        assert_eq!(replicas(&tc, "idle").await, 2, "active 20s ago");

        tc.clock.advance(Duration::from_secs(11));
        c.reconcile("default/idle").await.expect("reconcile");
        c.reconcile("default/plain").await.expect("reconcile");
        assert_eq!(replicas(&tc, "idle").await, 0, "idle for 31s");
        assert_eq!(replicas(&tc, "plain").await, 2, "not opted in");
        assert_eq!(events_of(&tc, "ScaledToZero").await.len(), 1);
    }

    #[tokio::test]
    async fn a_bad_annotation_is_reported_once_and_nothing_scales() {
        let tc = TestCluster::start().await;
        let c = ScaleToZeroController::new(&tc.ctx);
        let bad = json!({"skiff.dev/scale-to-zero": "true", "skiff.dev/scale-to-zero-idle": "soon"});
        tc.create("apps", "deployments", Some("default"), deployment("bad", 1, bad)).await;
        tc.settle().await;
        c.reconcile("default/bad").await.expect("reconcile");
        tc.clock.advance(Duration::from_secs(3600));
        c.reconcile("default/bad").await.expect("reconcile");
        assert_eq!(replicas(&tc, "bad").await, 1);
        let warnings = events_of(&tc, "InvalidScaleToZero").await;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0]["type"], "Warning");
        let message = warnings[0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("skiff.dev/scale-to-zero-idle") && message.contains("soon"), "{message}");
    }
}
