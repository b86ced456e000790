//! The service proxy of a node agent (kube-proxy's job, in-process): every Service's cluster
//! IP, node port and load-balancer port served on this node, each connection sent to a ready
//! backend.
//!
//! ```text
//! watch Services ────┐                          ┌─ frontend task: listen while backends exist,
//! watch Slices ──────┼─ table::build ─ apply ───┤   accept, balance::pick, relay (splice, or
//! watch Deployments ─┘   (pure)        (diff)   └─ hand to a local WASM server: `local`)
//! ```
//!
//! Scale-to-zero (`wake`, `scaler`): a Service in front of a Deployment annotated
//! `skiff.dev/scale-to-zero: "true"` keeps its frontends listening with no ready backend; a
//! connection arriving then is held while the agent scales the Deployment from zero, and
//! the agent reports traffic on the Deployment so the control plane can scale it back down.
//!
//! What it owns: following Services, EndpointSlices and Deployments of all namespaces
//! (kube-runtime reflectors), turning them into the routing table (`table`, pure), and keeping one owned
//! task per TCP frontend (`listener`) in step with it — started when a Service port appears,
//! given new backends in place (the balancer's rotation and client affinity carry on), stopped
//! when it goes. What it does not: allocate cluster IPs or node ports (the API server does),
//! publish endpoints (the control plane's controllers do), or make cluster IPs local addresses
//! (`bridge::HostNet` does, in bridge mode). UDP and SCTP Service ports are not served yet
//! (logged once).

mod balance;
mod listener;
mod local;
mod scaler;
mod table;
#[cfg(test)]
mod tests;
mod wake;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use balance::Balancer;
pub use local::LocalHttp;
pub use table::{DEFAULT_AFFINITY_TIMEOUT, Frontend, Kind, Placement, Protocol, Route, Skipped, Table};

use listener::Shared;
use scaler::Scaler;

use crate::events::EventRecorder;

/// Which watch an event came from, and whether it ended a (re-)list.
#[derive(Debug, Clone, Copy)]
enum Source {
    Services { listed: bool },
    Slices { listed: bool },
    Deployments { listed: bool },
}

/// Which watches have listed once (the table is built only when all have).
#[derive(Debug, Default)]
struct Listed {
    services: bool,
    slices: bool,
    deployments: bool,
}

impl Listed {
    fn all(&self) -> bool {
        self.services && self.slices && self.deployments
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
            .map_ok(|e| Source::Services { listed: matches!(e, watcher::Event::InitDone) });
    let slice_events = reflector::reflector(
        slice_writer,
        watcher(Api::<EndpointSlice>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map_ok(|e| Source::Slices { listed: matches!(e, watcher::Event::InitDone) });
    let deploy_events = reflector::reflector(
        deploy_writer,
        watcher(Api::<Deployment>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map_ok(|e| Source::Deployments { listed: matches!(e, watcher::Event::InitDone) });
    let mut events_in = futures::stream::select_all([svc_events.boxed(), slice_events.boxed(), deploy_events.boxed()]);
    let scaler = Arc::new(Scaler::new(client, events, deployments.clone()));
    let mut proxy = Proxy::new(placement, local, Arc::clone(&scaler), shutdown.clone());
    proxy.tasks.spawn(scaler.report(shutdown.clone()));
    let mut listed = Listed::default();
    info!(?placement, "service proxy started");
    loop {
        let mut dirty = false;
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = proxy.tasks.join_next(), if !proxy.tasks.is_empty() => {}
            event = events_in.next() => match event {
                None => break,
                Some(event) => dirty |= note(event, &mut listed),
            },
        }
        // Take whatever else is already there before rebuilding: one pass per burst.
        while let Some(Some(event)) = events_in.next().now_or_never() {
            dirty |= note(event, &mut listed);
        }
        if dirty && listed.all() {
            proxy.apply(&table::build(&services.state(), &slices.state(), &deployments.state(), &proxy.placement));
        }
    }
    // Frontend tokens are children of `shutdown`: every task ends; wait for them.
    while proxy.tasks.join_next().await.is_some() {}
    info!("service proxy stopped");
}

/// Records a watch event; whether the table may have changed.
fn note(event: Result<Source, watcher::Error>, listed: &mut Listed) -> bool {
    match event {
        Ok(Source::Services { listed: done }) => listed.services |= done,
        Ok(Source::Slices { listed: done }) => listed.slices |= done,
        Ok(Source::Deployments { listed: done }) => listed.deployments |= done,
        Err(error) => {
            warn!(%error, "service proxy watch failed; retrying");
            return false;
        }
    }
    true
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
    served: HashMap<Frontend, Served>,
    tasks: JoinSet<()>,
    /// Reasons already logged (each is said once, not on every table rebuild).
    logged: HashSet<String>,
}

impl Proxy {
    fn new(placement: Placement, local: Arc<LocalHttp>, scaler: Arc<Scaler>, shutdown: CancellationToken) -> Proxy {
        Proxy {
            placement,
            local,
            scaler,
            shutdown,
            served: HashMap::new(),
            tasks: JoinSet::new(),
            logged: HashSet::new(),
        }
    }

    /// Brings the served frontends in line with `table`.
    fn apply(&mut self, table: &Table) {
        self.log_skipped(table);
        self.served.retain(|frontend, served| {
            let keep = table.routes.contains_key(frontend);
            if !keep {
                info!(%frontend, service = %served.route.service, "Service frontend removed");
                served.stop.cancel();
            }
            keep
        });
        for (frontend, route) in &table.routes {
            if frontend.protocol != Protocol::Tcp {
                let reason = format!("{} {frontend}: only TCP Service ports are served", route.service);
                if self.logged.insert(reason.clone()) {
                    warn!("{reason}");
                }
                continue;
            }
            match self.served.get_mut(frontend) {
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
                    self.tasks.spawn(listener::run(
                        *frontend,
                        Arc::clone(&shared),
                        Arc::clone(&self.local),
                        Arc::clone(&self.scaler),
                        stop.clone(),
                        self.shutdown.clone(),
                    ));
                    self.served.insert(*frontend, Served { shared, route: route.clone(), stop });
                }
            }
        }
    }

    fn log_skipped(&mut self, table: &Table) {
        for skipped in &table.skipped {
            match skipped {
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
