//! The node's Ingress controller: every node serves the Ingresses of the `skiff` class (and
//! class-less ones, `skiff` being the default) on its HTTP and HTTPS ports, proxying to the
//! ready endpoints of the backend Services — so any node's address reaches any Ingress, as
//! with a DaemonSet of ingress-nginx on host ports.
//!
//! What it owns: the watches (Ingresses, IngressClasses, Services, EndpointSlices, Secrets —
//! kube-runtime reflectors, as the kubelet's informers), rebuilding the [`snapshot`] when any
//! of them changes (coalesced), swapping the SNI certificates, and the two listeners. Files:
//! [`routes`] (matching, pure), [`class`] (which Ingresses), [`backends`] (endpoints),
//! [`tls`] (certificates), [`snapshot`] (the whole view, events), [`proxy`] (one request),
//! [`listen`] (connections).
//!
//! What it does not: write Ingress status (the control plane's `ingress_status` controller
//! fills `status.loadBalancer` with the Ready nodes' addresses), or create the IngressClass
//! (the control plane does at start).

pub mod backends;
pub mod class;
mod listen;
pub mod proxy;
pub mod routes;
#[cfg(test)]
mod routes_tests;
pub mod snapshot;
pub mod tls;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::events::EventRecorder;
use proxy::{Proxy, Scheme};
use snapshot::{Builder, Inputs, Snapshot};
use tls::SniResolver;

/// Where the ingress listens (`None`: that port is disabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressConfig {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

/// How long changes are gathered before a rebuild (a rollout touches many objects at once).
const COALESCE: Duration = Duration::from_millis(20);

/// The readers of the watched kinds.
#[derive(Clone)]
struct Stores {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
}

impl Stores {
    fn inputs(&self) -> Inputs {
        Inputs {
            ingresses: self.ingresses.state(),
            classes: self.classes.state(),
            services: self.services.state(),
            slices: self.slices.state(),
            secrets: self.secrets.state(),
        }
    }

    /// Waits until every store has listed once; false if a watch task ended first.
    async fn ready(&self) -> bool {
        self.ingresses.wait_until_ready().await.is_ok()
            && self.classes.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
            && self.slices.wait_until_ready().await.is_ok()
            && self.secrets.wait_until_ready().await.is_ok()
    }
}

/// Runs the ingress until `cancel` fires. A port that cannot be bound is logged and left out
/// (the node keeps running); nothing here is fatal.
pub async fn run(client: kube::Client, cfg: IngressConfig, events: EventRecorder, cancel: CancellationToken) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = match tls::default_certificate(&provider) {
        Ok(cert) => Arc::new(SniResolver::new(cert)),
        Err(e) => return warn!(error = %e, "ingress: cannot make the default certificate; ingress disabled"),
    };
    let changed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let stores = Stores {
        ingresses: spawn_reflector(&client, &changed, &cancel, &mut tasks),
        classes: spawn_reflector(&client, &changed, &cancel, &mut tasks),
        services: spawn_reflector(&client, &changed, &cancel, &mut tasks),
        slices: spawn_reflector(&client, &changed, &cancel, &mut tasks),
        secrets: spawn_reflector(&client, &changed, &cancel, &mut tasks),
    };
    let (snapshots, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));

    if let Some(addr) = cfg.http
        && let Some(listener) = bind(addr, "HTTP").await
    {
        let proxy = Proxy::new(snapshot_rx.clone(), Scheme::Http, addr.port());
        tasks.spawn(listen::serve(listener, None, proxy, cancel.clone()));
    }
    if let Some(addr) = cfg.https {
        match tls::server_config(resolver.clone(), provider.clone()) {
            Err(e) => warn!(error = %e, "ingress: TLS configuration failed; HTTPS disabled"),
            Ok(config) => {
                if let Some(listener) = bind(addr, "HTTPS").await {
                    let proxy = Proxy::new(snapshot_rx.clone(), Scheme::Https, addr.port());
                    let acceptor = TlsAcceptor::from(Arc::new(config));
                    tasks.spawn(listen::serve(listener, Some(acceptor), proxy, cancel.clone()));
                }
            }
        }
    }
    tasks.spawn(rebuild_loop(stores, Builder::new(provider, events), snapshots, resolver, changed, cancel.clone()));
    cancel.cancelled().await;
    while tasks.join_next().await.is_some() {}
}

async fn bind(addr: SocketAddr, what: &str) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            info!(%addr, "ingress {what} listening");
            Some(listener)
        }
        Err(e) => {
            warn!(%addr, error = %e, "ingress: cannot listen for {what}; that port is not served");
            None
        }
    }
}

/// Starts a reflector of every `K` in the cluster; each change wakes the rebuild loop.
fn spawn_reflector<K>(
    client: &kube::Client,
    changed: &Arc<Notify>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer): (Store<K>, Writer<K>) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
    let (changed, cancel) = (changed.clone(), cancel.clone());
    tasks.spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).default_backoff().reflect(writer).boxed();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                event = events.next() => match event {
                    None => break,
                    Some(Err(e)) => warn!(kind = %K::kind(&()), error = %e, "ingress watch failed; retrying"),
                    Some(Ok(_)) => changed.notify_one(),
                },
            }
        }
    });
    store
}

/// Rebuilds and publishes the snapshot after every (coalesced) change, once all watches listed.
async fn rebuild_loop(
    stores: Stores,
    mut builder: Builder,
    snapshots: watch::Sender<Arc<Snapshot>>,
    resolver: Arc<SniResolver>,
    changed: Arc<Notify>,
    cancel: CancellationToken,
) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        ready = stores.ready() => if !ready { return },
    }
    loop {
        let (snapshot, certs) = builder.build(&stores.inputs());
        tracing::debug!(certificates = certs.len(), "ingress snapshot rebuilt");
        resolver.replace(Arc::new(certs));
        snapshots.send_replace(Arc::new(snapshot));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changed.notified() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(COALESCE) => {}
        }
    }
}
