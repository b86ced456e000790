//! Which containers of a pod may start now: init containers one after another, then the app
//! containers — pure, so the order is tested without running anything.
//!
//! What it owns: the kubelet's ordering rules. Regular init containers run one at a time, in
//! spec order, each to completion (exit 0) before the next; a failed one is retried (back-off
//! is the slot's business) or, under `restartPolicy: Never`, ends the pod and nothing after it
//! starts. Sidecars (init containers with `restartPolicy: Always`) start in order too, but the
//! next one only waits until the sidecar has *started* (past its startup probe); they keep
//! running, and are restarted, beside the app containers. Once every init container is done
//! the pod is initialized for good: app containers start, and a sidecar restarting later does
//! not hold them back. What it does not: launch anything or track state (the worker and
//! `container` do).

use tokio::time::Instant;

use super::container::{Slot, SlotKind};

/// What the worker should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    /// Indices of the slots to launch now.
    pub launch: Vec<usize>,
    /// Whether the pod is initialized (sticky: the worker keeps it once true).
    pub initialized: bool,
}

/// Decides what starts now. `slots` holds the init containers first (in spec order), then the
/// app containers; `initialized` is what the worker concluded before.
pub fn plan(slots: &[Slot], initialized: bool, now: Instant) -> StartPlan {
    let mut launch = Vec::new();
    let mut initialized = initialized;
    if !initialized {
        initialized = true;
        for (idx, slot) in slots.iter().enumerate().take_while(|(_, s)| s.kind.is_init()) {
            let done = match slot.kind {
                SlotKind::Sidecar => slot.is_started(),
                _ => slot.view().completed(),
            };
            if done {
                continue;
            }
            if slot.due(now) {
                launch.push(idx);
            }
            initialized = false;
            break;
        }
    }
    if initialized {
        for (idx, slot) in slots.iter().enumerate() {
            // Regular init containers are done; only sidecars and app containers (re)start.
            if slot.kind != SlotKind::Init && slot.due(now) {
                launch.push(idx);
            }
        }
    }
    StartPlan { launch, initialized }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Container;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::runtime::{ContainerStats, ExitInfo, RunningContainer};
    use crate::worker::backoff::{BackoffConfig, RestartPolicy};

    #[derive(Debug)]
    struct Idle;

    #[async_trait::async_trait]
    impl RunningContainer for Idle {
        async fn wait(&self) -> ExitInfo {
            std::future::pending().await
        }
        async fn stop(&self, _grace: Duration) {}
        fn stats(&self) -> ContainerStats {
            ContainerStats::default()
        }
    }

    fn slot(kind: SlotKind, name: &str) -> Slot {
        Slot::new(kind, Container { name: name.into(), ..Container::default() }, None)
    }

    fn start(s: &mut Slot, root: &CancellationToken) {
        s.launching();
        s.started(Arc::new(Idle), "sha256:1".into(), false, root);
    }

    fn exit(s: &mut Slot, code: i32, policy: RestartPolicy) {
        let cfg = BackoffConfig::default();
        let info =
            ExitInfo { exit_code: code, reason: if code == 0 { "Completed" } else { "Error" }.into(), message: None };
        s.exited(info, s.kind.policy(policy), true, &cfg, "p");
    }

    #[tokio::test]
    async fn init_containers_run_one_after_another_then_the_app() {
        let root = CancellationToken::new();
        let now = Instant::now();
        let mut slots = vec![slot(SlotKind::Init, "a"), slot(SlotKind::Init, "b"), slot(SlotKind::App, "app")];
        assert_eq!(plan(&slots, false, now), StartPlan { launch: vec![0], initialized: false });
        start(&mut slots[0], &root);
        assert_eq!(plan(&slots, false, now), StartPlan { launch: vec![], initialized: false }, "a runs: wait");
        exit(&mut slots[0], 0, RestartPolicy::Always);
        assert_eq!(plan(&slots, false, now), StartPlan { launch: vec![1], initialized: false });
        start(&mut slots[1], &root);
        exit(&mut slots[1], 0, RestartPolicy::Always);
        assert_eq!(plan(&slots, false, now), StartPlan { launch: vec![2], initialized: true });
        start(&mut slots[2], &root);
        assert_eq!(plan(&slots, true, now), StartPlan { launch: vec![], initialized: true });
    }

    #[tokio::test]
    async fn a_failed_init_container_holds_everything_back() {
        let root = CancellationToken::new();
        let now = Instant::now();
        // Never: the init container ends for good; nothing else ever starts.
        let mut slots = vec![slot(SlotKind::Init, "a"), slot(SlotKind::App, "app")];
        start(&mut slots[0], &root);
        exit(&mut slots[0], 1, RestartPolicy::Never);
        assert_eq!(plan(&slots, false, Instant::now()), StartPlan { launch: vec![], initialized: false });
        // OnFailure: it is retried (the first retry is immediate), the app still waits.
        let mut slots = vec![slot(SlotKind::Init, "a"), slot(SlotKind::App, "app")];
        start(&mut slots[0], &root);
        exit(&mut slots[0], 1, RestartPolicy::OnFailure);
        assert_eq!(plan(&slots, false, now + Duration::from_millis(1)).launch, vec![0]);
        // Always in the pod: an init container is still retried only on failure.
        let mut slots = vec![slot(SlotKind::Init, "a"), slot(SlotKind::App, "app")];
        start(&mut slots[0], &root);
        exit(&mut slots[0], 0, RestartPolicy::Always);
        assert_eq!(plan(&slots, false, Instant::now()).launch, vec![1]);
    }

    #[tokio::test]
    async fn sidecars_start_in_order_and_keep_restarting() {
        let root = CancellationToken::new();
        let now = Instant::now();
        let mut slots = vec![slot(SlotKind::Sidecar, "proxy"), slot(SlotKind::Init, "a"), slot(SlotKind::App, "app")];
        assert_eq!(plan(&slots, false, now).launch, vec![0]);
        start(&mut slots[0], &root);
        assert_eq!(plan(&slots, false, now).launch, vec![1], "started sidecar: the next init container runs");
        start(&mut slots[1], &root);
        exit(&mut slots[1], 0, RestartPolicy::Never);
        assert_eq!(plan(&slots, false, now), StartPlan { launch: vec![2], initialized: true });
        start(&mut slots[2], &root);
        // The sidecar crashes after initialization: restarted, the pod stays initialized.
        exit(&mut slots[0], 1, RestartPolicy::Never);
        assert_eq!(plan(&slots, true, Instant::now()), StartPlan { launch: vec![0], initialized: true });
    }

    #[test]
    fn no_init_containers_means_initialized() {
        let slots = vec![slot(SlotKind::App, "a"), slot(SlotKind::App, "b")];
        assert_eq!(plan(&slots, false, Instant::now()), StartPlan { launch: vec![0, 1], initialized: true });
    }
}
