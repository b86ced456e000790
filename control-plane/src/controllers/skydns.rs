//! The SkyDNS publisher: keeps SkyDNS-format records of every Service under
//! `/skydns/local/cluster/svc/<ns>/<name>` in the store (raw keys, beside the API objects; with
//! etcd at its root), so that SkyDNS-era tooling or CoreDNS's `etcd` plugin pointed at the same
//! etcd serves the names the node agents' DNS servers serve. The records themselves are
//! computed by [`skiff_dns::skydns_records`]; this controller only diffs and writes them.
//!
//! Keys are `ns/name` of Services, enqueued by Service and Endpoints changes (headless Services
//! publish one record per ready endpoint). A deleted Service loses its keys; a sweep after the
//! caches sync enqueues the Services of keys already in the store, so keys of Services deleted
//! while the control plane was down go too. Not here: pod (`a-b-c-d.ns.pod`) or reverse
//! records, which the SkyDNS format has no convention for.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Endpoints;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument, warn};

use super::informer::key_of;
use super::workqueue::WorkQueue;
use super::{Ctx, Reconcile, ReconcileError};
use crate::storage::StoreError;

/// The cluster zone the records are published for.
const ZONE: &str = "cluster.local";

/// The SkyDNS publisher; keys are `ns/name` of Services.
#[derive(Debug, Clone)]
pub struct SkyDnsController {
    ctx: Ctx,
    queue: WorkQueue,
}

fn store_error(what: impl Into<String>) -> impl FnOnce(StoreError) -> ReconcileError {
    let what = what.into();
    move |source| ReconcileError::Store { what, source }
}

/// The prefix every Service's keys are under (`/skydns/local/cluster/svc/`).
fn services_prefix() -> String {
    let key = skiff_dns::service_key(ZONE, "ns", "name");
    key.trim_end_matches("ns/name").to_owned()
}

/// `ns/name` of the Service a raw key belongs to.
fn service_of(key: &str, prefix: &str) -> Option<String> {
    let mut parts = key.strip_prefix(prefix)?.split('/');
    let (ns, name) = (parts.next()?, parts.next()?);
    (!ns.is_empty() && !name.is_empty()).then(|| format!("{ns}/{name}"))
}

impl SkyDnsController {
    /// Creates the controller and subscribes it to Services and Endpoints.
    pub fn new(ctx: &Ctx) -> Self {
        let c = SkyDnsController { ctx: ctx.clone(), queue: WorkQueue::new() };
        let q = c.queue.clone();
        ctx.inf.services.subscribe(move |change| q.add(&key_of(&change.object().metadata)));
        let q = c.queue.clone();
        ctx.inf.endpoints.subscribe(move |change| q.add(&key_of(&change.object().metadata)));
        c
    }

    /// Once the caches have synced, enqueues the Service of every key already published, so
    /// that keys of Services deleted meanwhile are removed.
    pub async fn sweep(self, cancel: CancellationToken) {
        if !self.ctx.inf.wait_synced(&cancel).await {
            return;
        }
        let prefix = services_prefix();
        match self.ctx.registry.store().list_raw(&prefix).await {
            Ok(keys) => {
                let mut services: Vec<String> = keys.iter().filter_map(|(k, _)| service_of(k, &prefix)).collect();
                services.dedup();
                debug!(services = services.len(), "SkyDNS sweep: published Services re-checked");
                for service in services {
                    self.queue.add(&service);
                }
            }
            Err(error) => warn!(%error, "SkyDNS sweep: listing the published records failed"),
        }
    }

    /// The keys published now for the Service `ns/name` (its own key and those below it).
    async fn published(&self, ns: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, ReconcileError> {
        let own = skiff_dns::service_key(ZONE, ns, name);
        let below = format!("{own}/");
        let keys = self
            .ctx
            .registry
            .store()
            .list_raw(&own)
            .await
            .map_err(store_error(format!("listing SkyDNS records of {ns}/{name}")))?;
        // The prefix also matches `<name>2`: keep only the Service's own tree.
        Ok(keys.into_iter().filter(|(k, _)| *k == own || k.starts_with(&below)).collect())
    }
}

impl Reconcile for SkyDnsController {
    const NAME: &'static str = "skydns";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    #[instrument(level = "debug", skip(self), fields(controller = Self::NAME))]
    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some((ns, name)) = key.split_once('/') else { return Ok(()) };
        let wanted: BTreeMap<String, Vec<u8>> = match self.ctx.inf.services.get(key) {
            Some(svc) if svc.metadata.deletion_timestamp.is_none() => {
                let endpoints = self.ctx.inf.endpoints.get(key);
                let endpoints = endpoints.as_deref().cloned().unwrap_or_else(Endpoints::default);
                skiff_dns::skydns_records_in_zone(&svc, &endpoints, ZONE)
                    .into_iter()
                    .map(|(k, v)| (k, v.to_string().into_bytes()))
                    .collect()
            }
            _ => BTreeMap::new(),
        };
        let published = self.published(ns, name).await?;
        let store = self.ctx.registry.store();
        for (k, v) in &wanted {
            if published.get(k) != Some(v) {
                store.put_raw(k, v.clone()).await.map_err(store_error(format!("writing SkyDNS record {k}")))?;
            }
        }
        for k in published.keys().filter(|k| !wanted.contains_key(*k)) {
            store.delete_raw(k).await.map_err(store_error(format!("deleting SkyDNS record {k}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::controllers::testing::TestCluster;
    use crate::registry::rest::DeleteOptions;

    async fn records(tc: &TestCluster) -> Vec<(String, Value)> {
        let raw = tc.registry().store().list_raw("/skydns/").await.expect("list");
        raw.into_iter().map(|(k, v)| (k, serde_json::from_slice(&v).expect("json"))).collect()
    }

    #[tokio::test]
    async fn services_are_published_and_deleted() {
        let tc = TestCluster::start().await;
        let c = SkyDnsController::new(&tc.ctx);
        let svc = |name: &str, ip: &str| {
            json!({"metadata": {"name": name}, "spec": {"clusterIP": ip,
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
        };
        tc.create("", "services", Some("default"), svc("web", "10.96.0.50")).await;
        tc.create("", "services", Some("default"), svc("web2", "10.96.0.51")).await;
        tc.create("", "services", Some("default"), svc("db", "None")).await;
        tc.create(
            "",
            "endpoints",
            Some("default"),
            json!({"metadata": {"name": "db"}, "subsets": [{
            "addresses": [{"ip": "10.244.0.7", "hostname": "db-0"}],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}),
        )
        .await;
        tc.settle().await;
        for key in ["default/web", "default/web2", "default/db"] {
            c.reconcile(key).await.expect("reconcile");
        }
        let published = records(&tc).await;
        assert_eq!(
            published,
            [
                (
                    "/skydns/local/cluster/svc/default/db/db-0".to_owned(),
                    json!({"host": "10.244.0.7", "port": 5432, "ttl": 30})
                ),
                (
                    "/skydns/local/cluster/svc/default/web".to_owned(),
                    json!({"host": "10.96.0.50", "port": 80, "ttl": 30})
                ),
                (
                    "/skydns/local/cluster/svc/default/web2".to_owned(),
                    json!({"host": "10.96.0.51", "port": 80, "ttl": 30})
                ),
            ]
        );
        // Reconciling again changes nothing; deleting `web` keeps `web2`.
        let revision = tc.registry().store().current_revision().await.expect("revision");
        c.reconcile("default/web").await.expect("reconcile");
        assert_eq!(tc.registry().store().current_revision().await.expect("revision"), revision, "no rewrite");
        tc.delete("", "services", Some("default"), "web", DeleteOptions::default()).await;
        tc.settle().await;
        c.reconcile("default/web").await.expect("reconcile");
        let keys: Vec<String> = records(&tc).await.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["/skydns/local/cluster/svc/default/db/db-0", "/skydns/local/cluster/svc/default/web2"]);
    }

    #[test]
    fn keys_name_their_service() {
        let prefix = services_prefix();
        assert_eq!(prefix, "/skydns/local/cluster/svc/");
        assert_eq!(service_of("/skydns/local/cluster/svc/d/web", &prefix).as_deref(), Some("d/web"));
        assert_eq!(service_of("/skydns/local/cluster/svc/d/db/db-0", &prefix).as_deref(), Some("d/db"));
        assert_eq!(service_of("/skydns/local/cluster/svc/d", &prefix), None);
        assert_eq!(service_of("/other/d/web", &prefix), None);
    }
}
