//! A pod worker's reactions to what its tasks report: a launch finished (start waiting and
//! probing), a container exited (restart policy and back-off), a probe result (readiness,
//! or a kill on liveness/startup failure) — with the kubelet's events for each.

use std::time::Duration;

use tracing::{info, warn};

use super::container::Run;
use super::launch::Launched;
use super::{Event, Worker};
use crate::events::EventType;
use crate::probe::{self, Action, ProbeKind, ProbeReport, ProbeSettings, ProbeTarget};

/// A probe's name as kubelet messages capitalise it ("Liveness probe failed: …").
fn probe_title(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Startup => "Startup",
        ProbeKind::Liveness => "Liveness",
        ProbeKind::Readiness => "Readiness",
    }
}

impl Worker {
    pub(super) fn handle(&mut self, event: Event) {
        match event {
            Event::Launched { idx, generation, launched } => self.launched(idx, generation, launched),
            Event::Exited { idx, generation, info } => {
                let pod = format!("{}_{}({})", self.pod_ref.name, self.pod_ref.namespace, self.pod_ref.uid);
                let field_path = self.field_path(idx);
                let restart = !self.stopping && !self.done;
                let slot = &mut self.slots[idx];
                if slot.generation == generation && matches!(slot.run, Run::Running { .. }) {
                    info!(container = slot.name(), exit_code = info.exit_code, reason = %info.reason, "container exited");
                    let policy = slot.kind.policy(self.policy);
                    let delay = slot.exited(info, policy, restart, &self.ctx.backoff, &format!("pod={pod}"));
                    if delay.is_some_and(|d| !d.is_zero()) {
                        let message = format!("Back-off restarting failed container {} in pod {pod}", slot.name());
                        self.events.container(&field_path, EventType::Warning, "BackOff", message);
                    }
                }
            }
            Event::Probe { idx, generation, report } => self.probed(idx, generation, report),
        }
    }

    fn launched(&mut self, idx: usize, generation: u64, launched: Launched) {
        let field_path = self.field_path(idx);
        let slot = &mut self.slots[idx];
        let policy = slot.kind.policy(self.policy);
        let current = slot.generation == generation && matches!(slot.run, Run::Launching);
        let handle = match launched.result {
            Ok(handle) if !current => {
                // A stray run (should not happen): do not leave it running.
                self.tasks.spawn(async move { handle.stop(Duration::ZERO).await });
                return;
            }
            Ok(handle) => handle,
            Err(_) if !current => return,
            Err(failure) => {
                warn!(container = slot.name(), ?failure, "launch failed");
                return slot.launch_failed(failure, launched.image_id, policy, &self.ctx.backoff);
            }
        };
        info!(container = slot.name(), adopted = launched.adopted, "container started");
        let probes =
            slot.started(handle.clone(), launched.image_id.unwrap_or_default(), launched.adopted, &self.cancel);
        if let Some(info) = launched.post_start_failed {
            // The run started and was killed for its postStart hook: it ended, like any exit.
            drop(probes);
            let pod = format!("{}_{}({})", self.pod_ref.name, self.pod_ref.namespace, self.pod_ref.uid);
            let restart = !self.stopping && !self.done;
            let delay = slot.exited(info, policy, restart, &self.ctx.backoff, &format!("pod={pod}"));
            if delay.is_some_and(|d| !d.is_zero()) {
                let message = format!("Back-off restarting failed container {} in pod {pod}", slot.name());
                self.events.container(&field_path, EventType::Warning, "BackOff", message);
            }
            return;
        }
        let tx = self.tx.clone();
        let waiter = handle.clone();
        let pod_ip = self.pod_ip.unwrap_or(self.ctx.host_ip);
        let (targets, pod_ref, name) = (self.ctx.stream_targets.clone(), self.pod_ref.clone(), slot.name().to_string());
        targets.started(&pod_ref, pod_ip, &name, handle.clone());
        let http = handle.http_handoff();
        let local_http = self.ctx.local_http.clone();
        if let Some((addr, handoff)) = &http {
            local_http.started(*addr, handoff.clone());
        }
        self.tasks.spawn(async move {
            let info = waiter.wait().await;
            targets.ended(&pod_ref, &name, &waiter);
            if let Some((addr, handoff)) = &http {
                local_http.ended(*addr, handoff);
            }
            let _ = tx.send(Event::Exited { idx, generation, info });
        });
        if self.stopping {
            // Terminating already: the run is stopped by `stop_all`.
            return;
        }
        let pod_ip = self.pod_ip.unwrap_or(self.ctx.host_ip);
        for kind in [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness] {
            let Some(p) = kind.of(&slot.container) else { continue };
            let action = Action::resolve(p, &ProbeTarget { pod_ip, container: &slot.container });
            let task = probe::run_probe(
                kind,
                ProbeSettings::of(kind, p),
                action,
                self.ctx.http.clone(),
                handle.clone(),
                self.tx.clone(),
                move |report| Event::Probe { idx, generation, report },
                probes.clone(),
            );
            self.tasks.spawn(task);
        }
    }

    fn probed(&mut self, idx: usize, generation: u64, report: ProbeReport) {
        let grace = self.termination_grace();
        let field_path = self.field_path(idx);
        let slot = &mut self.slots[idx];
        let Run::Running { handle, probes, .. } = &slot.run else { return };
        if slot.generation != generation || self.stopping {
            return;
        }
        // Liveness and readiness wait for the startup probe.
        let started = slot.is_started();
        if report.kind != ProbeKind::Startup && !started {
            return;
        }
        let Some(tracker) = slot.probes.get_mut(&report.kind) else { return };
        if !report.ok {
            let message = format!("{} probe failed: {}", probe_title(report.kind), report.detail);
            self.events.container(&field_path, EventType::Warning, "Unhealthy", message);
        }
        let changed = tracker.record(report.ok);
        let kill = match report.kind {
            ProbeKind::Startup => !tracker.verdict() && tracker.failing(),
            ProbeKind::Liveness => changed == Some(false),
            ProbeKind::Readiness => {
                if let Some(ready) = changed {
                    info!(container = %slot.container.name, ready, detail = %report.detail, "readiness changed");
                }
                false
            }
        };
        if kill {
            info!(container = %slot.container.name, probe = ?report.kind, detail = %report.detail, "probe failed; killing the container");
            let message = format!(
                "Container {} failed {} probe, will be restarted",
                slot.container.name,
                probe_title(report.kind).to_lowercase()
            );
            self.events.container(&field_path, EventType::Normal, "Killing", message);
            probes.cancel();
            let handle = handle.clone();
            let stop = self.stopper(idx, handle, grace);
            self.tasks.spawn(stop);
        }
    }
}
