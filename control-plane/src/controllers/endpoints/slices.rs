//! The EndpointSlice controller (kube-controller-manager's `endpointslice` controller): for
//! every Service with a selector it keeps discovery.k8s.io/v1 slices named `<svc>-<random>`
//! (labelled with the Service name and this manager, owned by the Service) holding one
//! endpoint per selected pod with an IP — terminating pods included, with `ready`, `serving`
//! and `terminating` conditions — placed by [`super::placement`] and written only on change.
//!
//! A selector-less Service's own Endpoints object is mirrored into slices managed by the
//! mirroring controller's name ([`super::mirror`]), so proxies find its manual addresses too.
//!
//! A lagging slice cache must not make it create a slice twice: after its writes it waits
//! until the cache shows them ([`Tracker`], Kubernetes' `endpointSliceTracker`).
//!
//! Not here: IPv6 / dual-stack slices (`addressType: IPv4` only), topology hints, and
//! dropping pods whose Node is unknown (Kubernetes skips them; here they are listed).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use serde_json::{Value, json};
use tracing::instrument;

use super::addresses::{self, MANAGED_BY, MANAGED_BY_LABEL, PortKey, SERVICE_NAME_LABEL};
use super::mirror::{self, MIRROR_MANAGED_BY};
use super::placement::{self, Existing, MAX_ENDPOINTS_PER_SLICE, Planned};
use crate::apiserver::error::ApiError;
use crate::controllers::events::{self, EventType};
use crate::controllers::informer::{Change, key_of};
use crate::controllers::owner::{controller_reference, labels_of};
use crate::controllers::workqueue::WorkQueue;
use crate::controllers::{Context, Ctx, Reconcile, ReconcileError, info};
use crate::registry::rest::{DeleteOptions, WriteOptions};

/// The node label carrying a node's zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// How long an unobserved write holds a Service back (in case an observation is missed).
const TRACKER_TTL: Duration = Duration::from_secs(30);
/// How soon a Service waiting for its cache is looked at again.
const STALE_RETRY: Duration = Duration::from_millis(100);

/// What the controller last wrote per Service: slice name → the revision written (`None`
/// for a delete), so a pass is held back until the cache has seen it.
#[derive(Debug, Clone, Default)]
struct Tracker {
    inner: Arc<Mutex<HashMap<String, Written>>>,
}

/// When a Service's slices were last written, and each slice's written revision.
type Written = (Instant, HashMap<String, Option<u64>>);

impl Tracker {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Written>) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn record(&self, svc: &str, slice: &str, revision: Option<u64>) {
        self.with(|m| {
            let entry = m.entry(svc.to_string()).or_insert_with(|| (Instant::now(), HashMap::new()));
            entry.0 = Instant::now();
            entry.1.insert(slice.to_string(), revision);
        });
    }

    /// True when the cache shows every write recorded for `svc` (or they are too old).
    fn observed(&self, svc: &str, ns: &str, cache: &crate::controllers::informer::Informer<EndpointSlice>) -> bool {
        self.with(|m| {
            let Some((at, writes)) = m.get(svc) else { return true };
            let seen = at.elapsed() > TRACKER_TTL
                || writes.iter().all(|(name, rv)| {
                    let cached = cache.get(&format!("{ns}/{name}"));
                    let cached_rv = cached.and_then(|s| s.metadata.resource_version.as_deref()?.parse::<u64>().ok());
                    match rv {
                        None => cached_rv.is_none(),
                        Some(rv) => cached_rv.is_some_and(|c| c >= *rv),
                    }
                });
            if seen {
                m.remove(svc);
            }
            seen
        })
    }
}

/// The EndpointSlice controller; keys are `ns/name` of Services.
#[derive(Debug, Clone)]
pub struct EndpointSliceController {
    ctx: Ctx,
    queue: WorkQueue,
    tracker: Tracker,
}

/// The Service key of a slice this controller manages (selected or mirrored).
pub(crate) fn service_key(slice: &EndpointSlice) -> Option<String> {
    let labels = labels_of(&slice.metadata);
    if !matches!(labels.get(MANAGED_BY_LABEL).map(String::as_str), Some(MANAGED_BY | MIRROR_MANAGED_BY)) {
        return None;
    }
    let svc = labels.get(SERVICE_NAME_LABEL)?;
    Some(format!("{}/{svc}", slice.metadata.namespace.as_deref().unwrap_or_default()))
}

/// The slice endpoint of a pod (Kubernetes' `podToEndpoint`).
fn endpoint(svc: &Service, pod: &Pod, ip: &str, zone: Option<String>) -> Endpoint {
    let serving = addresses::counts_ready(svc, pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = addresses::publish_not_ready(svc) || (serving && !terminating);
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: addresses::hostname(svc, pod),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(addresses::target_ref(pod)),
        zone,
        ..Endpoint::default()
    }
}

fn slice_ports(ports: &[PortKey]) -> Vec<EndpointPort> {
    ports
        .iter()
        .map(|(name, port, protocol, app)| EndpointPort {
            name: Some(name.clone()),
            port: Some(*port),
            protocol: Some(protocol.clone()),
            app_protocol: app.clone(),
        })
        .collect()
}

fn port_keys(slice: &EndpointSlice) -> Vec<PortKey> {
    let mut keys: Vec<PortKey> = (slice.ports.iter().flatten())
        .map(|p| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            (p.name.clone().unwrap_or_default(), p.port.unwrap_or_default(), protocol, p.app_protocol.clone())
        })
        .collect();
    keys.sort();
    keys
}

impl EndpointSliceController {
    /// Creates the controller and subscribes it to Services, pods and its own slices.
    pub fn new(ctx: &Ctx) -> Self {
        let c = EndpointSliceController { ctx: ctx.clone(), queue: WorkQueue::new(), tracker: Tracker::default() };
        // Each reconcile reads one Service's slices: indexed, not a scan of every slice.
        ctx.inf.endpoint_slices.set_index(service_key);
        let q = c.queue.clone();
        ctx.inf.services.subscribe(move |change| q.add(&key_of(&change.object().metadata)));
        let (q, ctx2) = (c.queue.clone(), ctx.clone());
        ctx.inf.pods.subscribe(move |change| super::enqueue_services_of_pod(&ctx2, &q, change));
        // A selector-less Service's Endpoints is mirrored.
        let (q, ctx2) = (c.queue.clone(), ctx.clone());
        ctx.inf.endpoints.subscribe(move |change: &Change<Endpoints>| {
            let key = key_of(&change.object().metadata);
            if ctx2.inf.services.get(&key).is_none_or(|svc| addresses::selector(&svc).is_none()) {
                q.add(&key);
            }
        });
        // A managed slice edited or deleted by someone else is put right.
        let q = c.queue.clone();
        ctx.inf.endpoint_slices.subscribe(move |change: &Change<EndpointSlice>| {
            if let Some(key) = service_key(change.object()) {
                q.add(&key);
            }
        });
        c
    }

    /// The endpoints the Service should have, per port set.
    fn desired(&self, svc: &Service) -> BTreeMap<Vec<PortKey>, Vec<Endpoint>> {
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let mut out: BTreeMap<Vec<PortKey>, Vec<Endpoint>> = BTreeMap::new();
        for pod in self.ctx.inf.pods.list_namespace(ns) {
            if !addresses::selects(svc, &pod) || !addresses::should_be_in_endpoints(&pod, true) {
                continue;
            }
            let Some(ip) = addresses::pod_ip(&pod) else { continue };
            let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| self.ctx.inf.nodes.get(n));
            let zone = node.and_then(|n| labels_of(&n.metadata).get(ZONE_LABEL).cloned());
            out.entry(addresses::resolve_ports(svc, &pod)).or_default().push(endpoint(svc, &pod, ip, zone));
        }
        for eps in out.values_mut() {
            eps.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        }
        out
    }

    /// Deletes one slice, recording the delete for the [`Tracker`].
    async fn delete(&self, key: &str, ns: &str, name: &str) -> Result<(), ApiError> {
        let opts = DeleteOptions::default();
        match self.ctx.registry.delete(info("discovery.k8s.io", "endpointslices"), Some(ns), name, &opts).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {
                self.tracker.record(key, name, None);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates or updates one planned slice, labelled `labels`, when it differs from `current`.
    async fn write(
        &self,
        key: &str,
        svc: &Service,
        (p, labels): (&Planned, &BTreeMap<String, String>),
        current: Option<&EndpointSlice>,
    ) -> Result<(), ApiError> {
        let owner = controller_reference("v1", "Service", &svc.metadata);
        let ports = slice_ports(&p.ports);
        if let Some(cur) = current {
            let same = cur.endpoints == p.endpoints
                && cur.ports.clone().unwrap_or_default() == ports
                && labels_of(&cur.metadata) == labels
                && cur.metadata.owner_references.as_deref() == Some(std::slice::from_ref(&owner));
            if same {
                return Ok(());
            }
        }
        let ns = svc.metadata.namespace.as_deref();
        let (labels, owner, ports, eps) = (json!(labels), json!([owner]), json!(ports), json!(p.endpoints));
        let slices = info("discovery.k8s.io", "endpointslices");
        let written = match &p.name {
            None => {
                let prefix = format!("{}-", svc.metadata.name.as_deref().unwrap_or_default());
                let body = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"generateName": prefix, "namespace": ns, "labels": labels, "ownerReferences": owner},
                    "addressType": "IPv4", "ports": ports, "endpoints": eps});
                self.ctx.registry.create(slices, ns, body, WriteOptions::default()).await?
            }
            Some(name) => {
                let edit = |old: &Value| {
                    let mut new = old.clone();
                    new["metadata"]["labels"] = labels.clone();
                    new["metadata"]["ownerReferences"] = owner.clone();
                    new["ports"] = ports.clone();
                    new["endpoints"] = eps.clone();
                    Ok(new)
                };
                let opts = WriteOptions::default();
                self.ctx.registry.update_with(slices, ns, name, None, opts, None, edit).await?
            }
        };
        let meta = &written.object["metadata"];
        let rv = meta["resourceVersion"].as_str().and_then(|r| r.parse().ok());
        self.tracker.record(key, meta["name"].as_str().unwrap_or_default(), rv);
        Ok(())
    }

    /// The labels of a selecting Service's slices.
    fn selected_labels(svc: &Service) -> BTreeMap<String, String> {
        let mut labels = addresses::endpoint_labels(svc);
        labels.insert(SERVICE_NAME_LABEL.into(), svc.metadata.name.clone().unwrap_or_default());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        labels
    }

    /// Brings a live Service's managed slices to `desired`, labelled `labels` (which name
    /// their manager: slices of the other manager go).
    async fn sync(
        &self,
        key: &str,
        svc: &Service,
        managed: Vec<Arc<EndpointSlice>>,
        desired: BTreeMap<Vec<PortKey>, Vec<Endpoint>>,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let uid = svc.metadata.uid.as_deref();
        // Slices of an earlier Service of the same name, or of the other manager, go.
        let (mine, stale): (Vec<_>, Vec<_>) = managed.into_iter().partition(|s| {
            let owner = s.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true));
            let same_manager = labels_of(&s.metadata).get(MANAGED_BY_LABEL) == labels.get(MANAGED_BY_LABEL);
            same_manager && owner.is_none_or(|o| Some(o.uid.as_str()) == uid)
        });
        let existing = mine
            .iter()
            .map(|s| Existing {
                name: s.metadata.name.clone().unwrap_or_default(),
                ports: port_keys(s),
                endpoints: s.endpoints.clone(),
            })
            .collect();
        let plan = placement::plan(desired, existing, MAX_ENDPOINTS_PER_SLICE);
        for p in &plan.slices {
            let current = p.name.as_ref().and_then(|n| mine.iter().find(|s| s.metadata.name.as_ref() == Some(n)));
            self.write(key, svc, (p, labels), current.map(|s| s.as_ref())).await?;
        }
        let stale = stale.iter().filter_map(|s| s.metadata.name.clone());
        for name in plan.delete.into_iter().chain(stale) {
            self.delete(key, ns, &name).await?;
        }
        Ok(())
    }
}

impl Reconcile for EndpointSliceController {
    const NAME: &'static str = "endpointslice";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    #[instrument(level = "debug", skip(self), fields(controller = Self::NAME))]
    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        if !self.tracker.observed(key, ns, &self.ctx.inf.endpoint_slices) {
            self.queue.add_after(key, STALE_RETRY);
            return Ok(());
        }
        let managed = self.ctx.inf.endpoint_slices.by_index(key);
        let svc = self.ctx.inf.services.get(key).filter(|s| s.metadata.deletion_timestamp.is_none());
        let wanted = svc.as_ref().and_then(|svc| {
            if addresses::selector(svc).is_some() {
                return Some((self.desired(svc), Self::selected_labels(svc)));
            }
            if svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
                return None;
            }
            let endpoints = self.ctx.inf.endpoints.get(key).filter(|e| mirror::mirrored(e))?;
            Some((mirror::desired(&endpoints), mirror::labels(&endpoints, name)))
        });
        let (Some(svc), Some((desired, labels))) = (svc, wanted) else {
            // Deleted, or neither selecting nor mirrored: no managed slices (the garbage
            // collector would also remove them through the owner reference).
            for s in &managed {
                let slice = s.metadata.name.as_deref().unwrap_or_default();
                self.delete(key, ns, slice).await.context(|| format!("deleting EndpointSlice {ns}/{slice}"))?;
            }
            return Ok(());
        };
        if let Err(e) = self.sync(key, &svc, managed, desired, &labels).await {
            let involved = events::reference("v1", "Service", &svc.metadata);
            let message = format!("Error updating Endpoint Slices for Service {key}: {e}");
            let reg = &self.ctx.registry;
            events::record(
                reg,
                "endpoint-slice-controller",
                &involved,
                EventType::Warning,
                "FailedToUpdateEndpointSlices",
                &message,
            )
            .await;
            return Err(e).context(|| format!("syncing EndpointSlices of Service {name} in {ns}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::informer::Informer;

    #[test]
    fn the_tracker_holds_a_service_back_until_its_writes_are_cached() {
        // Never run: the cache stays empty, as one lagging behind a create.
        let cache: Informer<EndpointSlice> = Informer::new(info("discovery.k8s.io", "endpointslices"));
        let t = Tracker::default();
        assert!(t.observed("default/web", "default", &cache), "nothing written, nothing to wait for");
        t.record("default/web", "web-abcde", Some(7));
        assert!(!t.observed("default/web", "default", &cache), "the created slice is not cached yet");
        assert!(t.observed("default/other", "default", &cache), "other Services are not held back");
        // A delete is observed once the cache no longer holds the slice.
        let t = Tracker::default();
        t.record("default/web", "web-gone1", None);
        assert!(t.observed("default/web", "default", &cache));
    }
}
