//! The ingress's view of the cluster at one moment: routes, resolved backends and SNI
//! certificates, rebuilt as a whole from the watched objects whenever any of them changes, and
//! read by every request without locks held across awaits.
//!
//! What it owns: [`Snapshot`] (what a request consults: route → backend → endpoint address) and
//! [`Builder`], which keeps what must outlive one snapshot — round-robin cursors and the
//! problems already reported — and records a Warning Event on an Ingress when a problem of its
//! appears (a missing Service or port, a missing or invalid TLS Secret), once per appearance.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use rustls::crypto::CryptoProvider;

use super::backends::{self, Resolution};
use super::class::ServedClasses;
use super::routes::{RouteTable, ServiceRef, Target, key_of};
use super::tls::{CertMap, TlsSecretError, certified_key};
use crate::events::{EventRecorder, EventType, Record};

/// What a request is answered with.
#[derive(Debug)]
pub enum Decision {
    /// No rule and no default backend: 404.
    NotFound,
    /// A rule matched but its backend cannot be reached: 503 with this message.
    Unavailable(String),
    /// Proxy to this endpoint.
    Forward { addr: SocketAddr, target: Arc<Target> },
}

/// Routes and backends at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// False until every watch has listed once (requests get 503 meanwhile).
    pub synced: bool,
    routes: RouteTable,
    backends: HashMap<ServiceRef, Resolution>,
}

impl Snapshot {
    /// Where a request for `host` and `path` goes.
    pub fn decide(&self, host: &str, path: &str) -> Decision {
        let Some(target) = self.routes.route(host, path) else { return Decision::NotFound };
        let Some(svc) = &target.service else {
            return Decision::Unavailable(format!(
                "ingress {} names a backend that is not a service port",
                target.ingress
            ));
        };
        match self.backends.get(svc) {
            Some(Resolution::Ready(endpoints)) => match endpoints.pick() {
                Some(addr) => Decision::Forward { addr, target: target.clone() },
                None => Decision::Unavailable(format!("service {}/{} has no ready endpoints", svc.namespace, svc.name)),
            },
            Some(Resolution::Unavailable(why)) => Decision::Unavailable(why.describe(svc)),
            None => Decision::Unavailable(format!("service {}/{} is not resolved yet", svc.namespace, svc.name)),
        }
    }
}

/// The watched objects a snapshot is built from.
#[derive(Debug, Default)]
pub struct Inputs {
    pub ingresses: Vec<Arc<Ingress>>,
    pub classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub secrets: Vec<Arc<Secret>>,
}

/// Builds snapshots and reports the problems they reveal.
#[derive(Debug)]
pub struct Builder {
    provider: Arc<CryptoProvider>,
    events: EventRecorder,
    cursors: HashMap<ServiceRef, Arc<AtomicUsize>>,
    /// Problems of the last build (`uid|reason|message`): reported once while they last.
    reported: HashSet<String>,
}

/// One problem found while building.
struct Problem<'a> {
    ingress: &'a Ingress,
    reason: &'static str,
    message: String,
}

impl Builder {
    pub fn new(provider: Arc<CryptoProvider>, events: EventRecorder) -> Builder {
        Builder { provider, events, cursors: HashMap::new(), reported: HashSet::new() }
    }

    /// The snapshot and SNI certificates of `inputs`; records events for new problems.
    pub fn build(&mut self, inputs: &Inputs) -> (Snapshot, CertMap) {
        let served = ServedClasses::new(inputs.classes.iter().map(AsRef::as_ref));
        let ingresses: Vec<&Ingress> = inputs
            .ingresses
            .iter()
            .map(AsRef::as_ref)
            .filter(|i| served.serves(i) && i.metadata.deletion_timestamp.is_none())
            .collect();
        let routes = RouteTable::build(ingresses.iter().copied());
        let resolved = backends::resolve(routes.services(), &inputs.services, &inputs.slices, &self.cursors);
        self.cursors = backends::cursors(&resolved);

        let mut problems = Vec::new();
        for ingress in &ingresses {
            for svc in referenced_services(ingress) {
                if let Some(Resolution::Unavailable(why)) = resolved.get(&svc)
                    && why.is_misconfiguration()
                {
                    problems.push(Problem { ingress, reason: "ServiceNotFound", message: why.describe(&svc) });
                }
            }
        }
        let certs = self.certificates(&ingresses, &inputs.secrets, &mut problems);
        self.report(problems);
        (Snapshot { synced: true, routes, backends: resolved }, certs)
    }

    /// The SNI map of the served Ingresses' `spec.tls` (older Ingresses first, as routes).
    fn certificates<'a>(
        &self,
        ingresses: &[&'a Ingress],
        secrets: &[Arc<Secret>],
        problems: &mut Vec<Problem<'a>>,
    ) -> CertMap {
        let by_key: HashMap<(&str, &str), &Secret> = secrets
            .iter()
            .filter_map(|s| Some(((s.metadata.namespace.as_deref()?, s.metadata.name.as_deref()?), s.as_ref())))
            .collect();
        let mut ordered = ingresses.to_vec();
        ordered.sort_by_key(|i| (i.metadata.creation_timestamp.as_ref().map(|t| t.0), key_of(i)));
        let mut map = CertMap::default();
        for ingress in ordered {
            let ns = ingress.metadata.namespace.as_deref().unwrap_or("default");
            for tls in ingress.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
                let (Some(name), Some(hosts)) = (tls.secret_name.as_deref(), tls.hosts.as_ref()) else { continue };
                let parsed = match by_key.get(&(ns, name)) {
                    None => Err(TlsSecretError::NotFound(format!("{ns}/{name}"))),
                    Some(secret) => certified_key(secret, &self.provider),
                };
                match parsed {
                    Ok(key) => {
                        let key = Arc::new(key);
                        for host in hosts {
                            map.insert(host, key.clone());
                        }
                    }
                    Err(e) => problems.push(Problem {
                        ingress,
                        reason: "InvalidTLSSecret",
                        message: format!("{e}; hosts {} get the default self-signed certificate", hosts.join(", ")),
                    }),
                }
            }
        }
        map
    }

    /// Records an event for each problem not already reported; forgets problems now gone.
    fn report(&mut self, problems: Vec<Problem<'_>>) {
        let mut now = HashSet::new();
        for p in problems {
            let uid = p.ingress.metadata.uid.as_deref().unwrap_or_default();
            let id = format!("{uid}|{}|{}", p.reason, p.message);
            if !self.reported.contains(&id) {
                tracing::warn!(ingress = %key_of(p.ingress), reason = p.reason, message = %p.message, "ingress problem");
                self.events.record(Record {
                    involved: reference(p.ingress),
                    type_: EventType::Warning,
                    reason: p.reason.to_string(),
                    message: p.message,
                    occurrences: 1,
                    at: Timestamp::now(),
                });
            }
            now.insert(id);
        }
        self.reported = now;
    }
}

/// Every Service an Ingress refers to (its rules' and its default backend's).
fn referenced_services(ingress: &Ingress) -> Vec<ServiceRef> {
    let table = RouteTable::build([ingress]);
    table.services().into_iter().cloned().collect()
}

/// The event reference of an Ingress.
fn reference(ingress: &Ingress) -> ObjectReference {
    ObjectReference {
        api_version: Some("networking.k8s.io/v1".into()),
        kind: Some("Ingress".into()),
        name: ingress.metadata.name.clone(),
        namespace: ingress.metadata.namespace.clone(),
        uid: ingress.metadata.uid.clone(),
        resource_version: ingress.metadata.resource_version.clone(),
        field_path: None,
    }
}
