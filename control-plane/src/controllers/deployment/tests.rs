//! The Deployment controller against the real registry on an in-memory store
//! ([`TestCluster`]), with the ReplicaSet controller creating and deleting real pod objects.
//! There is no node: a test makes pods Ready by writing their status, and moves the fake
//! clock for minReadySeconds and progress deadlines.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use serde_json::{Value, json};
use skiff_api::labels::{DEPLOYMENT_REVISION, DEPLOYMENT_REVISION_HISTORY};

use super::{DeploymentController, history, progress};
use crate::controllers::replicaset::{ReplicaSetController, is_active, pods::is_ready};
use crate::controllers::testing::TestCluster;

const NS: Option<&str> = Some("default");

struct Harness {
    tc: TestCluster,
    dc: DeploymentController,
    rc: ReplicaSetController,
}

fn deployment(replicas: i32, image: &str, strategy: Value, extra: Value) -> Value {
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": strategy,
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"metadata": {"name": "web"}, "spec": spec})
}

fn rolling(surge: i32, unavailable: i32) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

impl Harness {
    async fn start(d: Value) -> Harness {
        let tc = TestCluster::start().await;
        let dc = DeploymentController::new(&tc.ctx);
        let rc = ReplicaSetController::new(&tc.ctx);
        tc.create("apps", "deployments", NS, d).await;
        tc.settle().await;
        Harness { tc, dc, rc }
    }

    fn deployment(&self) -> Deployment {
        (*self.tc.inf().deployments.get("default/web").expect("deployment")).clone()
    }

    /// The ReplicaSets, oldest revision first.
    fn replica_sets(&self) -> Vec<ReplicaSet> {
        let mut v: Vec<ReplicaSet> =
            self.tc.inf().replicasets.list_namespace("default").iter().map(|r| (**r).clone()).collect();
        v.sort_by_key(history::revision);
        v
    }

    fn sizes(&self) -> Vec<i32> {
        self.replica_sets().iter().map(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)).collect()
    }

    /// (active pods, Ready active pods).
    fn pods(&self) -> (usize, usize) {
        let pods: Vec<_> = self.tc.inf().pods.list_namespace("default").into_iter().filter(|p| is_active(p)).collect();
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        (pods.len(), ready)
    }

    fn progressing_reason(&self) -> Option<String> {
        progress::get(self.deployment().status.as_ref(), progress::PROGRESSING).and_then(|c| c.reason.clone())
    }

    async fn deployment_pass(&self) {
        self.dc.reconcile("default/web").await.expect("deployment reconcile");
        self.tc.settle().await;
    }

    /// Two ReplicaSet passes: the first creates or deletes pods, the second reports them.
    async fn replica_set_pass(&self) {
        for _ in 0..2 {
            for rs in self.replica_sets() {
                let key = format!("default/{}", rs.metadata.name.as_deref().unwrap_or_default());
                self.rc.reconcile(&key).await.expect("replicaset reconcile");
            }
            self.tc.settle().await;
        }
    }

    /// What a node would do: every pod not yet Ready becomes Running and Ready now.
    async fn make_pods_ready(&self) {
        let now = self.tc.clock.now().to_string();
        for p in self.tc.inf().pods.list_namespace("default") {
            if is_ready(&p) || !is_active(&p) {
                continue;
            }
            let name = p.metadata.name.clone().unwrap_or_default();
            self.tc
                .update("", "pods", NS, &name, Some("status"), |pod| {
                    pod["status"]["phase"] = json!("Running");
                    pod["status"]["conditions"] =
                        json!([{"type": "Ready", "status": "True", "lastTransitionTime": now}]);
                })
                .await;
        }
        self.tc.settle().await;
    }

    async fn edit(&self, f: impl Fn(&mut Value) + Send + Sync) {
        self.tc.update("apps", "deployments", NS, "web", None, f).await;
        self.tc.settle().await;
    }

    fn complete(&self) -> bool {
        let d = self.deployment();
        d.status.as_ref().is_some_and(|s| progress::complete(&d, s))
            && self.progressing_reason().as_deref() == Some(progress::NEW_RS_AVAILABLE)
    }

    /// Runs the controllers (pods turn Ready after each ReplicaSet pass, unless `ready` is
    /// false) until the rollout is complete, calling `check` after every step.
    async fn converge(&self, ready: bool, check: impl Fn(&Harness)) {
        for _ in 0..40 {
            self.deployment_pass().await;
            check(self);
            self.replica_set_pass().await;
            check(self);
            if ready {
                self.make_pods_ready().await;
                self.replica_set_pass().await;
                check(self);
            }
            if self.complete() {
                // One more pass: cleanup runs once the stored status is complete.
                self.deployment_pass().await;
                return;
            }
        }
        panic!("no convergence: sizes {:?}, status {:?}", self.sizes(), self.deployment().status);
    }
}

#[tokio::test]
async fn rolling_update_stays_within_surge_and_unavailable() {
    let h = Harness::start(deployment(3, "v1", rolling(1, 0), json!({}))).await;
    h.converge(true, |_| {}).await;
    assert_eq!(h.sizes(), vec![3]);
    assert_eq!(
        h.deployment().metadata.annotations.and_then(|a| a.get(DEPLOYMENT_REVISION).cloned()).as_deref(),
        Some("1")
    );

    h.edit(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2")).await;
    let max_total = std::sync::atomic::AtomicUsize::new(0);
    h.converge(true, |h| {
        let (total, ready) = h.pods();
        assert!(total <= 4, "maxSurge 1: at most 4 pods, saw {total}");
        assert!(ready >= 3, "maxUnavailable 0: at least 3 Ready pods, saw {ready}");
        max_total.fetch_max(total, std::sync::atomic::Ordering::Relaxed);
    })
    .await;
    assert_eq!(max_total.into_inner(), 4, "the rollout surged");
    assert_eq!(h.sizes(), vec![0, 3], "old scaled away, new at full size");
    let rss = h.replica_sets();
    assert_eq!(rss.iter().map(history::revision).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(
        rss[1]
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers[0].image.clone()),
        Some(Some("v2".into()))
    );
    let s = h.deployment().status.expect("status");
    assert_eq!(
        (s.replicas, s.updated_replicas, s.available_replicas, s.unavailable_replicas),
        (Some(3), Some(3), Some(3), Some(0))
    );
}

#[tokio::test]
async fn max_unavailable_lets_old_pods_go_before_new_ones_are_ready() {
    let h = Harness::start(deployment(4, "v1", rolling(0, 2), json!({}))).await;
    h.converge(true, |_| {}).await;
    h.edit(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2")).await;
    h.deployment_pass().await;
    assert_eq!(h.sizes(), vec![2, 0], "no surge: the new ReplicaSet starts empty, two old ones may go");
    h.deployment_pass().await;
    assert_eq!(h.sizes(), vec![2, 2], "into the room they left");
    h.deployment_pass().await;
    assert_eq!(h.sizes(), vec![2, 2], "nothing more until new pods are available");
    h.converge(true, |h| assert!(h.pods().1 >= 2, "never fewer than 4 - 2 Ready")).await;
    assert_eq!(h.sizes(), vec![0, 4]);
}

#[tokio::test]
async fn recreate_waits_for_old_pods_to_be_gone() {
    let h = Harness::start(deployment(2, "v1", json!({"type": "Recreate"}), json!({}))).await;
    h.converge(true, |_| {}).await;
    h.edit(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2")).await;
    h.deployment_pass().await;
    assert_eq!(h.sizes(), vec![0], "old scaled to 0, nothing new yet");
    h.deployment_pass().await;
    assert_eq!(h.replica_sets().len(), 1, "old pods still there: no new ReplicaSet");
    h.replica_set_pass().await;
    assert_eq!(h.pods().0, 0, "the old pods are gone");
    h.deployment_pass().await;
    assert_eq!(h.sizes(), vec![0, 2], "only now the new ReplicaSet, at full size");
    h.converge(true, |h| assert!(h.pods().0 <= 2)).await;
}

#[tokio::test]
async fn min_ready_seconds_delays_availability_on_the_clock() {
    let h = Harness::start(deployment(1, "v1", rolling(1, 0), json!({"minReadySeconds": 10}))).await;
    h.deployment_pass().await;
    h.replica_set_pass().await;
    h.make_pods_ready().await;
    h.replica_set_pass().await;
    h.deployment_pass().await;
    let s = h.deployment().status.expect("status");
    assert_eq!((s.ready_replicas, s.available_replicas), (Some(1), Some(0)), "Ready, but not for 10 s");
    assert_ne!(h.progressing_reason().as_deref(), Some(progress::NEW_RS_AVAILABLE));
    h.tc.clock.advance(Duration::from_secs(11));
    h.replica_set_pass().await;
    h.deployment_pass().await;
    assert_eq!(h.deployment().status.and_then(|s| s.available_replicas), Some(1));
    assert_eq!(h.progressing_reason().as_deref(), Some(progress::NEW_RS_AVAILABLE));
}

#[tokio::test]
async fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let h = Harness::start(deployment(1, "v1", rolling(1, 0), json!({"progressDeadlineSeconds": 30}))).await;
    h.deployment_pass().await;
    assert_eq!(h.progressing_reason().as_deref(), Some(progress::NEW_RS_CREATED));
    h.replica_set_pass().await;
    h.deployment_pass().await;
    assert_eq!(h.progressing_reason().as_deref(), Some(progress::RS_UPDATED), "a pod appeared");
    h.tc.clock.advance(Duration::from_secs(20));
    h.deployment_pass().await;
    assert_eq!(h.progressing_reason().as_deref(), Some(progress::RS_UPDATED), "20 s < 30 s");
    h.tc.clock.advance(Duration::from_secs(15));
    h.deployment_pass().await;
    let c = progress::get(h.deployment().status.as_ref(), progress::PROGRESSING).cloned().expect("condition");
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some(progress::TIMED_OUT)));
    // Progress after all: the condition recovers.
    h.make_pods_ready().await;
    h.replica_set_pass().await;
    h.deployment_pass().await;
    assert_eq!(h.progressing_reason().as_deref(), Some(progress::NEW_RS_AVAILABLE));
}

#[tokio::test]
async fn paused_deployments_scale_but_do_not_roll_out() {
    let h = Harness::start(deployment(2, "v1", rolling(1, 0), json!({}))).await;
    h.converge(true, |_| {}).await;
    h.edit(|d| {
        d["spec"]["paused"] = json!(true);
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2");
    })
    .await;
    h.deployment_pass().await;
    assert_eq!(h.replica_sets().len(), 1, "no new ReplicaSet while paused");
    assert_eq!(h.progressing_reason().as_deref(), Some(progress::PAUSED));
    h.edit(|d| d["spec"]["replicas"] = json!(4)).await;
    h.deployment_pass().await;
    assert_eq!(h.sizes(), vec![4], "scaling still works");
    h.edit(|d| d["spec"]["paused"] = json!(false)).await;
    h.converge(true, |_| {}).await;
    assert_eq!(h.sizes(), vec![0, 4], "resumed: rolled out");
}

#[tokio::test]
async fn resizing_mid_rollout_is_proportional() {
    let h = Harness::start(deployment(4, "v1", rolling(2, 0), json!({}))).await;
    h.converge(true, |_| {}).await;
    h.edit(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2")).await;
    h.deployment_pass().await;
    assert_eq!(h.sizes(), vec![4, 2], "surge 2");
    h.edit(|d| d["spec"]["replicas"] = json!(8)).await;
    h.deployment_pass().await;
    // 8 + surge 2 = 10, the 4 added shared 4:2 (6.67 -> 7, 3.33 -> 3).
    assert_eq!(h.sizes(), vec![7, 3]);
    h.converge(true, |h| assert!(h.pods().0 <= 10)).await;
    assert_eq!(h.sizes(), vec![0, 8]);
}

#[tokio::test]
async fn rollback_gets_the_next_revision_and_history_is_limited() {
    let h = Harness::start(deployment(1, "v1", rolling(1, 0), json!({"revisionHistoryLimit": 1}))).await;
    h.converge(true, |_| {}).await;
    for image in ["v2", "v1"] {
        h.edit(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image)).await;
        h.converge(true, |_| {}).await;
    }
    let rss = h.replica_sets();
    assert_eq!(rss.len(), 2, "v1 (reused) and v2: nothing to delete yet");
    let v1 = &rss[1];
    assert_eq!(history::revision(v1), 3, "the rollback to v1 is revision 3");
    let a = v1.metadata.annotations.clone().expect("annotations");
    assert_eq!(a.get(DEPLOYMENT_REVISION_HISTORY).map(String::as_str), Some("1"));
    let d = h.deployment();
    assert_eq!(d.metadata.annotations.and_then(|a| a.get(DEPLOYMENT_REVISION).cloned()).as_deref(), Some("3"));

    h.edit(|d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v3");
        d["metadata"]["annotations"]["kubernetes.io/change-cause"] = json!("to v3");
    })
    .await;
    h.converge(true, |_| {}).await;
    let rss = h.replica_sets();
    assert_eq!(rss.iter().map(history::revision).collect::<Vec<_>>(), vec![3, 4], "revision 2 deleted: limit 1");
    let cause = rss[1].metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/change-cause").cloned());
    assert_eq!(cause.as_deref(), Some("to v3"), "the change cause is copied to the new ReplicaSet");
}

#[tokio::test]
async fn orphans_are_adopted_and_non_matching_replica_sets_released() {
    let h = Harness::start(deployment(2, "v1", rolling(1, 0), json!({}))).await;
    h.deployment_pass().await;
    let rs = h.replica_sets().remove(0);
    let name = rs.metadata.name.clone().expect("name");
    // Orphan it (as `kubectl delete --cascade=orphan` leaves it), then let the Deployment look again.
    h.tc.update("apps", "replicasets", NS, &name, None, |r| r["metadata"]["ownerReferences"] = json!([])).await;
    h.tc.settle().await;
    h.deployment_pass().await;
    let rss = h.replica_sets();
    assert_eq!(rss.len(), 1, "adopted, not duplicated");
    let owner = rss[0].metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!((owner[0].kind.as_str(), owner[0].controller), ("Deployment", Some(true)));
    // A label change takes the ReplicaSet out of the selector: released, and a new one made.
    let info = crate::controllers::info("apps", "replicasets");
    h.tc.registry()
        .update_with(info, NS, &name, None, Default::default(), None, |old| {
            let mut new = old.clone();
            new["metadata"]["labels"]["app"] = json!("other");
            Ok(new)
        })
        .await
        .expect("relabel");
    h.tc.settle().await;
    // Released; the new ReplicaSet's name is taken by it: a collision is counted...
    assert!(h.dc.reconcile("default/web").await.is_err(), "the name is taken");
    h.tc.settle().await;
    let released = h.tc.inf().replicasets.get(&format!("default/{name}")).expect("still there");
    assert!(released.metadata.owner_references.clone().unwrap_or_default().is_empty(), "released");
    assert_eq!(h.deployment().status.and_then(|s| s.collision_count), Some(1));
    // ... and the next pass creates it under another name.
    h.deployment_pass().await;
    let mine: Vec<_> = h.replica_sets().into_iter().filter(|r| r.metadata.name.as_deref() != Some(&name)).collect();
    assert_eq!(mine.len(), 1, "a new ReplicaSet under a new name");
}
