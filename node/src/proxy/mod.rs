//! The service proxy of a node agent (kube-proxy's job, in-process): every Service's cluster
//! IP, node port and load-balancer port served on this node, each connection sent to a ready
//! backend.
//!
//! ```text
//! watch Services ────┐  changed     table::service_routes  ┌─ frontend task: listen while backends exist,
//! watch Slices ──────┼─ Services ──▶ routing::set ─ serve ─┤   accept, balance::pick, relay (splice, or
//! watch Deployments ─┘  (index)     (pure)                 └─ hand to a local WASM server: `local`)
//! ```
//!
//! Scale-to-zero (`wake`, `scaler`): a Service in front of a Deployment annotated
//! `skiff.dev/scale-to-zero: "true"` keeps its frontends listening with no ready backend; a
//! connection arriving then is held while the agent scales the Deployment from zero, and
//! the agent reports traffic on the Deployment so the control plane can scale it back down.
//!
//! What it owns: following Services, EndpointSlices and Deployments of all namespaces
//! (kube-runtime reflectors), turning them into the routing table (`table`, pure, per Service;
//! `routing` keeps it up to date one changed Service at a time, `index` finds a Service's
//! slices, so an event costs the same with 10 or 10,000 Services), and keeping one owned
//! task per TCP frontend (`listener`) in step with it — started when a Service port appears,
//! given new backends in place (the balancer's rotation and client affinity carry on), stopped
//! when it goes. What it does not: allocate cluster IPs or node ports (the API server does),
//! publish endpoints (the control plane's controllers do), or make cluster IPs local addresses
//! (`bridge::HostNet` does, in bridge mode). TCP ports are served by `listener`, UDP ports by
//! `udp` (a flow per client, as conntrack keeps); SCTP ports are not served (logged once).

mod balance;
mod index;
mod listener;
mod local;
mod routing;
mod scaler;
mod table;
#[cfg(test)]
mod tests;
mod udp;
mod wake;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use balance::Balancer;
pub use local::LocalHttp;
pub use table::{DEFAULT_AFFINITY_TIMEOUT, Frontend, Kind, Placement, Protocol, Route, Skipped, Table};

use index::SliceIndex;
use listener::Shared;
use routing::{Routing, ServiceKey};
use scaler::Scaler;
use skiff_api::scale_to_zero;
use table::ServiceRoutes;

use crate::events::EventRecorder;

/// One watch event, from whichever watch.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one event at a time, moved straight into `note`")]
enum Change {
    Service(watcher::Event<Service>),
    Slice(watcher::Event<EndpointSlice>),
    Deployment(watcher::Event<Deployment>),
}

/// What the watches have said since the table was last brought up to date.
#[derive(Debug, Default)]
struct Pending {
    listed_services: bool,
    listed_slices: bool,
    listed_deployments: bool,
    /// Everything must be looked at again (first list, or a re-list).
    all: bool,
    /// Slices were re-listed: the index starts over from the store.
    reindex: bool,
    services: HashSet<ServiceKey>,
    /// Namespaces whose Services may wake a changed Deployment.
    namespaces: HashSet<String>,
}

impl Pending {
    fn listed(&self) -> bool {
        self.listed_services && self.listed_slices && self.listed_deployments
    }
}

/// Runs the proxy until `shutdown` fires; events about Deployments scaled from zero go to
/// `events`.
pub async fn run(
    client: kube::Client,
    placement: Placement,
    local: Arc<LocalHttp>,
    events: EventRecorder,
    shutdown: CancellationToken,
) {
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let (deployments, deploy_writer) = reflector::store::<Deployment>();
    let svc_events =
        reflector::reflector(svc_writer, watcher(Api::<Service>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .map_ok(Change::Service);
    let slice_events = reflector::reflector(
        slice_writer,
        watcher(Api::<EndpointSlice>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map_ok(Change::Slice);
    let deploy_events = reflector::reflector(
        deploy_writer,
        watcher(Api::<Deployment>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map_ok(Change::Deployment);
    let mut events_in = futures::stream::select_all([svc_events.boxed(), slice_events.boxed(), deploy_events.boxed()]);
    let scaler = Arc::new(Scaler::new(client, events, deployments.clone()));
    let mut proxy = Proxy::new(placement, local, Arc::clone(&scaler), shutdown.clone());
    proxy.tasks.spawn(scaler.report(shutdown.clone()));
    let stores = Stores { services, slices, deployments };
    let mut pending = Pending::default();
    info!(?placement, "service proxy started");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = proxy.tasks.join_next(), if !proxy.tasks.is_empty() => {}
            event = events_in.next() => match event {
                None => break,
                Some(event) => proxy.note(event, &mut pending),
            },
        }
        // Take whatever else is already there before updating: one pass per burst.
        while let Some(Some(event)) = events_in.next().now_or_never() {
            proxy.note(event, &mut pending);
        }
        if pending.listed() {
            proxy.update(&stores, &mut pending);
        }
    }
    // Frontend tokens are children of `shutdown`: every task ends; wait for them.
    while proxy.tasks.join_next().await.is_some() {}
    info!("service proxy stopped");
}

/// The reflectors' copies of what the proxy follows.
struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    deployments: Store<Deployment>,
}

/// A frontend being served.
#[derive(Debug)]
struct Served {
    shared: Arc<Shared>,
    route: Route,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Proxy {
    placement: Placement,
    local: Arc<LocalHttp>,
    scaler: Arc<Scaler>,
    shutdown: CancellationToken,
    routing: Routing,
    index: SliceIndex,
    /// Scale-to-zero Deployments as last seen (namespace, name): a change to one, or one
    /// opting out, touches its namespace's Services.
    opted_in: HashSet<(String, String)>,
    served: HashMap<Frontend, Served>,
    tasks: JoinSet<()>,
    /// Reasons already logged (each is said once, not on every update).
    logged: HashSet<String>,
}

impl Proxy {
    fn new(placement: Placement, local: Arc<LocalHttp>, scaler: Arc<Scaler>, shutdown: CancellationToken) -> Proxy {
        Proxy {
            placement,
            local,
            scaler,
            shutdown,
            routing: Routing::default(),
            index: SliceIndex::default(),
            opted_in: HashSet::new(),
            served: HashMap::new(),
            tasks: JoinSet::new(),
            logged: HashSet::new(),
        }
    }

    /// Records what a watch event changed (the reflector has already stored it).
    fn note(&mut self, event: Result<Change, watcher::Error>, pending: &mut Pending) {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                warn!(%error, "service proxy watch failed; retrying");
                return;
            }
        };
        match event {
            Change::Service(watcher::Event::Apply(svc) | watcher::Event::Delete(svc)) => {
                pending.services.insert(key(&svc.metadata));
            }
            Change::Service(watcher::Event::InitDone) => {
                pending.listed_services = true;
                pending.all = true;
            }
            Change::Slice(watcher::Event::Apply(slice)) => pending.services.extend(self.index.apply(&slice)),
            Change::Slice(watcher::Event::Delete(slice)) => pending.services.extend(self.index.delete(&slice)),
            Change::Slice(watcher::Event::InitDone) => {
                pending.listed_slices = true;
                pending.reindex = true;
                pending.all = true;
            }
            Change::Deployment(event) => self.note_deployment(event, pending),
            Change::Service(_) | Change::Slice(_) => {}
        }
    }

    /// A Deployment that is or was opted in to scale-to-zero touches its namespace's Services.
    fn note_deployment(&mut self, event: watcher::Event<Deployment>, pending: &mut Pending) {
        let (d, exists) = match event {
            watcher::Event::Apply(d) => (d, true),
            watcher::Event::Delete(d) => (d, false),
            watcher::Event::InitDone => {
                pending.listed_deployments = true;
                pending.all = true;
                return;
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => return,
        };
        let id = key(&d.metadata);
        let now = exists
            && d.metadata.deletion_timestamp.is_none()
            && matches!(scale_to_zero::parse(d.metadata.annotations.as_ref()), Ok(Some(_)));
        let before = if now { !self.opted_in.insert(id.clone()) } else { self.opted_in.remove(&id) };
        if now || before {
            pending.namespaces.insert(id.0);
        }
    }

    /// Brings the served frontends in line with what changed.
    fn update(&mut self, stores: &Stores, pending: &mut Pending) {
        if pending.reindex {
            self.index.reset(&stores.slices.state());
        }
        let mut dirty = std::mem::take(&mut pending.services);
        if pending.all {
            self.opted_in = stores
                .deployments
                .state()
                .iter()
                .filter(|d| matches!(scale_to_zero::parse(d.metadata.annotations.as_ref()), Ok(Some(_))))
                .map(|d| key(&d.metadata))
                .collect();
            dirty.extend(stores.services.state().iter().map(|s| key(&s.metadata)));
            dirty.extend(self.routing.keys().cloned());
        } else if !pending.namespaces.is_empty() {
            let namespaces = &pending.namespaces;
            dirty.extend(
                stores.services.state().iter().map(|s| key(&s.metadata)).filter(|(ns, _)| namespaces.contains(ns)),
            );
        }
        pending.all = false;
        pending.reindex = false;
        pending.namespaces.clear();
        if dirty.is_empty() {
            return;
        }
        let deployments = stores.deployments.state();
        let mut touched = Vec::new();
        for service_key in dirty {
            let (ns, name) = &service_key;
            let routes = match stores.services.get(&ObjectRef::new(name).within(ns)) {
                Some(svc) => {
                    let mine: Vec<Arc<EndpointSlice>> = self
                        .index
                        .slices_of(&service_key)
                        .filter_map(|slice| stores.slices.get(&ObjectRef::new(slice).within(ns)))
                        .collect();
                    let mine: Vec<&EndpointSlice> = mine.iter().map(AsRef::as_ref).collect();
                    table::service_routes(&svc, &mine, &deployments, &self.placement)
                }
                None => ServiceRoutes::default(),
            };
            touched.extend(self.routing.set(service_key.clone(), routes));
            self.log_skipped(&service_key);
        }
        touched.sort();
        touched.dedup();
        for frontend in touched {
            self.serve(frontend);
        }
    }

    /// Brings one frontend in line with the routing table: started, given new backends,
    /// or stopped.
    fn serve(&mut self, frontend: Frontend) {
        let Some(route) = self.routing.route(&frontend) else {
            if let Some(served) = self.served.remove(&frontend) {
                info!(%frontend, service = %served.route.service, "Service frontend removed");
                served.stop.cancel();
            }
            return;
        };
        if frontend.protocol == Protocol::Sctp {
            let reason = format!("{} {frontend}: SCTP Service ports are not served", route.service);
            if self.logged.insert(reason.clone()) {
                warn!("{reason}");
            }
            return;
        }
        match self.served.get_mut(&frontend) {
            Some(served) if served.route == *route => {}
            Some(served) => {
                debug!(%frontend, backends = ?route.backends, "Service backends changed");
                let (backends, affinity) = (route.backends.clone(), route.affinity);
                served.shared.update(|b| b.update(backends, affinity), route.wake.clone());
                served.route = route.clone();
            }
            None => {
                info!(%frontend, service = %route.service, kind = ?route.kind, backends = route.backends.len(), "Service frontend added");
                let shared = Shared::new(Balancer::new(route.backends.clone(), route.affinity), route.wake.clone());
                let stop = self.shutdown.child_token();
                if frontend.protocol == Protocol::Udp {
                    self.tasks.spawn(udp::run(frontend, Arc::clone(&shared), stop.clone()));
                } else {
                    self.tasks.spawn(listener::run(
                        frontend,
                        Arc::clone(&shared),
                        Arc::clone(&self.local),
                        Arc::clone(&self.scaler),
                        stop.clone(),
                        self.shutdown.clone(),
                    ));
                }
                self.served.insert(frontend, Served { shared, route: route.clone(), stop });
            }
        }
    }

    fn log_skipped(&mut self, service: &ServiceKey) {
        for skipped in self.routing.skipped(service) {
            match &skipped {
                Skipped::NotLocal { service, .. } => {
                    if self.logged.insert("not-local".into()) {
                        info!("cluster IPs are not served on this node: {skipped}");
                    }
                    debug!(%service, "cluster IP not served here");
                }
                Skipped::Taken { .. } => {
                    if self.logged.insert(skipped.to_string()) {
                        warn!("{skipped}");
                    }
                }
            }
        }
    }
}

/// An object's namespace and name.
fn key(meta: &ObjectMeta) -> ServiceKey {
    (table::namespace(meta).to_owned(), meta.name.clone().unwrap_or_default())
}
