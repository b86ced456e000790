use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("valid timestamp")
}

fn view(name: &str, state: ViewState) -> ContainerView {
    let running = matches!(state, ViewState::Running { .. });
    ContainerView {
        name: name.into(),
        image: "img:1".into(),
        image_id: "sha256:abc".into(),
        state,
        last_terminated: None,
        restart_count: 0,
        ready: running,
        started: running,
        restartable: false,
        container_id: None,
    }
}

fn waiting(reason: &str) -> ViewState {
    ViewState::Waiting { reason: reason.into(), message: None }
}

fn exited(code: i32) -> ViewState {
    ViewState::Terminated(Terminated {
        exit_code: code,
        reason: if code == 0 { "Completed".into() } else { "Error".into() },
        message: None,
        started_at: Some(ts(10)),
        finished_at: ts(20),
    })
}

fn crashlooping(code: i32) -> ContainerView {
    let mut v = view("c", waiting("CrashLoopBackOff"));
    let ViewState::Terminated(t) = exited(code) else { unreachable!() };
    v.last_terminated = Some(t);
    v.restart_count = 2;
    v
}

fn running() -> ViewState {
    ViewState::Running { started_at: ts(10) }
}

fn pod(policy: &str) -> Pod {
    Pod {
        spec: Some(PodSpec {
            restart_policy: Some(policy.into()),
            containers: vec![Container { name: "c".into(), ..Container::default() }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

#[test]
fn phases() {
    use RestartPolicy::*;
    let cases: Vec<(RestartPolicy, Vec<ContainerView>, &str)> = vec![
        (Always, vec![], "Pending"),
        (Always, vec![view("a", waiting("ContainerCreating"))], "Pending"),
        (Always, vec![view("a", running()), view("b", waiting("ErrImagePull"))], "Pending"),
        (Always, vec![view("a", running())], "Running"),
        (Never, vec![view("a", running()), view("b", exited(1))], "Running"),
        (Always, vec![crashlooping(1)], "Running"),
        (OnFailure, vec![crashlooping(1)], "Running"),
        (Always, vec![view("a", exited(0))], "Running"),
        (OnFailure, vec![view("a", exited(0)), view("b", exited(0))], "Succeeded"),
        (Never, vec![view("a", exited(0))], "Succeeded"),
        (Never, vec![view("a", exited(0)), view("b", exited(2))], "Failed"),
        (OnFailure, vec![view("a", exited(0)), view("b", exited(2))], "Running"),
    ];
    for (policy, containers, want) in cases {
        assert_eq!(pod_phase(policy, &[], &containers), want, "{policy:?} {containers:?}");
    }
}

#[test]
fn ready_conditions_follow_containers_and_keep_transition_times() {
    let p0 = pod("Always");
    let views = [view("c", running())];
    let input = StatusInput {
        pod: &p0,
        containers: &views,
        previous: None,
        init_containers: &[],
        pod_ip: Some("127.244.0.2".parse().expect("ip")),
        host_ip: "127.0.0.1".parse().expect("ip"),
        start_time: Some(ts(5)),
        now: ts(100),
    };
    let s = pod_status(&input);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.pod_ip.as_deref(), Some("127.244.0.2"));
    assert_eq!(s.pod_ips.as_ref().map(Vec::len), Some(1));
    assert_eq!(s.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    let cond = |s: &PodStatus, t: &str| {
        s.conditions.as_ref().and_then(|cs| cs.iter().find(|c| c.type_ == t)).cloned().expect("condition present")
    };
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(cond(&s, t).status, "True", "{t}");
    }
    let cs = &s.container_statuses.as_ref().expect("statuses")[0];
    assert!(cs.ready && cs.started == Some(true));
    assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());

    // Later, unchanged: transition times stay.
    let p = Pod { status: Some(s.clone()), ..p0.clone() };
    let later = StatusInput { pod: &p, now: ts(200), ..input.clone() };
    let s2 = pod_status(&later);
    assert_eq!(s2, s, "nothing changed, so the status is identical");

    // The container becomes unready: Ready flips with a new transition time and a message.
    let unready = [ContainerView { ready: false, ..view("c", running()) }];
    let s3 = pod_status(&StatusInput { containers: &unready, now: ts(300), ..later });
    let ready = cond(&s3, "Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
    assert_eq!(ready.message.as_deref(), Some("containers with unready status: [c]"));
    assert_eq!(ready.last_transition_time, Some(Time(ts(300))));
    assert_eq!(cond(&s3, "PodScheduled").last_transition_time, Some(Time(ts(100))));
}

#[test]
fn terminal_pods_are_not_ready_and_show_exit_states() {
    let p = pod("Never");
    let views = [view("c", exited(3))];
    let s = pod_status(&StatusInput {
        pod: &p,
        containers: &views,
        previous: None,
        init_containers: &[],
        pod_ip: None,
        host_ip: "127.0.0.1".parse().expect("ip"),
        start_time: Some(ts(5)),
        now: ts(100),
    });
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    let ready = s.conditions.iter().flatten().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("False", Some("PodCompleted")));
    let term =
        s.container_statuses.as_ref().and_then(|c| c[0].state.clone()).and_then(|s| s.terminated).expect("terminated");
    assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));
    assert_eq!(s.pod_ip, None);
}

#[test]
fn crash_loop_shows_waiting_and_last_state() {
    let p = pod("Always");
    let views = [crashlooping(1)];
    let s = pod_status(&StatusInput {
        pod: &p,
        containers: &views,
        previous: None,
        init_containers: &[],
        pod_ip: None,
        host_ip: "127.0.0.1".parse().expect("ip"),
        start_time: None,
        now: ts(100),
    });
    let cs = &s.container_statuses.as_ref().expect("statuses")[0];
    assert_eq!(cs.restart_count, 2);
    assert!(!cs.ready);
    let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref()).expect("waiting");
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()).expect("last terminated");
    assert_eq!(last.exit_code, 1);
}

#[test]
fn qos_classes() {
    let q = |s: &str| Quantity(s.into());
    let with = |limits: &[(&str, &str)], requests: &[(&str, &str)]| PodSpec {
        containers: vec![Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: Some(limits.iter().map(|(k, v)| (k.to_string(), q(v))).collect::<BTreeMap<_, _>>()),
                requests: Some(requests.iter().map(|(k, v)| (k.to_string(), q(v))).collect::<BTreeMap<_, _>>()),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        }],
        ..PodSpec::default()
    };
    assert_eq!(qos_class(&with(&[], &[])), "BestEffort");
    assert_eq!(qos_class(&with(&[("cpu", "1"), ("memory", "1Gi")], &[])), "Guaranteed");
    assert_eq!(qos_class(&with(&[("cpu", "1"), ("memory", "1Gi")], &[("cpu", "1"), ("memory", "1Gi")])), "Guaranteed");
    assert_eq!(qos_class(&with(&[("cpu", "1"), ("memory", "1Gi")], &[("cpu", "500m")])), "Burstable");
    assert_eq!(qos_class(&with(&[("memory", "1Gi")], &[])), "Burstable");
    assert_eq!(qos_class(&with(&[], &[("cpu", "100m")])), "Burstable");
}

// ---- init containers -----------------------------------------------------------------------

fn init_pod(policy: &str, init: &[&str]) -> Pod {
    let mut p = pod(policy);
    if let Some(spec) = p.spec.as_mut() {
        spec.init_containers =
            Some(init.iter().map(|n| Container { name: (*n).into(), ..Container::default() }).collect());
    }
    p
}

fn status_with(p: &Pod, init: &[ContainerView], app: &[ContainerView]) -> PodStatus {
    pod_status(&StatusInput {
        pod: p,
        previous: None,
        init_containers: init,
        containers: app,
        pod_ip: Some("127.244.0.2".parse().expect("ip")),
        host_ip: "127.0.0.1".parse().expect("ip"),
        start_time: Some(ts(5)),
        now: ts(100),
    })
}

fn condition_of(s: &PodStatus, t: &str) -> PodCondition {
    s.conditions.iter().flatten().find(|c| c.type_ == t).cloned().expect("condition present")
}

fn waiting_reason_of(cs: &ContainerStatus) -> Option<&str> {
    cs.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref())
}

fn sidecar(state: ViewState) -> ContainerView {
    ContainerView { restartable: true, ..view("proxy", state) }
}

#[test]
fn init_phases() {
    use RestartPolicy::*;
    let app = || vec![view("app", waiting("ContainerCreating"))];
    let mut failed_then_waiting = view("a", waiting("CrashLoopBackOff"));
    failed_then_waiting.last_terminated = match exited(1) {
        ViewState::Terminated(t) => Some(t),
        _ => None,
    };
    let cases: Vec<(RestartPolicy, Vec<ContainerView>, Vec<ContainerView>, &str)> = vec![
        (
            Always,
            vec![view("a", waiting("ContainerCreating")), view("b", waiting("ContainerCreating"))],
            app(),
            "Pending",
        ),
        (Always, vec![view("a", running()), view("b", waiting("ContainerCreating"))], app(), "Pending"),
        (Never, vec![view("a", exited(0)), view("b", running())], app(), "Pending"),
        (Never, vec![view("a", exited(0)), view("b", exited(3))], app(), "Failed"),
        (OnFailure, vec![failed_then_waiting.clone()], app(), "Pending"),
        (Always, vec![failed_then_waiting], app(), "Pending"),
        (Always, vec![view("a", exited(0))], vec![view("app", running())], "Running"),
        (Never, vec![view("a", exited(0))], vec![view("app", exited(0))], "Succeeded"),
        // A sidecar does not hold the phase: running beside a finished app, the pod is done.
        (Never, vec![sidecar(running()), view("a", exited(0))], vec![view("app", exited(0))], "Succeeded"),
        (Always, vec![sidecar(waiting("ContainerCreating"))], app(), "Pending"),
    ];
    for (policy, init, containers, want) in cases {
        assert_eq!(pod_phase(policy, &init, &containers), want, "{policy:?} {init:?} {containers:?}");
    }
}

#[test]
fn initializing_pod_shows_init_states_and_pod_initializing() {
    let p = init_pod("Always", &["a", "b"]);
    let init = [view("a", running()), view("b", waiting("ContainerCreating"))];
    let app = [view("c", waiting("ContainerCreating"))];
    let s = status_with(&p, &init, &app);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let initialized = condition_of(&s, "Initialized");
    assert_eq!(initialized.status, "False");
    assert_eq!(initialized.reason.as_deref(), Some("ContainersNotInitialized"));
    assert_eq!(initialized.message.as_deref(), Some("containers with incomplete status: [a b]"));
    let inits = s.init_container_statuses.as_ref().expect("initContainerStatuses");
    assert_eq!(inits.len(), 2);
    assert!(inits[0].state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    assert!(!inits[0].ready);
    assert_eq!(waiting_reason_of(&inits[1]), Some("PodInitializing"), "not started yet: kubectl shows Init:0/2");
    let apps = s.container_statuses.as_ref().expect("containerStatuses");
    assert_eq!(waiting_reason_of(&apps[0]), Some("PodInitializing"));
    assert_eq!(condition_of(&s, "Ready").status, "False");
}

#[test]
fn completed_init_containers_are_ready_and_the_pod_initialized() {
    let p = init_pod("Always", &["a", "b"]);
    let init = [view("a", exited(0)), view("b", exited(0))];
    let app = [view("c", running())];
    let s = status_with(&p, &init, &app);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let initialized = condition_of(&s, "Initialized");
    assert_eq!((initialized.status.as_str(), initialized.reason), ("True", None));
    let inits = s.init_container_statuses.as_ref().expect("initContainerStatuses");
    for cs in inits {
        assert!(cs.ready, "a completed init container is ready: {cs:?}");
        let term = cs.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("terminated");
        assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));
    }
    assert_eq!(condition_of(&s, "Ready").status, "True");
    // Waiting between init containers: the next one's own reason shows once it is launched,
    // the apps still say PodInitializing.
    let between = [view("a", exited(0)), view("b", waiting("ErrImagePull"))];
    let s = status_with(&p, &between, &[view("c", waiting("ContainerCreating"))]);
    let inits = s.init_container_statuses.as_ref().expect("initContainerStatuses");
    assert_eq!(waiting_reason_of(&inits[1]), Some("ErrImagePull"), "kubectl shows Init:ErrImagePull");
    assert_eq!(condition_of(&s, "Initialized").message.as_deref(), Some("containers with incomplete status: [b]"));
}

#[test]
fn failed_init_container_fails_the_pod_under_never() {
    let p = init_pod("Never", &["a"]);
    let ViewState::Terminated(mut t) = exited(1) else { unreachable!() };
    t.reason = "OOMKilled".into();
    t.exit_code = 137;
    let init = [view("a", ViewState::Terminated(t))];
    let app = [view("c", waiting("ContainerCreating"))];
    let s = status_with(&p, &init, &app);
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(condition_of(&s, "Initialized").status, "False");
    let ready = condition_of(&s, "Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("False", Some("PodCompleted")));
    let cs = &s.init_container_statuses.as_ref().expect("initContainerStatuses")[0];
    assert!(!cs.ready);
    let term = cs.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("terminated");
    assert_eq!((term.exit_code, term.reason.as_deref()), (137, Some("OOMKilled")));
    assert_eq!(waiting_reason_of(&s.container_statuses.as_ref().expect("statuses")[0]), Some("PodInitializing"));
}

#[test]
fn crash_looping_init_container_keeps_its_restart_count() {
    let p = init_pod("OnFailure", &["a"]);
    let mut a = crashlooping(2);
    a.name = "a".into();
    let s = status_with(&p, &[a], &[view("c", waiting("ContainerCreating"))]);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let cs = &s.init_container_statuses.as_ref().expect("initContainerStatuses")[0];
    assert_eq!(cs.restart_count, 2);
    assert_eq!(waiting_reason_of(cs), Some("CrashLoopBackOff"), "kubectl shows Init:CrashLoopBackOff");
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()).expect("last terminated");
    assert_eq!(last.exit_code, 2);
}

#[test]
fn sidecars_are_done_once_started_and_count_for_readiness() {
    let p = init_pod("Always", &["proxy"]);
    let starting = [sidecar(waiting("ContainerCreating"))];
    let s = status_with(&p, &starting, &[view("c", waiting("ContainerCreating"))]);
    assert_eq!(condition_of(&s, "Initialized").status, "False");

    let up = [sidecar(running())];
    let s = status_with(&p, &up, &[view("c", running())]);
    assert_eq!(condition_of(&s, "Initialized").status, "True");
    assert_eq!(condition_of(&s, "Ready").status, "True");
    assert!(s.init_container_statuses.as_ref().expect("statuses")[0].ready);

    // The sidecar restarts later: still initialized, but the pod is not ready meanwhile.
    let mut restarting = sidecar(waiting("CrashLoopBackOff"));
    restarting.last_terminated = match exited(1) {
        ViewState::Terminated(t) => Some(t),
        _ => None,
    };
    let s = status_with(&p, &[restarting], &[view("c", running())]);
    assert_eq!(condition_of(&s, "Initialized").status, "True");
    let ready = condition_of(&s, "Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.message.as_deref(), Some("containers with unready status: [proxy]"));
    assert_eq!(s.phase.as_deref(), Some("Running"));
}

#[test]
fn pods_without_init_containers_have_no_init_statuses() {
    let p = pod("Always");
    let s = status_with(&p, &[], &[view("c", running())]);
    assert_eq!(s.init_container_statuses, None);
    assert_eq!(condition_of(&s, "Initialized").status, "True");
}
