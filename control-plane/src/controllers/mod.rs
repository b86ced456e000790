//! The in-process controllers (ARCHITECTURE decision 5): they read from shared informer caches
//! fed by the store's watch, enqueue keys from change handlers, and reconcile each key in a
//! worker through the same validated write path as the HTTP handlers
//! ([`crate::registry::rest::Registry`]).
//!
//! Owns: the caches ([`informer`]), the queue ([`workqueue`]), event recording ([`events`]),
//! and the minimal workload controllers — [`replicaset`], [`deployment`], the garbage
//! collector ([`gc`]) and namespace deletion ([`namespace`]). The scheduler lives in
//! [`crate::scheduler`] but is started here too, on the same caches.

pub mod clock;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
mod expectations;
pub mod gc;
pub mod history;
pub mod informer;
pub mod ingress_status;
pub mod job;
pub mod namespace;
pub mod nodelifecycle;
pub mod owner;
pub mod replicaset;
pub mod scale_to_zero;
pub mod service_alloc;
pub mod service_lb;
pub mod skydns;
pub mod statefulset;
#[cfg(test)]
pub(crate) mod testing;
pub mod volume;
pub mod workqueue;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use skiff_api::selector::SelectorError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::apiserver::error::ApiError;
use crate::registry::catalog::{self, ResourceInfo};
use crate::registry::rest::Registry;
use crate::scheduler::Scheduler;
use crate::storage::SharedStore;
pub use clock::Clock;
use informer::Informer;
use workqueue::WorkQueue;

/// Why one reconcile pass failed (the key is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A read or write through the registry failed.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: ApiError,
    },
    /// A raw store read or write failed (records kept beside the objects, e.g. SkyDNS's).
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: crate::storage::StoreError,
    },
    /// The object's selector does not parse (validation should have refused it).
    #[error("{key}: invalid selector: {source}")]
    Selector {
        key: String,
        #[source]
        source: SelectorError,
    },
}

/// Adds context to registry errors.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ReconcileError>;
}

impl<T> Context<T> for Result<T, ApiError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ReconcileError> {
        self.map_err(|source| ReconcileError::Api { what: what(), source })
    }
}

/// Replaces the status of `ns/name` with `status` through the status subresource (as a
/// controller's status write in Kubernetes); an object deleted meanwhile is not an error.
pub(crate) async fn write_status(
    registry: &Registry,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), ReconcileError> {
    let result = registry
        .update_with(info, ns, name, Some("status"), crate::registry::rest::WriteOptions::default(), None, |old| {
            let mut new = old.clone();
            new["status"] = status.clone();
            Ok(new)
        })
        .await;
    match result {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e).context(|| format!("updating status of {} {name}", info.kind)),
    }
}

/// The resource info of a built-in v1 kind (always in the catalog).
pub(crate) fn info(group: &str, plural: &str) -> &'static ResourceInfo {
    catalog::find(group, "v1", plural).expect("built-in v1 kinds are in the catalog")
}

/// Declares [`Informers`]: one shared cache per kind the controllers read.
macro_rules! informers {
    ($($field:ident: $ty:ty = ($group:literal, $plural:literal),)*) => {
        /// The caches the controllers and the scheduler share (one watch per kind).
        #[derive(Debug, Clone)]
        pub struct Informers {
            $(pub $field: Informer<$ty>,)*
        }

        impl Default for Informers {
            fn default() -> Self {
                Informers { $($field: Informer::new(info($group, $plural)),)* }
            }
        }

        impl Informers {
            /// Starts every cache as a task in `tasks`.
            pub fn run_all(&self, store: &SharedStore, cancel: &CancellationToken, tasks: &mut JoinSet<()>) {
                $(tasks.spawn(self.$field.clone().run(store.clone(), cancel.clone()));)*
            }

            /// Waits until every cache has listed once; false if `cancel` fired first.
            pub async fn wait_synced(&self, cancel: &CancellationToken) -> bool {
                $(if !self.$field.wait_synced(cancel).await { return false; })*
                true
            }

            /// The first cache that does not yet hold what the store holds now (see
            /// [`Informer::caught_up`]), `None` when all do.
            pub async fn lagging(&self, store: &SharedStore) -> Result<Option<&'static str>, crate::storage::StoreError> {
                $(if !self.$field.caught_up(store).await? { return Ok(Some(stringify!($field))); })*
                Ok(None)
            }
        }
    };
}

informers! {
    pods: Pod = ("", "pods"),
    nodes: Node = ("", "nodes"),
    namespaces: Namespace = ("", "namespaces"),
    pvcs: PersistentVolumeClaim = ("", "persistentvolumeclaims"),
    pvs: PersistentVolume = ("", "persistentvolumes"),
    replicasets: ReplicaSet = ("apps", "replicasets"),
    deployments: Deployment = ("apps", "deployments"),
    daemonsets: DaemonSet = ("apps", "daemonsets"),
    statefulsets: StatefulSet = ("apps", "statefulsets"),
    controller_revisions: ControllerRevision = ("apps", "controllerrevisions"),
    jobs: Job = ("batch", "jobs"),
    cronjobs: CronJob = ("batch", "cronjobs"),
    leases: Lease = ("coordination.k8s.io", "leases"),
    storage_classes: StorageClass = ("storage.k8s.io", "storageclasses"),
    pdbs: PodDisruptionBudget = ("policy", "poddisruptionbudgets"),
    services: Service = ("", "services"),
    endpoints: Endpoints = ("", "endpoints"),
    endpoint_slices: EndpointSlice = ("discovery.k8s.io", "endpointslices"),
    ingresses: Ingress = ("networking.k8s.io", "ingresses"),
    ingress_classes: IngressClass = ("networking.k8s.io", "ingressclasses"),
}

/// What the controllers are told at start (kube-controller-manager's flags that matter here).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Where "now" comes from (a fake clock in unit tests).
    pub clock: Clock,
    /// How long a node's Lease may go unrenewed before the node is marked NotReady/Unknown
    /// (`--node-monitor-grace-period`, 40 s by default).
    pub node_monitor_grace_period: Duration,
    /// The `tolerationSeconds` pods get for the not-ready and unreachable NoExecute taints
    /// when they declare none (the DefaultTolerationSeconds admission plugin; 300 s).
    pub default_unreachable_toleration: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            clock: Clock::Real,
            node_monitor_grace_period: Duration::from_secs(40),
            default_unreachable_toleration: Duration::from_secs(300),
        }
    }
}

/// What every controller is built from: the write path, the caches and the configuration.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub registry: Registry,
    pub inf: Informers,
    pub config: ControllerConfig,
}

/// A controller: a queue of keys and how to reconcile one. [`spawn`] runs its workers.
pub trait Reconcile: Clone + Send + Sync + 'static {
    /// The name used in logs.
    const NAME: &'static str;
    /// The queue its change handlers feed.
    fn queue(&self) -> WorkQueue;
    /// Brings one key to its desired state (idempotent; an error retries with back-off).
    fn reconcile(&self, key: &str) -> impl Future<Output = Result<(), ReconcileError>> + Send;
}

/// How many keys each controller reconciles at once.
const WORKERS: usize = 2;
/// Workers of the Endpoints, EndpointSlice (and mirroring) and SkyDNS controllers: Kubernetes'
/// `--concurrent-service-endpoint-syncs` and `--mirroring-concurrent-service-endpoint-syncs`
/// default. Each reconcile waits on one store write, so with many Services changing at once
/// (10,000 created) throughput grows with writes in flight; two made slices trail the API.
const SERVICE_WORKERS: usize = 5;

/// Runs `workers` workers of controller `c` as tasks in `tasks`.
pub fn spawn<C: Reconcile>(c: &C, workers: usize, ctx: &Ctx, cancel: &CancellationToken, tasks: &mut JoinSet<()>) {
    for _ in 0..workers {
        let c2 = c.clone();
        tasks.spawn(run_worker(C::NAME, c.queue(), ctx.inf.clone(), cancel.clone(), move |key| {
            let c = c2.clone();
            async move { c.reconcile(&key).await }
        }));
    }
}

/// Starts the caches, the scheduler and the controllers as tasks in `tasks`, all ending when
/// `cancel` fires.
pub fn start(
    registry: &Registry,
    config: ControllerConfig,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Informers {
    let ctx = Ctx { registry: registry.clone(), inf: Informers::default(), config };
    let inf = &ctx.inf;
    // Everyone subscribes before the caches start, so the first list reaches every handler.
    let scheduler = Scheduler::new(registry.clone(), inf.pods.clone(), inf.nodes.clone()).with_volumes(inf);
    let volumes = volume::VolumeController::new(&ctx);
    let rs = replicaset::ReplicaSetController::new(&ctx);
    let deploy = deployment::DeploymentController::new(&ctx);
    let gc = gc::GarbageCollector::new(&ctx);
    let namespaces = namespace::NamespaceController::new(&ctx);
    let job = job::JobController::new(&ctx);
    let cronjob = cronjob::CronJobController::new(&ctx);
    let nodes = nodelifecycle::NodeLifecycleController::new(&ctx);
    let taints = nodelifecycle::taint_eviction::TaintEvictionController::new(&ctx);
    let pdbs = disruption::DisruptionController::new(&ctx);
    let daemonsets = daemonset::DaemonSetController::new(&ctx);
    let sts = statefulset::StatefulSetController::new(&ctx);
    let endpoints = endpoints::EndpointsController::new(&ctx);
    let slices = endpoints::slices::EndpointSliceController::new(&ctx);
    let ingress_status = ingress_status::IngressStatusController::new(&ctx);
    let skydns = skydns::SkyDnsController::new(&ctx);
    let service_lb = service_lb::ServiceLbController::new(&ctx);
    let scale_to_zero = scale_to_zero::ScaleToZeroController::new(&ctx);

    inf.run_all(registry.store(), cancel, tasks);
    tasks.spawn(scheduler.run(cancel.clone()));
    spawn(&rs, WORKERS, &ctx, cancel, tasks);
    spawn(&deploy, WORKERS, &ctx, cancel, tasks);
    spawn(&job, WORKERS, &ctx, cancel, tasks);
    spawn(&cronjob, WORKERS, &ctx, cancel, tasks);
    spawn(&volumes, WORKERS, &ctx, cancel, tasks);
    spawn(&daemonsets, WORKERS, &ctx, cancel, tasks);
    spawn(&nodes, WORKERS, &ctx, cancel, tasks);
    spawn(&taints, WORKERS, &ctx, cancel, tasks);
    spawn(&pdbs, WORKERS, &ctx, cancel, tasks);
    tasks.spawn(gc.clone().run(registry.store().clone(), cancel.clone()));
    spawn(&gc, WORKERS, &ctx, cancel, tasks);
    spawn(&namespaces, WORKERS, &ctx, cancel, tasks);
    spawn(&sts, WORKERS, &ctx, cancel, tasks);
    spawn(&endpoints, SERVICE_WORKERS, &ctx, cancel, tasks);
    spawn(&slices, SERVICE_WORKERS, &ctx, cancel, tasks);
    spawn(&ingress_status, WORKERS, &ctx, cancel, tasks);
    spawn(&skydns, SERVICE_WORKERS, &ctx, cancel, tasks);
    tasks.spawn(skydns.clone().sweep(cancel.clone()));
    spawn(&service_lb, WORKERS, &ctx, cancel, tasks);
    spawn(&scale_to_zero, WORKERS, &ctx, cancel, tasks);
    tasks.spawn(service_alloc::RepairController::new(&ctx).run(cancel.clone()));
    ctx.inf
}

/// One worker: waits for the caches, then reconciles keys until `cancel`; a failed key is
/// retried with back-off, a successful one forgets its failures.
async fn run_worker<F, Fut>(
    name: &'static str,
    queue: WorkQueue,
    inf: Informers,
    cancel: CancellationToken,
    reconcile: F,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), ReconcileError>>,
{
    if !inf.wait_synced(&cancel).await {
        return;
    }
    while let Some(key) = queue.next(&cancel).await {
        match reconcile(key.clone()).await {
            Ok(()) => queue.forget(&key),
            // Lost races are routine: the cache was behind; the retry sees the new state.
            Err(ReconcileError::Api { source: ApiError::Conflict(_), .. }) => {
                debug!(controller = name, key, "conflict; retrying");
                queue.retry(&key);
            }
            Err(e) => {
                warn!(controller = name, key, error = %e, "reconcile failed; retrying");
                queue.retry(&key);
            }
        }
        queue.done(&key);
    }
}
