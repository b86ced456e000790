//! Cluster IPs and node ports of Services: carried over on update, allocated on write, each
//! held by one key in the store so no two Services ever get the same one — also across a
//! restart, and with several API servers on one etcd.
//!
//! Why keys and not a bitmap: the store has compare-and-swap per key but no multi-key
//! transaction, and a key per address makes "reserve" one `create` that either wins or
//! names the holder (as Kubernetes' newer IPAddress allocator does). A key is written before
//! the Service and removed again when that write fails; what a crash leaves behind, and what
//! a deleted or changed Service no longer uses, the repair controller
//! (`controllers::service_alloc`) releases.
//!
//! Ranges are split as Kubernetes does: a lower "static" band (16–256 addresses, 16–128
//! ports) is used for dynamic picks only once the upper band is full, so a requested
//! well-known address (`10.96.0.1` for the API, `10.96.0.10` for DNS) is rarely taken.
//! What it does not do: IPv6 or dual-stack (a `/16` of IPv4 only), or LoadBalancer IPs (a
//! LoadBalancer Service is served on the node addresses).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use skiff_api::validation::FieldCause;

use crate::apiserver::error::ApiError;
use crate::storage::{SharedStore, StoreError};

/// Prefix of the keys holding cluster IPs (`<prefix><ip>`).
pub const CLUSTER_IP_PREFIX: &str = "/skiff/allocations/serviceips/";
/// Prefix of the keys holding node ports (`<prefix><port>`).
pub const NODE_PORT_PREFIX: &str = "/skiff/allocations/nodeports/";
/// Random probes into a band before falling back to a scan of what is held.
const PROBES: usize = 32;

/// The Service network: `--service-cluster-ip-range` and `--service-node-port-range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetwork {
    pub cidr: Ipv4Net,
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        Self { cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16).unwrap_or_default(), node_ports: 30000..=32767 }
    }
}

impl ServiceNetwork {
    /// The `n`-th address of the range (`1` = the API server's `kubernetes` Service).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()).wrapping_add(n))
    }

    /// Usable offsets: the network and broadcast addresses are never handed out.
    fn ip_offsets(&self) -> RangeInclusive<u32> {
        let size = 1u32.checked_shl(32 - u32::from(self.cidr.prefix_len())).unwrap_or(u32::MAX);
        1..=size.saturating_sub(2)
    }
}

/// Who holds a key: the Service's uid (and `namespace/name`, where the repair looks it up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub uid: String,
    pub service: String,
}

/// Keys one write took; released again if the write does not happen.
#[derive(Debug, Default)]
#[must_use = "release the reservations if the write fails"]
pub struct Reservations {
    keys: Vec<String>,
}

/// Allocates and reserves Service addresses and ports in the store.
#[derive(Debug, Clone)]
pub struct ServiceAllocator {
    store: SharedStore,
    network: ServiceNetwork,
}

/// What a Service needs: whether it gets a cluster IP, and whether its ports get node ports.
fn needs(spec: &Value) -> (bool, bool) {
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let node_ports = match ty {
        "NodePort" => true,
        "LoadBalancer" => spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false)),
        _ => false,
    };
    (ty != "ExternalName" && !headless, node_ports)
}

/// Before validation of an update: what the client left out is kept from `old` (the cluster
/// IP, and the node port of a port that is still there), and what the new type cannot have
/// goes (node ports of a ClusterIP Service, the cluster IP of an ExternalName one).
pub fn carry_over(new: &mut Value, old: &Value) {
    let Some(old_spec) = old.get("spec") else { return };
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    let old_ty = old_spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    } else if old_ty != "ExternalName" && spec.get("clusterIP").and_then(Value::as_str).is_none_or(str::is_empty) {
        for field in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old_spec.get(field) {
                spec.insert(field.into(), v.clone());
            }
        }
    }
    let (_, node_ports) = needs(&Value::Object(spec.clone()));
    let old_ports = old_spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else { return };
    for port in ports.iter_mut().filter_map(Value::as_object_mut) {
        if !node_ports {
            port.remove("nodePort");
            continue;
        }
        if port.get("nodePort").is_some_and(|v| v.as_i64().is_some_and(|n| n != 0)) {
            continue;
        }
        let same = |o: &&Value| {
            o.get("port") == port.get("port")
                && o.get("protocol").unwrap_or(&json!("TCP")) == port.get("protocol").unwrap_or(&json!("TCP"))
        };
        if let Some(n) = old_ports.iter().find(same).and_then(|o| o.get("nodePort")) {
            port.insert("nodePort".into(), n.clone());
        }
    }
}

impl ServiceAllocator {
    pub fn new(store: SharedStore, network: ServiceNetwork) -> Self {
        Self { store, network }
    }

    pub fn network(&self) -> &ServiceNetwork {
        &self.network
    }

    /// Fills in and reserves what `svc` needs (after validation). `old` is the stored Service of
    /// an update: what it already holds is not reserved again. Errors are the Kubernetes
    /// ones: `Invalid` for an address out of range or taken, `Internal` for a full range.
    pub async fn assign(&self, svc: &mut Value, old: Option<&Value>) -> Result<Reservations, ApiError> {
        let mut taken = Reservations::default();
        let result = self.assign_into(svc, old, &mut taken).await;
        match result {
            Ok(()) => Ok(taken),
            Err(e) => {
                self.release(taken).await;
                Err(e)
            }
        }
    }

    async fn assign_into(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        taken: &mut Reservations,
    ) -> Result<(), ApiError> {
        let holder = Holder {
            uid: svc.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string(),
            service: format!(
                "{}/{}",
                svc.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
                svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
            ),
        };
        let name = svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let old_spec = old.and_then(|o| o.get("spec"));
        let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
        let (needs_ip, needs_node_ports) = needs(&Value::Object(spec.clone()));
        if needs_ip {
            let ip = match spec.get("clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                Some(requested) => {
                    let held = old_spec.and_then(|s| s.get("clusterIP")).and_then(Value::as_str) == Some(requested);
                    if !held {
                        self.reserve_ip(requested, &holder, taken).await.map_err(|e| invalid(&name, e))?;
                    }
                    requested.to_string()
                }
                None => self.allocate_ip(&holder, taken).await?.to_string(),
            };
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        if needs_node_ports {
            let old_node_ports: Vec<i64> = old_spec
                .and_then(|s| s.get("ports"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("nodePort")?.as_i64())
                .collect();
            let ports = spec.get_mut("ports").and_then(Value::as_array_mut).map(std::mem::take).unwrap_or_default();
            let mut out = Vec::with_capacity(ports.len());
            for (i, mut port) in ports.into_iter().enumerate() {
                match port.get("nodePort").and_then(Value::as_i64).filter(|n| *n != 0) {
                    Some(n) if old_node_ports.contains(&n) => {}
                    Some(n) => {
                        let cause = self.reserve_port(n, &holder, taken).await.map_err(|mut c| {
                            c.field = format!("spec.ports[{i}].nodePort");
                            c
                        });
                        if let Err(c) = cause {
                            spec.insert("ports".into(), Value::Array(out));
                            return Err(invalid(&name, c));
                        }
                    }
                    None => {
                        let n = self.allocate_port(&holder, taken).await?;
                        port["nodePort"] = json!(n);
                    }
                }
                out.push(port);
            }
            spec.insert("ports".into(), Value::Array(out));
        }
        Ok(())
    }

    /// Gives back what a failed write took.
    pub async fn release(&self, reservations: Reservations) {
        for key in reservations.keys {
            if let Err(e) = self.store.delete(&key, None).await
                && !matches!(e, StoreError::NotFound(_))
            {
                tracing::warn!(%key, error = %e, "releasing a service allocation");
            }
        }
    }

    async fn reserve_ip(&self, requested: &str, holder: &Holder, taken: &mut Reservations) -> Result<(), FieldCause> {
        let value = Value::from(requested);
        let ip: Ipv4Addr = requested.parse().map_err(|_| {
            FieldCause::invalid("spec.clusterIP", &value, "must be an IPv4 address (this cluster is IPv4 only)")
        })?;
        let offset = u32::from(ip).wrapping_sub(u32::from(self.network.cidr.network()));
        if !self.network.cidr.contains(&ip) || !self.network.ip_offsets().contains(&offset) {
            let detail = format!(
                "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. \
                 The range of valid IPs is {}",
                self.network.cidr
            );
            return Err(FieldCause::invalid("spec.clusterIP", &value, &detail));
        }
        match self.try_take(&format!("{CLUSTER_IP_PREFIX}{ip}"), holder, taken).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(FieldCause::invalid(
                "spec.clusterIP",
                &value,
                &format!("failed to allocate IP {requested}: provided IP is already allocated"),
            )),
            Err(e) => Err(FieldCause::invalid("spec.clusterIP", &value, &e.to_string())),
        }
    }

    async fn reserve_port(&self, port: i64, holder: &Holder, taken: &mut Reservations) -> Result<(), FieldCause> {
        let value = Value::from(port);
        let in_range = u16::try_from(port).is_ok_and(|p| self.network.node_ports.contains(&p));
        if !in_range {
            let (lo, hi) = (self.network.node_ports.start(), self.network.node_ports.end());
            let detail = format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}");
            return Err(FieldCause::invalid("nodePort", &value, &detail));
        }
        match self.try_take(&format!("{NODE_PORT_PREFIX}{port}"), holder, taken).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(FieldCause::invalid("nodePort", &value, "provided port is already allocated")),
            Err(e) => Err(FieldCause::invalid("nodePort", &value, &e.to_string())),
        }
    }

    /// A free cluster IP, taken for `holder`.
    async fn allocate_ip(&self, holder: &Holder, taken: &mut Reservations) -> Result<Ipv4Addr, ApiError> {
        let offsets = self.network.ip_offsets();
        let size = offsets.end().saturating_sub(*offsets.start()) + 1;
        let static_band = (size / 16).clamp(16, 256).min(size);
        let bands =
            [(offsets.start() + static_band, *offsets.end()), (*offsets.start(), offsets.start() + static_band - 1)];
        for (lo, hi) in bands.into_iter().filter(|(lo, hi)| lo <= hi) {
            let found = self
                .allocate_in(CLUSTER_IP_PREFIX, u64::from(lo), u64::from(hi), holder, taken, |o| {
                    self.network.nth(u32::try_from(o).unwrap_or_default()).to_string()
                })
                .await?;
            if let Some(o) = found {
                return Ok(self.network.nth(u32::try_from(o).unwrap_or_default()));
            }
        }
        Err(ApiError::Internal(format!(
            "failed to allocate a serviceIP: range is full (the service range {} has no free address)",
            self.network.cidr
        )))
    }

    /// A free node port, taken for `holder`.
    async fn allocate_port(&self, holder: &Holder, taken: &mut Reservations) -> Result<u16, ApiError> {
        let (lo, hi) = (u64::from(*self.network.node_ports.start()), u64::from(*self.network.node_ports.end()));
        let size = hi - lo + 1;
        let static_band = (size / 32).clamp(16, 128).min(size);
        for (lo, hi) in [(lo + static_band, hi), (lo, lo + static_band - 1)].into_iter().filter(|(lo, hi)| lo <= hi) {
            if let Some(p) = self.allocate_in(NODE_PORT_PREFIX, lo, hi, holder, taken, |p| p.to_string()).await? {
                return Ok(u16::try_from(p).unwrap_or_default());
            }
        }
        Err(ApiError::Internal("failed to allocate a nodePort: range is full".into()))
    }

    /// Random probes in `lo..=hi`, then the first value not held; `None` when all are held.
    async fn allocate_in(
        &self,
        prefix: &str,
        lo: u64,
        hi: u64,
        holder: &Holder,
        taken: &mut Reservations,
        name: impl Fn(u64) -> String,
    ) -> Result<Option<u64>, ApiError> {
        for _ in 0..PROBES {
            let candidate = rand::rng().random_range(lo..=hi);
            if self.try_take(&format!("{prefix}{}", name(candidate)), holder, taken).await? {
                return Ok(Some(candidate));
            }
        }
        // Crowded: look at what is held instead of guessing.
        let held = self.held(prefix).await?;
        for candidate in lo..=hi {
            let key = format!("{prefix}{}", name(candidate));
            if !held.contains(&key) && self.try_take(&key, holder, taken).await? {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    /// Every key under `prefix`.
    async fn held(&self, prefix: &str) -> Result<std::collections::HashSet<String>, ApiError> {
        let page = self.store.list(prefix, crate::storage::ListOptions::default()).await.map_err(store_error)?;
        Ok(page.items.into_iter().map(|kv| kv.key).collect())
    }

    /// Takes `key` for `holder`: `false` when someone else holds it (one held by the same
    /// Service already counts as taken by this write).
    async fn try_take(&self, key: &str, holder: &Holder, taken: &mut Reservations) -> Result<bool, ApiError> {
        let value = serde_json::to_vec(holder).map_err(|e| ApiError::Internal(e.to_string()))?;
        match self.store.create(key, value).await {
            Ok(_) => {
                taken.keys.push(key.to_string());
                Ok(true)
            }
            Err(StoreError::AlreadyExists(_)) => {
                let current = self.store.get(key).await.map_err(store_error)?;
                let owner = current.and_then(|kv| serde_json::from_slice::<Holder>(&kv.value).ok());
                Ok(owner.is_some_and(|o| o.uid == holder.uid && !holder.uid.is_empty()))
            }
            Err(e) => Err(store_error(e)),
        }
    }
}

fn invalid(name: &str, cause: FieldCause) -> ApiError {
    ApiError::Invalid { kind: "Service".into(), name: name.to_string(), causes: vec![cause] }
}

fn store_error(e: StoreError) -> ApiError {
    ApiError::Internal(format!("service allocation: {e}"))
}

#[cfg(test)]
#[path = "service_alloc_tests.rs"]
mod tests;
