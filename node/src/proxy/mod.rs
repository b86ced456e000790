//! The service proxy of a node agent (kube-proxy's job, in-process): every Service's cluster
//! IP, node port and load-balancer port served on this node, each connection sent to a ready
//! backend.
//!
//! ```text
//! watch Services ─┐                          ┌─ frontend task: listen while backends exist,
//!                 ├─ table::build ─ apply ───┤   accept, balance::pick, relay (splice, or
//! watch Slices ───┘   (pure)        (diff)   └─ hand to a local WASM server: `local`)
//! ```
//!
//! What it owns: following Services and EndpointSlices of all namespaces (kube-runtime
//! reflectors), turning them into the routing table (`table`, pure), and keeping one owned
//! task per TCP frontend (`listener`) in step with it — started when a Service port appears,
//! given new backends in place (the balancer's rotation and client affinity carry on), stopped
//! when it goes. What it does not: allocate cluster IPs or node ports (the API server does),
//! publish endpoints (the control plane's controllers do), or make cluster IPs local addresses
//! (`bridge::HostNet` does, in bridge mode). UDP and SCTP Service ports are not served yet
//! (logged once).

mod balance;
mod listener;
mod local;
mod table;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
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

/// Which watch an event came from, and whether it ended a (re-)list.
#[derive(Debug, Clone, Copy)]
enum Source {
    Services { listed: bool },
    Slices { listed: bool },
}

/// Runs the proxy until `shutdown` fires.
pub async fn run(client: kube::Client, placement: Placement, local: Arc<LocalHttp>, shutdown: CancellationToken) {
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let svc_events =
        reflector::reflector(svc_writer, watcher(Api::<Service>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .map_ok(|e| Source::Services { listed: matches!(e, watcher::Event::InitDone) });
    let slice_events =
        reflector::reflector(slice_writer, watcher(Api::<EndpointSlice>::all(client), watcher::Config::default()))
            .default_backoff()
            .map_ok(|e| Source::Slices { listed: matches!(e, watcher::Event::InitDone) });
    let mut events = futures::stream::select(svc_events.boxed(), slice_events.boxed());
    let mut proxy = Proxy::new(placement, local, shutdown.clone());
    let (mut services_listed, mut slices_listed) = (false, false);
    info!(?placement, "service proxy started");
    loop {
        let mut dirty = false;
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = proxy.tasks.join_next(), if !proxy.tasks.is_empty() => {}
            event = events.next() => match event {
                None => break,
                Some(event) => dirty |= note(event, &mut services_listed, &mut slices_listed),
            },
        }
        // Take whatever else is already there before rebuilding: one pass per burst.
        while let Some(Some(event)) = events.next().now_or_never() {
            dirty |= note(event, &mut services_listed, &mut slices_listed);
        }
        if dirty && services_listed && slices_listed {
            proxy.apply(&table::build(&services.state(), &slices.state(), &proxy.placement));
        }
    }
    // Frontend tokens are children of `shutdown`: every task ends; wait for them.
    while proxy.tasks.join_next().await.is_some() {}
    info!("service proxy stopped");
}

/// Records a watch event; whether the table may have changed.
fn note(event: Result<Source, watcher::Error>, services_listed: &mut bool, slices_listed: &mut bool) -> bool {
    match event {
        Ok(Source::Services { listed }) => *services_listed |= listed,
        Ok(Source::Slices { listed }) => *slices_listed |= listed,
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
    shutdown: CancellationToken,
    served: HashMap<Frontend, Served>,
    tasks: JoinSet<()>,
    /// Reasons already logged (each is said once, not on every table rebuild).
    logged: HashSet<String>,
}

impl Proxy {
    fn new(placement: Placement, local: Arc<LocalHttp>, shutdown: CancellationToken) -> Proxy {
        Proxy { placement, local, shutdown, served: HashMap::new(), tasks: JoinSet::new(), logged: HashSet::new() }
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
                    served.shared.update(|b| b.update(backends, affinity));
                    served.route = route.clone();
                }
                None => {
                    info!(%frontend, service = %route.service, kind = ?route.kind, backends = route.backends.len(), "Service frontend added");
                    let shared = Shared::new(Balancer::new(route.backends.clone(), route.affinity));
                    let stop = self.shutdown.child_token();
                    self.tasks.spawn(listener::run(
                        *frontend,
                        Arc::clone(&shared),
                        Arc::clone(&self.local),
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
