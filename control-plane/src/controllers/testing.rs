//! A cluster for controller unit tests: the real registry (validation, defaulting, conflicts,
//! finalizers) on an in-memory store, every informer running, and a fake clock — no files, no
//! HTTP, no node. Tests create objects, wait for the caches to see them, call a controller's
//! `reconcile` directly and read back what it wrote.
//!
//! ```ignore
//! let tc = TestCluster::start().await;
//! tc.create("apps", "deployments", "default", json!({...})).await;
//! let c = DeploymentController::new(&tc.ctx);
//! tc.settle().await;
//! c.reconcile("default/web").await?;
//! ```

use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Clock, ControllerConfig, Ctx, Informers, info};
use crate::registry::rest::{DeleteOptions, Registry, WriteOptions};
use crate::storage::SharedStore;
use crate::storage::embedded::EmbeddedStore;

/// The time a [`TestCluster`]'s fake clock starts at.
pub(crate) const EPOCH: &str = "2026-01-01T00:00:00Z";

/// An in-memory control plane without the API server (see the module docs).
#[derive(Debug)]
pub(crate) struct TestCluster {
    pub ctx: Ctx,
    pub clock: Clock,
    cancel: CancellationToken,
    _tasks: JoinSet<()>,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl TestCluster {
    /// Starts the store and the caches with default config and a fake clock at [`EPOCH`],
    /// creates the `default` namespace and waits until every cache has listed.
    pub async fn start() -> TestCluster {
        Self::start_with(ControllerConfig::default()).await
    }

    /// [`Self::start`] with chosen timings (the clock is replaced by the fake one).
    pub async fn start_with(mut config: ControllerConfig) -> TestCluster {
        let clock = Clock::fake(EPOCH.parse().expect("epoch parses"));
        config.clock = clock.clone();
        let store: SharedStore = std::sync::Arc::new(EmbeddedStore::in_memory().expect("in-memory store"));
        let registry = Registry::new(store.clone()).with_default_toleration(config.default_unreachable_toleration);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(registry.namespace_cache().run(store.clone(), cancel.clone()));
        // Written before the caches start: on an empty store a cache lists at revision 0 and
        // watches "from now", which could miss a write made in between.
        let default_ns = json!({"metadata": {"name": "default"}});
        registry.create(info("", "namespaces"), None, default_ns, WriteOptions::default()).await.expect("default ns");
        let ctx = Ctx { registry, inf: Informers::default(), config };
        ctx.inf.run_all(&store, &cancel, &mut tasks);
        let tc = TestCluster { ctx, clock, cancel, _tasks: tasks };
        let synced = tokio::time::timeout(Duration::from_secs(60), tc.ctx.inf.wait_synced(&tc.cancel)).await;
        assert_eq!(synced.ok(), Some(true), "caches sync");
        tc.settle().await;
        tc
    }

    /// The registry controllers write through.
    pub fn registry(&self) -> &Registry {
        &self.ctx.registry
    }

    /// The shared caches.
    pub fn inf(&self) -> &Informers {
        &self.ctx.inf
    }

    /// Creates an object of `group`/`plural` (v1) and returns it as stored.
    pub async fn create(&self, group: &str, plural: &str, ns: Option<&str>, body: Value) -> Value {
        let what = format!("creating {plural} {}", body["metadata"]["name"]);
        self.ctx.registry.create(info(group, plural), ns, body, WriteOptions::default()).await.expect(&what).object
    }

    /// Reads an object, `None` when it does not exist.
    pub async fn get(&self, group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        self.ctx.registry.get(info(group, plural), ns, name).await.ok()
    }

    /// Changes an object with `edit` (retrying on conflicts) and returns it as stored.
    pub async fn update(
        &self,
        group: &str,
        plural: &str,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        edit: impl Fn(&mut Value) + Send + Sync,
    ) -> Value {
        self.ctx
            .registry
            .update_with(info(group, plural), ns, name, subresource, WriteOptions::default(), None, |old| {
                let mut new = old.clone();
                edit(&mut new);
                Ok(new)
            })
            .await
            .expect("update")
            .object
    }

    /// Deletes an object with `opts`.
    pub async fn delete(&self, group: &str, plural: &str, ns: Option<&str>, name: &str, opts: DeleteOptions) {
        self.ctx.registry.delete(info(group, plural), ns, name, &opts).await.expect("delete");
    }

    /// Waits until every cache has caught up with every write made so far (compares each
    /// cache with a live list), so a `reconcile` afterwards sees them.
    pub async fn settle(&self) {
        // Generous: unit tests run in parallel with everything else on a small, shared machine.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let store = self.ctx.registry.store();
        while let Some(cache) = self.ctx.inf.lagging(store).await.expect("listing the store") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the {cache} cache did not catch up with the store in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::deployment::DeploymentController;

    #[tokio::test]
    async fn a_reconcile_sees_settled_writes_and_the_clock_is_fake() {
        let tc = TestCluster::start().await;
        assert_eq!(tc.clock.now(), EPOCH.parse().expect("epoch"));
        let c = DeploymentController::new(&tc.ctx);
        tc.create(
            "apps",
            "deployments",
            Some("default"),
            json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        )
        .await;
        tc.settle().await;
        assert!(tc.inf().deployments.get("default/web").is_some(), "settle waits for the cache");
        c.reconcile("default/web").await.expect("reconcile");
        tc.settle().await;
        let rs = tc.inf().replicasets.list_namespace("default");
        assert_eq!(rs.len(), 1, "one ReplicaSet for the template");
        assert_eq!(rs[0].spec.as_ref().and_then(|s| s.replicas), Some(2));
        tc.update("apps", "deployments", Some("default"), "web", None, |d| d["spec"]["replicas"] = json!(3)).await;
        tc.settle().await;
        c.reconcile("default/web").await.expect("reconcile");
        tc.settle().await;
        let rs = tc.inf().replicasets.list_namespace("default");
        assert_eq!(rs[0].spec.as_ref().and_then(|s| s.replicas), Some(3), "scaled with the Deployment");
        tc.delete("apps", "deployments", Some("default"), "web", DeleteOptions::default()).await;
        tc.settle().await;
        assert!(tc.get("apps", "deployments", Some("default"), "web").await.is_none());
    }
}
