//! Which containers run on this node right now, by `namespace/pod/container`: what the node
//! API's exec, attach and port-forward endpoints act on.
//!
//! What it owns: a map the pod workers fill as containers start and empty as they end, and the
//! lookups the node API makes. What it does not: decide anything about a container's life
//! (workers do) or talk to the API server. Why a separate directory and not a query to the
//! workers: a worker is a single-threaded state machine; a lookup must not wait for it.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::runtime::{PodRef, RunningContainer};

/// One pod's running containers and its address.
struct PodEntry {
    uid: String,
    ip: IpAddr,
    containers: HashMap<String, Arc<dyn RunningContainer>>,
}

/// The directory of running containers (cheap to share: clone the `Arc`).
#[derive(Default)]
pub struct StreamTargets {
    pods: Mutex<HashMap<(String, String), PodEntry>>,
}

impl fmt::Debug for StreamTargets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("StreamTargets").field("pods", &pods.len()).finish()
    }
}

impl StreamTargets {
    /// Records that `container` of `pod` (at `ip`) runs as `handle`.
    pub fn started(&self, pod: &PodRef, ip: IpAddr, container: &str, handle: Arc<dyn RunningContainer>) {
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (pod.namespace.clone(), pod.name.clone());
        let entry =
            pods.entry(key).or_insert_with(|| PodEntry { uid: pod.uid.clone(), ip, containers: HashMap::new() });
        if entry.uid != pod.uid {
            // A new pod with the same name replaced the old one.
            *entry = PodEntry { uid: pod.uid.clone(), ip, containers: HashMap::new() };
        }
        entry.ip = ip;
        entry.containers.insert(container.to_string(), handle);
    }

    /// Records that the run `handle` of `container` ended (a newer run stays registered).
    pub fn ended(&self, pod: &PodRef, container: &str, handle: &Arc<dyn RunningContainer>) {
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (pod.namespace.clone(), pod.name.clone());
        let Some(entry) = pods.get_mut(&key) else { return };
        if entry.uid != pod.uid {
            return;
        }
        if entry.containers.get(container).is_some_and(|h| Arc::ptr_eq(h, handle)) {
            entry.containers.remove(container);
        }
        if entry.containers.is_empty() {
            pods.remove(&key);
        }
    }

    /// The running container `namespace/pod/container`.
    pub fn container(&self, namespace: &str, pod: &str, container: &str) -> Option<Arc<dyn RunningContainer>> {
        let pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        pods.get(&(namespace.to_string(), pod.to_string()))?.containers.get(container).cloned()
    }

    /// The address of `namespace/pod` while any of its containers runs.
    pub fn pod_ip(&self, namespace: &str, pod: &str) -> Option<IpAddr> {
        let pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        pods.get(&(namespace.to_string(), pod.to_string())).map(|e| e.ip)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::runtime::{ContainerStats, ExitInfo};

    #[derive(Debug)]
    struct Idle;

    #[async_trait]
    impl RunningContainer for Idle {
        async fn wait(&self) -> ExitInfo {
            std::future::pending().await
        }
        async fn stop(&self, _grace: Duration) {}
        fn stats(&self) -> ContainerStats {
            ContainerStats::default()
        }
    }

    fn pod(uid: &str) -> PodRef {
        PodRef { namespace: "ns".into(), name: "web".into(), uid: uid.into() }
    }

    #[test]
    fn runs_are_registered_until_they_end() {
        let targets = StreamTargets::default();
        let ip: IpAddr = "127.244.0.5".parse().expect("ip");
        let first: Arc<dyn RunningContainer> = Arc::new(Idle);
        targets.started(&pod("u1"), ip, "app", first.clone());
        assert!(targets.container("ns", "web", "app").is_some());
        assert!(targets.container("ns", "web", "other").is_none());
        assert_eq!(targets.pod_ip("ns", "web"), Some(ip));
        // A restart registers a new run; the old run's end must not remove it.
        let second: Arc<dyn RunningContainer> = Arc::new(Idle);
        targets.started(&pod("u1"), ip, "app", second.clone());
        targets.ended(&pod("u1"), "app", &first);
        assert!(targets.container("ns", "web", "app").is_some());
        targets.ended(&pod("u1"), "app", &second);
        assert!(targets.container("ns", "web", "app").is_none());
        assert_eq!(targets.pod_ip("ns", "web"), None);
    }
}
