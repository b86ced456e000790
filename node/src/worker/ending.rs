//! How a pod worker ends: graceful deletion (grace period, then the object is deleted with a
//! uid precondition and the node-side leftovers are cleaned up), the pod vanishing from the API
//! (stop at once), or the agent stopping (stop quickly, keep IP and volumes for the next start).
//! Every stop of a container goes through [`Worker::stopper`]: its preStop hook first, inside
//! the grace period (`crate::lifecycle`) — except when the agent itself stops.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use kube::api::{DeleteParams, Preconditions};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::container::Run;
use super::{LAUNCH_DRAIN, Worker};
use crate::events::EventType;
use crate::lifecycle::{self, HookTarget};
use crate::runtime::RunningContainer;

/// How a pod's life on this node ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// `deletionTimestamp` is set: honour the grace period, then delete the object.
    Graceful,
    /// The object is gone from the API: stop at once.
    Gone,
}

impl Worker {
    pub(super) fn termination_grace(&self) -> Duration {
        let secs = self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    /// A task stopping slot `idx`'s run `handle` within `grace`: its preStop hook, then the
    /// stop signal (`FailedPreStopHook` when the hook fails).
    pub(super) fn stopper(
        &self,
        idx: usize,
        handle: Arc<dyn RunningContainer>,
        grace: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let target = HookTarget {
            container: self.slots[idx].container.clone(),
            handle,
            pod_ip: self.pod_ip.unwrap_or(self.ctx.host_ip),
            http: self.ctx.http.clone(),
        };
        let (events, field_path) = (self.events.clone(), self.field_path(idx));
        async move {
            lifecycle::stop(&target, grace, |message| {
                warn!(container = %target.container.name, %message, "preStop hook failed");
                events.container(
                    &field_path,
                    EventType::Warning,
                    "FailedPreStopHook",
                    format!("PreStopHook failed: {message}"),
                );
            })
            .await;
        }
    }

    /// Stops every running container with `grace`, all at once (each after its preStop hook);
    /// records how they ended. `agent_exit`: the agent process stops, so containers that
    /// outlive it (OCI) are left running for the next agent to adopt, and no hooks run.
    pub(super) async fn stop_all(&mut self, grace: Duration, agent_exit: bool) {
        let running: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.handle().map(|h| (i, h)))
            .filter(|(_, h)| !(agent_exit && h.survives_agent()))
            .collect();
        for (i, _) in &running {
            let message = format!("Stopping container {}", self.slots[*i].name());
            self.events.container(&self.field_path(*i), EventType::Normal, "Killing", message);
        }
        let stops: Vec<_> = running
            .into_iter()
            .map(|(i, h)| {
                let hooks = (!agent_exit).then(|| self.stopper(i, h.clone(), grace));
                async move {
                    match hooks {
                        Some(stop) => stop.await,
                        None => h.stop(grace).await,
                    }
                    (i, h.wait().await)
                }
            })
            .collect();
        let ended = join_all(stops).await;
        for (i, info) in ended {
            let policy = self.slots[i].kind.policy(self.policy);
            self.slots[i].exited(info, policy, false, &self.ctx.backoff, "");
        }
    }

    /// Waits (bounded) for launches under way, so nothing they start is left behind.
    pub(super) async fn drain_launches(&mut self) {
        let deadline = Instant::now() + LAUNCH_DRAIN;
        while self.slots.iter().any(|s| matches!(s.run, Run::Launching)) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(event)) => self.handle(event),
                _ => return warn!("launches still under way after {LAUNCH_DRAIN:?}; giving up on them"),
            }
        }
    }

    /// The agent stops: stop the containers quickly and keep everything else (IP, volumes) for
    /// the agent's next start.
    pub(super) async fn shutdown(mut self) {
        self.stopping = true;
        self.tasks.abort_all();
        let grace = self.ctx.shutdown_grace;
        self.stop_all(grace, true).await;
        info!("pod worker stopped (agent shutdown)");
    }

    /// The pod is being deleted (or is gone): stop, delete the object, clean up.
    pub(super) async fn end(mut self, ending: Ending) {
        self.stopping = true;
        self.terminating.cancel();
        let grace = match ending {
            Ending::Graceful => {
                let secs = self.pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
                Duration::from_secs(secs.max(0) as u64)
            }
            Ending::Gone => Duration::ZERO,
        };
        info!(?ending, ?grace, "pod terminating");
        let cancel = self.cancel.clone();
        tokio::select! {
            _ = async { self.drain_launches().await; self.stop_all(grace, false).await } => {}
            _ = cancel.cancelled() => {
                // The agent stops meanwhile: finish quickly; the next agent deletes the pod.
                self.stop_all(Duration::ZERO, true).await;
                return;
            }
        }
        self.tasks.abort_all();
        if ending == Ending::Graceful {
            self.report().await;
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(self.pod_ref.uid.clone()), resource_version: None }),
                ..DeleteParams::default()
            };
            match self.api().delete(&self.pod_ref.name, &params).await {
                Ok(_) => info!("pod deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => debug!("pod already gone"),
                Err(e) => warn!(error = %e, "deleting the pod failed"),
            }
        }
        self.release_ip().await;
        // A pod that finished earlier released its IPAM entry, but a restarted agent may still hold one.
        if let Ok(mut ipam) = self.ctx.ipam.lock() {
            let _ = ipam.release(&self.pod_ref.uid);
        }
        self.volumes = None;
        self.ctx.env.cleanup(&self.pod_ref).await;
        info!("pod cleaned up");
    }
}
