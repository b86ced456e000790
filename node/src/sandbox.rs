//! Pod sandboxes of OCI pods: one network namespace per pod, attached by CNI to the node's
//! `skiff0` bridge with the pod IP the node's IPAM picked, plus the pod's `/etc/hosts`,
//! `/etc/hostname` and `/etc/resolv.conf`.
//!
//! What it owns: creating a pod's sandbox when its first container starts (idempotent, so every
//! container of the pod joins the same one, and an agent restart finds it again), tearing it
//! down when the pod is done (CNI DEL, namespace deleted, files removed), and removing
//! sandboxes of pods that vanished while the agent was down. A record (`sandbox.json`) per pod
//! keeps what CNI DEL needs. What it does not: pick the IP (node IPAM), create the bridge
//! (`bridge.rs`), or run containers (`runtime/oci.rs`).
//!
//! Only in bridge mode: loopback mode has no bridge to attach to, so OCI pods there must use
//! `hostNetwork: true` (see `runtime/oci.rs`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use skiff_oci_shim::network::{
    Cni, CniConfig, Dns, HostAlias, Netns, PodAttachment, PodFiles, PortMapping, Protocol, write_pod_files,
};
use tracing::{info, warn};

use crate::runtime::oci_spec::EtcFiles;
use crate::runtime::{PodRef, RuntimeError, SandboxSpec};

/// A ready sandbox: where containers join it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSandbox {
    pub netns: PathBuf,
    pub etc: EtcFiles,
}

/// What CNI DEL needs later, kept beside the pod's files.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    ip: Ipv4Addr,
    namespace: String,
    name: String,
}

/// The node's pod sandboxes.
#[derive(Debug)]
pub struct Sandboxes {
    /// Network namespace files (`<run>/netns/<uid>`).
    netns_dir: PathBuf,
    /// Per-pod files and records (`<state>/<uid>/`).
    state_dir: PathBuf,
    cni: Cni,
    /// One lock per pod, so two containers of a pod starting at once create one sandbox.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn sandbox_error(message: String) -> RuntimeError {
    RuntimeError::new("CreatePodSandboxError", message)
}

impl Sandboxes {
    /// Sandboxes on bridge `bridge` over `subnet`; namespaces under `run_dir`, state under
    /// `state_dir`.
    pub fn new(bridge: &str, subnet: Ipv4Net, run_dir: &Path, state_dir: &Path) -> Sandboxes {
        let mut config = CniConfig::new(subnet, state_dir.join("cni-cache"));
        config.bridge = bridge.to_string();
        Sandboxes {
            netns_dir: run_dir.join("netns"),
            state_dir: state_dir.to_path_buf(),
            cni: Cni::new(config),
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(uid.to_string()).or_default().clone()
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.state_dir.join(uid)
    }

    /// The sandbox of `pod` with `ip`, created (or re-checked) as needed.
    pub async fn ensure(&self, pod: &PodRef, ip: Ipv4Addr, spec: &SandboxSpec) -> Result<PodSandbox, RuntimeError> {
        let lock = self.lock(&pod.uid);
        let _guard = lock.lock().await;
        let dir = self.pod_dir(&pod.uid);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| sandbox_error(format!("creating {}: {e}", dir.display())))?;
        let record = Record { ip, namespace: pod.namespace.clone(), name: pod.name.clone() };
        let json = serde_json::to_vec(&record).map_err(|e| sandbox_error(e.to_string()))?;
        tokio::fs::write(dir.join("sandbox.json"), json)
            .await
            .map_err(|e| sandbox_error(format!("writing the sandbox record of {}: {e}", pod.name)))?;
        let netns = Netns::create(&self.netns_dir, &pod.uid)
            .await
            .map_err(|e| sandbox_error(format!("creating the pod's network namespace: {e}")))?;
        let attachment = attachment(pod, netns.path(), ip, spec);
        self.cni.add(&attachment).await.map_err(|e| sandbox_error(format!("attaching the pod network: {e}")))?;
        let files = PodFiles {
            hostname: spec.hostname.clone(),
            fqdn: spec.fqdn.clone(),
            pod_ip: IpAddr::V4(ip),
            host_aliases: spec
                .host_aliases
                .iter()
                .map(|(ip, hostnames)| HostAlias { ip: *ip, hostnames: hostnames.clone() })
                .collect(),
            dns: Dns::Pod {
                dns: spec.dns.clone(),
                host: PathBuf::from(skiff_oci_shim::network::files::HOST_RESOLV_CONF),
            },
        };
        let paths = write_pod_files(&dir.join("etc"), &files)
            .await
            .map_err(|e| sandbox_error(format!("writing /etc files of the pod: {e}")))?;
        Ok(PodSandbox {
            netns: netns.path().to_path_buf(),
            etc: EtcFiles { hosts: paths.hosts, hostname: paths.hostname, resolv_conf: paths.resolv_conf },
        })
    }

    /// Tears down the sandbox of the pod with `uid` (nothing if there is none).
    pub async fn remove(&self, uid: &str) {
        let lock = self.lock(uid);
        let guard = lock.lock().await;
        let dir = self.pod_dir(uid);
        let record: Option<Record> =
            tokio::fs::read(dir.join("sandbox.json")).await.ok().and_then(|b| serde_json::from_slice(&b).ok());
        let Ok(netns) = Netns::at(&self.netns_dir, uid) else { return };
        if let Some(record) = record {
            let pod = PodRef { namespace: record.namespace, name: record.name, uid: uid.to_string() };
            let attachment = attachment(&pod, netns.path(), record.ip, &SandboxSpec::default());
            if let Err(e) = self.cni.del(&attachment).await {
                warn!(error = %e, pod = %pod.name, "detaching the pod network");
            }
        }
        if let Err(e) = netns.delete().await {
            warn!(error = %e, "deleting the pod's network namespace");
        }
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(error = %e, "removing the pod's sandbox files");
        }
        drop(guard);
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }

    /// Removes the sandboxes of pods not in `live` (deleted while the agent was down).
    pub async fn reconcile(&self, live: &HashSet<String>) {
        let Ok(mut entries) = tokio::fs::read_dir(&self.state_dir).await else { return };
        let mut stale = Vec::new();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().to_string();
            if name != "cni-cache" && !live.contains(&name) {
                stale.push(name);
            }
        }
        for uid in stale {
            info!(pod_uid = %uid, "removing the sandbox of a pod that is gone");
            self.remove(&uid).await;
        }
    }
}

fn attachment(pod: &PodRef, netns: &Path, ip: Ipv4Addr, spec: &SandboxSpec) -> PodAttachment {
    PodAttachment {
        container_id: format!("sandbox-{}", pod.uid),
        netns: netns.to_path_buf(),
        ip,
        pod_name: pod.name.clone(),
        pod_namespace: pod.namespace.clone(),
        pod_uid: pod.uid.clone(),
        port_mappings: spec
            .host_ports
            .iter()
            .map(|p| PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: match p.protocol.as_str() {
                    "UDP" => Protocol::Udp,
                    "SCTP" => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                host_ip: None,
            })
            .collect(),
    }
}
