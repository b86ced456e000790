//! The DaemonSet controller against the real registry on an in-memory store with a fake
//! clock ([`TestCluster`]): nodes join, leave and change; pods are marked Running/Ready by
//! hand (there is no agent), and every pass is a direct `reconcile` call.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::labels::CONTROLLER_REVISION_HASH;

use super::DaemonSetController;
use crate::controllers::testing::TestCluster;
use crate::registry::rest::DeleteOptions;

const KEY: &str = "default/agent";
const NS: Option<&str> = Some("default");

fn node_body(name: &str, labels: Value, taints: Value) -> Value {
    let mut labels = labels;
    labels["skiff.dev/runtimes"] = json!("wasm");
    labels["kubernetes.io/hostname"] = json!(name);
    json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

fn ds_body(spec_extra: Value, pod_spec_extra: Value) -> Value {
    let mut pod_spec = json!({"containers": [{"name": "c", "image": "app:v1"}]});
    for (k, v) in pod_spec_extra.as_object().cloned().unwrap_or_default() {
        pod_spec[k] = v;
    }
    let mut spec = json!({"selector": {"matchLabels": {"app": "agent"}},
        "template": {"metadata": {"labels": {"app": "agent"}}, "spec": pod_spec}});
    for (k, v) in spec_extra.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    json!({"metadata": {"name": "agent"}, "spec": spec})
}

struct Fixture {
    tc: TestCluster,
    c: DaemonSetController,
}

impl Fixture {
    async fn new() -> Fixture {
        let tc = TestCluster::start().await;
        let c = DaemonSetController::new(&tc.ctx);
        Fixture { tc, c }
    }

    async fn node(&self, name: &str, labels: Value, taints: Value) {
        self.tc.create("", "nodes", None, node_body(name, labels, taints)).await;
    }

    /// Waits until the cache (and the controller's expectations) saw every write.
    async fn settle(&self) {
        self.tc.settle().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.c.expectations.satisfied(KEY) {
            assert!(tokio::time::Instant::now() < deadline, "expectations never met");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One reconcile pass, then settle.
    async fn sync(&self) {
        self.settle().await;
        self.c.reconcile(KEY).await.expect("reconcile");
        self.settle().await;
    }

    /// The DaemonSet's pods by target node, as (node, hash, name) sorted by node.
    fn pods(&self) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = self
            .tc
            .inf()
            .pods
            .list_namespace("default")
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let hash = p.metadata.labels.as_ref().and_then(|l| l.get(CONTROLLER_REVISION_HASH)).cloned();
                (
                    super::placement::target_node(p).unwrap_or_default(),
                    hash.unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn nodes_with_pods(&self) -> Vec<String> {
        self.pods().into_iter().map(|(n, _, _)| n).collect()
    }

    /// Marks a pod Running (Ready since now on the fake clock) or Failed.
    async fn set_phase(&self, name: &str, phase: &str, ready: bool) {
        let now = self.tc.clock.now().to_string();
        self.tc
            .update("", "pods", NS, name, Some("status"), |p| {
                p["status"]["phase"] = json!(phase);
                p["status"]["conditions"] = json!([{"type": "Ready", "status": if ready {"True"} else {"False"},
                    "lastTransitionTime": now}]);
            })
            .await;
    }

    /// Marks every pod not yet Ready as Running and Ready since now.
    async fn ready_all(&self) {
        for pod in self.tc.inf().pods.list_namespace("default") {
            if !crate::controllers::replicaset::pods::is_ready(&pod) && pod.metadata.deletion_timestamp.is_none() {
                self.set_phase(pod.metadata.name.as_deref().unwrap_or_default(), "Running", true).await;
            }
        }
    }

    /// The status after one more pass (a pass reports what it saw before its own writes,
    /// as in Kubernetes; the pod events of those writes trigger the next one).
    async fn ds_status(&self) -> Value {
        self.sync().await;
        self.tc.get("apps", "daemonsets", NS, "agent").await.expect("ds")["status"].clone()
    }

    async fn set_image(&self, image: &str) {
        let image = image.to_string();
        self.tc
            .update("apps", "daemonsets", NS, "agent", None, |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image)
            })
            .await;
    }

    /// The DaemonSet's revisions as (revision, name), by revision.
    fn revisions(&self) -> Vec<(i64, String)> {
        let mut v: Vec<_> = self
            .tc
            .inf()
            .controller_revisions
            .list_namespace("default")
            .iter()
            .map(|r| (r.revision, r.metadata.name.clone().unwrap_or_default()))
            .collect();
        v.sort();
        v
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn one_pod_per_eligible_node_as_nodes_join_and_leave() {
    let f = Fixture::new().await;
    f.node("a", json!({}), json!([])).await;
    // Not ready and unreachable: DaemonSet pods tolerate both.
    f.node(
        "b",
        json!({}),
        json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
    )
    .await;
    f.node("c", json!({}), json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])).await;
    f.tc.create("apps", "daemonsets", NS, ds_body(json!({}), json!({}))).await;
    f.sync().await;
    assert_eq!(f.nodes_with_pods(), names(&["a", "b"]), "c's taint is not tolerated");
    let pods = f.tc.inf().pods.list_namespace("default");
    let pod = pods.iter().find(|p| super::placement::target_node(p).as_deref() == Some("a")).expect("pod on a");
    assert!(pod.metadata.name.as_deref().is_some_and(|n| n.starts_with("agent-") && n.len() == "agent-".len() + 5));
    assert_eq!(pod.metadata.owner_references.as_ref().map(|r| r[0].kind.as_str()), Some("DaemonSet"));
    let s = f.ds_status().await;
    assert_eq!((s["desiredNumberScheduled"].clone(), s["currentNumberScheduled"].clone()), (json!(2), json!(2)));
    assert_eq!(s["numberReady"], 0);

    f.node("d", json!({}), json!([])).await;
    f.sync().await;
    assert_eq!(f.nodes_with_pods(), names(&["a", "b", "d"]), "a joining node gets a pod");

    f.tc.delete("", "nodes", None, "a", DeleteOptions::default()).await;
    f.sync().await;
    assert_eq!(f.nodes_with_pods(), names(&["b", "d"]), "a leaving node's pod is deleted");
    f.ready_all().await;
    f.sync().await;
    let s = f.ds_status().await;
    assert_eq!((s["desiredNumberScheduled"].clone(), s["numberReady"].clone()), (json!(2), json!(2)));
    assert_eq!((s["numberAvailable"].clone(), s["updatedNumberScheduled"].clone()), (json!(2), json!(2)));
    assert_eq!(s["numberUnavailable"], 0);
    assert_eq!(s["observedGeneration"], 1);
}

#[tokio::test]
async fn node_selector_affinity_and_noexecute_taints_follow_label_changes() {
    let f = Fixture::new().await;
    f.node("x", json!({"role": "edge", "zone": "z1"}), json!([])).await;
    f.node("y", json!({"zone": "z1"}), json!([])).await;
    f.node("z", json!({"role": "edge"}), json!([])).await;
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}]}}});
    f.tc.create(
        "apps",
        "daemonsets",
        NS,
        ds_body(json!({}), json!({"nodeSelector": {"role": "edge"}, "affinity": affinity})),
    )
    .await;
    f.sync().await;
    assert_eq!(f.nodes_with_pods(), names(&["x"]), "only x has both the label and the zone");

    f.tc.update("", "nodes", None, "x", None, |n| n["metadata"]["labels"]["role"] = json!("core")).await;
    f.tc.update("", "nodes", None, "y", None, |n| n["metadata"]["labels"]["role"] = json!("edge")).await;
    f.sync().await;
    assert_eq!(f.nodes_with_pods(), names(&["y"]), "the pod follows the label");
    let s = f.ds_status().await;
    assert_eq!((s["desiredNumberScheduled"].clone(), s["numberMisscheduled"].clone()), (json!(1), json!(0)));

    // An untolerated NoSchedule taint keeps the pod; NoExecute evicts it.
    f.tc.update("", "nodes", None, "y", None, |n| n["spec"]["taints"] = json!([{"key": "k", "effect": "NoSchedule"}]))
        .await;
    f.sync().await;
    assert_eq!(f.nodes_with_pods(), names(&["y"]));
    assert_eq!(f.ds_status().await["numberMisscheduled"], 1);
    f.tc.update("", "nodes", None, "y", None, |n| n["spec"]["taints"] = json!([{"key": "k", "effect": "NoExecute"}]))
        .await;
    f.sync().await;
    assert!(f.pods().is_empty());
}

#[tokio::test]
async fn failed_pods_are_replaced_with_back_off() {
    let f = Fixture::new().await;
    f.node("a", json!({}), json!([])).await;
    f.tc.create("apps", "daemonsets", NS, ds_body(json!({}), json!({}))).await;
    f.sync().await;
    let first = f.pods()[0].2.clone();
    f.set_phase(&first, "Failed", false).await;
    f.sync().await;
    f.sync().await;
    let second = f.pods();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].2, first, "the failed pod was replaced");
    f.set_phase(&second[0].2, "Failed", false).await;
    f.sync().await;
    assert_eq!(f.pods()[0].2, second[0].2, "within the back-off the failed pod stays");
    f.tc.clock.advance(Duration::from_secs(3));
    f.sync().await;
    f.sync().await;
    assert_ne!(f.pods()[0].2, second[0].2, "after the back-off it is replaced");
}

#[tokio::test]
async fn rolling_update_replaces_pods_node_by_node_within_max_unavailable() {
    let f = Fixture::new().await;
    for n in ["a", "b", "c"] {
        f.node(n, json!({}), json!([])).await;
    }
    let strategy = json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        "minReadySeconds": 10});
    f.tc.create("apps", "daemonsets", NS, ds_body(strategy, json!({}))).await;
    f.sync().await;
    f.ready_all().await;
    f.tc.clock.advance(Duration::from_secs(11));
    f.sync().await;
    let v1 = f.pods()[0].1.clone();
    assert_eq!(f.ds_status().await["numberAvailable"], 3);

    f.set_image("app:v2").await;
    f.sync().await;
    let after = f.pods();
    assert_eq!(after.len(), 2, "one old pod deleted: {after:?}");
    assert!(after.iter().all(|(n, h, _)| h == &v1 && n != "a"), "node a first");
    f.sync().await;
    let v2 = f.pods().iter().find(|(n, _, _)| n == "a").map(|p| p.1.clone()).expect("new pod on a");
    assert_ne!(v2, v1);
    // Not ready yet: nothing else moves.
    f.sync().await;
    assert_eq!(f.pods().iter().filter(|p| p.1 == v1).count(), 2);
    f.ready_all().await;
    f.sync().await;
    assert_eq!(f.pods().iter().filter(|p| p.1 == v1).count(), 2, "ready, but not for minReadySeconds yet");
    f.tc.clock.advance(Duration::from_secs(11));
    f.sync().await;
    assert_eq!(f.pods().iter().filter(|p| p.1 == v1).count(), 1, "then node b");
    for _ in 0..2 {
        f.sync().await;
        f.ready_all().await;
        f.tc.clock.advance(Duration::from_secs(11));
        f.sync().await;
    }
    f.sync().await;
    let pods = f.pods();
    assert!(pods.iter().all(|p| p.1 == v2) && pods.len() == 3, "{pods:?}");
    let s = f.ds_status().await;
    assert_eq!((s["updatedNumberScheduled"].clone(), s["numberAvailable"].clone()), (json!(3), json!(3)));
    assert_eq!(s["observedGeneration"], 2);
    let revs = f.revisions();
    assert_eq!(revs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(revs[1].1, format!("agent-{v2}"), "revisions are named <ds>-<hash>");
}

#[tokio::test]
async fn on_delete_updates_only_deleted_pods() {
    let f = Fixture::new().await;
    for n in ["a", "b"] {
        f.node(n, json!({}), json!([])).await;
    }
    f.tc.create("apps", "daemonsets", NS, ds_body(json!({"updateStrategy": {"type": "OnDelete"}}), json!({}))).await;
    f.sync().await;
    f.ready_all().await;
    let v1 = f.pods()[0].1.clone();
    f.set_image("app:v2").await;
    f.sync().await;
    f.sync().await;
    assert!(f.pods().iter().all(|p| p.1 == v1), "OnDelete leaves running pods alone");
    assert_eq!(f.ds_status().await["updatedNumberScheduled"], 0);
    let victim = f.pods()[0].clone();
    f.tc.delete("", "pods", NS, &victim.2, DeleteOptions::default()).await;
    f.sync().await;
    let pods = f.pods();
    let on_victim_node = pods.iter().find(|p| p.0 == victim.0).expect("recreated");
    assert_ne!(on_victim_node.1, v1, "the recreated pod has the new template");
    assert_eq!(pods.iter().filter(|p| p.1 == v1).count(), 1);
}

#[tokio::test]
async fn revisions_are_renumbered_on_rollback_and_trimmed() {
    let f = Fixture::new().await;
    f.node("a", json!({}), json!([])).await;
    f.tc.create(
        "apps",
        "daemonsets",
        NS,
        ds_body(json!({"revisionHistoryLimit": 1, "updateStrategy": {"type": "OnDelete"}}), json!({})),
    )
    .await;
    f.sync().await;
    let r1 = f.revisions();
    assert_eq!(r1.len(), 1);
    let rev = f.tc.get("apps", "controllerrevisions", NS, &r1[0].1).await.expect("revision");
    assert_eq!(rev["data"]["spec"]["template"]["$patch"], "replace");
    assert_eq!(rev["data"]["spec"]["template"]["spec"]["containers"][0]["image"], "app:v1");
    assert_eq!(rev["metadata"]["annotations"]["deprecated.daemonset.template.generation"], "1");
    assert_eq!(rev["metadata"]["labels"]["app"], "agent", "labels match the selector (kubectl rollout history)");
    assert_eq!(rev["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");

    f.set_image("app:v2").await;
    f.sync().await;
    f.set_image("app:v1").await;
    f.sync().await;
    let revs = f.revisions();
    assert_eq!(revs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 3], "v1 renumbered newest: {revs:?}");
    assert_eq!(revs[1].1, r1[0].1, "rolling back reuses the old snapshot");

    // Limit 1: a third template trims the oldest revision no pod uses (v2); v1's pods keep it.
    f.set_image("app:v3").await;
    f.sync().await;
    let revs = f.revisions();
    assert_eq!(revs.len(), 2, "{revs:?}");
    assert!(revs.iter().any(|r| r.1 == r1[0].1), "v1 still has a pod");
    assert_eq!(revs.last().map(|r| r.0), Some(4));
}
