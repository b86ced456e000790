//! Container lifecycle hooks — `lifecycle.postStart` and `lifecycle.preStop` — run as the
//! kubelet runs them.
//!
//! What it owns: running one handler against a running container ([`run_handler`]: `exec`
//! inside the container through the runtime, `httpGet` against the pod IP, `sleep`), the
//! postStart step of a start ([`post_start`]) and the preStop-then-stop sequence with its share
//! of the grace period ([`stop`]). What it does not: decide when a container starts or stops,
//! or what a failed postStart means for its restarts (the pod worker does), or write events
//! (callers are told of failures and record `FailedPostStartHook` / `FailedPreStopHook`).
//!
//! Kubelet behaviour kept on purpose:
//! - postStart has no timeout of its own; the container is not Running until it returns (the
//!   worker keeps it in ContainerCreating meanwhile). A pod deleted meanwhile cancels it.
//! - preStop runs before the stop signal and is counted inside the grace period: the signal
//!   follows with what is left of it, at least [`MIN_GRACE_AFTER_PRE_STOP`]. A preStop that
//!   fails or overruns does not hold up the stop.
//! - `httpGet` handlers fail only when no response arrives; the status code is not looked at.
//! - `tcpSocket` is deprecated as a handler and always fails.
//! - An `exec` handler in a WASM container fails with the runtime's message: a WebAssembly
//!   guest has no process table to start a command in.
//!
//! Failure messages never include the command's output (it may carry secrets, which is why the
//! kubelet keeps it out of events too); the output goes to the agent's log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::probe::{Action, ProbeTarget};
use crate::runtime::RunningContainer;

/// The least grace the stop signal gets after a preStop hook used up the rest (the kubelet's
/// `minimumGracePeriodInSeconds`).
pub const MIN_GRACE_AFTER_PRE_STOP: Duration = Duration::from_secs(2);

/// What a hook runs against: one running container of a pod.
#[derive(Debug, Clone)]
pub struct HookTarget {
    pub container: Container,
    pub handle: Arc<dyn RunningContainer>,
    pub pod_ip: IpAddr,
    pub http: reqwest::Client,
}

impl HookTarget {
    fn post_start(&self) -> Option<&LifecycleHandler> {
        self.container.lifecycle.as_ref().and_then(|l| l.post_start.as_ref())
    }

    fn pre_stop(&self) -> Option<&LifecycleHandler> {
        self.container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
    }
}

/// Runs `handler` against `target` until it is done; `Err` says why it failed.
pub async fn run_handler(handler: &LifecycleHandler, target: &HookTarget) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err("exec handler has no command".into());
        }
        let out = crate::probe::exec::run(target.handle.as_ref(), &command, None).await.map_err(|e| e.to_string())?;
        if out.exit_code == 0 {
            return Ok(());
        }
        warn!(container = %target.container.name, ?command, exit_code = out.exit_code, output = %out.output.trim_end(), "exec hook failed");
        return Err(format!("command {:?} exited with code {}", command.join(" "), out.exit_code));
    }
    if let Some(get) = &handler.http_get {
        let probe = Probe { http_get: Some(get.clone()), ..Probe::default() };
        let (url, headers) =
            match Action::resolve(&probe, &ProbeTarget { pod_ip: target.pod_ip, container: &target.container }) {
                Action::Http { url, headers } => (url, headers),
                Action::Unsupported(why) => return Err(why),
                other => return Err(format!("unexpected httpGet resolution {other:?}")),
            };
        let mut req = target.http.get(&url).header("User-Agent", "kube-lifecycle/skiff");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        return match req.send().await {
            Ok(resp) => {
                info!(container = %target.container.name, %url, status = resp.status().as_u16(), "httpGet hook answered");
                Ok(())
            }
            Err(e) => Err(format!("Get {url:?}: {e}")),
        };
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        return Ok(());
    }
    if handler.tcp_socket.is_some() {
        return Err("tcpSocket is not supported as a lifecycle handler (deprecated)".into());
    }
    Err("lifecycle handler has no action (exec, httpGet or sleep)".into())
}

/// Runs the container's postStart hook, if it has one. The wait ends early, without a
/// failure, when `cancel` fires (the pod terminates) or the container exits meanwhile (the
/// exit is what counts then, as in Kubernetes: the handler is aborted).
pub async fn post_start(target: &HookTarget, cancel: &CancellationToken) -> Result<(), String> {
    let Some(handler) = target.post_start() else { return Ok(()) };
    tokio::select! {
        result = run_handler(handler, target) => result,
        _ = cancel.cancelled() => {
            info!(container = %target.container.name, "postStart hook abandoned: the pod is terminating");
            Ok(())
        }
        _ = target.handle.wait() => {
            info!(container = %target.container.name, "postStart hook abandoned: the container exited");
            Ok(())
        }
    }
}

/// What is left of `grace` for the stop signal once a preStop hook ran for `elapsed`.
pub fn grace_after_pre_stop(grace: Duration, elapsed: Duration) -> Duration {
    grace.saturating_sub(elapsed).max(MIN_GRACE_AFTER_PRE_STOP)
}

/// Stops the container within `grace`: its preStop hook first (when it has one and `grace` is
/// not zero), bounded by `grace`, then the stop signal with the rest. `on_failure` is told why
/// a preStop hook failed. Returns once the container has ended.
pub async fn stop(target: &HookTarget, grace: Duration, on_failure: impl FnOnce(String)) {
    let mut grace_left = grace;
    if let Some(handler) = target.pre_stop().filter(|_| !grace.is_zero()) {
        let began = Instant::now();
        match tokio::time::timeout(grace, run_handler(handler, target)).await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => on_failure(message),
            Err(_) => {
                warn!(container = %target.container.name, ?grace, "preStop hook did not complete within the grace period")
            }
        }
        grace_left = grace_after_pre_stop(grace, began.elapsed());
    }
    target.handle.stop(grace_left).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, Lifecycle, SleepAction, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::runtime::{ContainerStats, ExecIo, ExitInfo, RuntimeError};

    /// Records what happened to it, with the (paused) clock's time since `t0`.
    #[derive(Debug)]
    struct Recorder {
        t0: Instant,
        exec_takes: Duration,
        exec_code: i32,
        log: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn new(exec_takes: Duration, exec_code: i32) -> Arc<Recorder> {
            Arc::new(Recorder { t0: Instant::now(), exec_takes, exec_code, log: Mutex::new(Vec::new()) })
        }
        fn note(&self, what: String) {
            self.log.lock().expect("lock").push(format!("{}s {what}", self.t0.elapsed().as_secs()));
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().expect("lock").clone()
        }
    }

    #[async_trait::async_trait]
    impl RunningContainer for Recorder {
        async fn wait(&self) -> ExitInfo {
            std::future::pending().await
        }
        async fn stop(&self, grace: Duration) {
            self.note(format!("stop grace={}s", grace.as_secs()));
        }
        fn stats(&self) -> ContainerStats {
            ContainerStats::default()
        }
        async fn exec(&self, argv: Vec<String>, _tty: bool, _io: ExecIo) -> Result<i32, RuntimeError> {
            self.note(format!("exec {}", argv.join(" ")));
            tokio::time::sleep(self.exec_takes).await;
            self.note("exec done".into());
            Ok(self.exec_code)
        }
    }

    fn exec_handler(cmd: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction { command: Some(cmd.iter().map(|s| s.to_string()).collect()) }),
            ..LifecycleHandler::default()
        }
    }

    fn target(handle: Arc<Recorder>, pre_stop: Option<LifecycleHandler>) -> HookTarget {
        let container = Container {
            name: "c".into(),
            lifecycle: Some(Lifecycle {
                pre_stop,
                post_start: Some(exec_handler(&["touch", "/started"])),
                ..Lifecycle::default()
            }),
            ..Container::default()
        };
        HookTarget { container, handle, pod_ip: "127.0.0.1".parse().expect("ip"), http: reqwest::Client::new() }
    }

    #[tokio::test(start_paused = true)]
    async fn pre_stop_runs_before_the_signal_inside_the_grace_period() {
        let rec = Recorder::new(Duration::from_secs(3), 0);
        let t = target(rec.clone(), Some(exec_handler(&["sh", "-c", "drain"])));
        stop(&t, Duration::from_secs(10), |m| panic!("no failure expected: {m}")).await;
        assert_eq!(rec.log(), ["0s exec sh -c drain", "3s exec done", "3s stop grace=7s"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrunning_pre_stop_is_cut_and_the_signal_still_gets_the_minimum() {
        let rec = Recorder::new(Duration::from_secs(60), 0);
        let t = target(rec.clone(), Some(exec_handler(&["sleep", "60"])));
        stop(&t, Duration::from_secs(5), |m| panic!("a timeout is not a failure event: {m}")).await;
        assert_eq!(rec.log(), ["0s exec sleep 60", "5s stop grace=2s"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_pre_stop_is_reported_and_the_stop_goes_on() {
        let rec = Recorder::new(Duration::ZERO, 7);
        let t = target(rec.clone(), Some(exec_handler(&["false"])));
        let mut failure = None;
        stop(&t, Duration::from_secs(30), |m| failure = Some(m)).await;
        assert_eq!(failure.as_deref(), Some("command \"false\" exited with code 7"));
        assert_eq!(rec.log(), ["0s exec false", "0s exec done", "0s stop grace=30s"]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_pre_stop_or_no_grace_means_the_signal_at_once() {
        let rec = Recorder::new(Duration::ZERO, 0);
        stop(&target(rec.clone(), None), Duration::from_secs(30), |_| {}).await;
        stop(&target(rec.clone(), Some(exec_handler(&["x"]))), Duration::ZERO, |_| {}).await;
        assert_eq!(rec.log(), ["0s stop grace=30s", "0s stop grace=0s"]);
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_pre_stop_waits_and_post_start_runs_its_handler() {
        let rec = Recorder::new(Duration::from_secs(1), 0);
        let sleep = LifecycleHandler { sleep: Some(SleepAction { seconds: 4 }), ..LifecycleHandler::default() };
        let t = target(rec.clone(), Some(sleep));
        stop(&t, Duration::from_secs(10), |_| {}).await;
        assert_eq!(rec.log(), ["4s stop grace=6s"]);
        let rec = Recorder::new(Duration::from_secs(1), 0);
        post_start(&target(rec.clone(), None), &CancellationToken::new()).await.expect("postStart");
        assert_eq!(rec.log(), ["0s exec touch /started", "1s exec done"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_terminating_pod_cancels_post_start() {
        let rec = Recorder::new(Duration::from_secs(3600), 0);
        let cancel = CancellationToken::new();
        let t = target(rec.clone(), None);
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            canceller.cancel();
        });
        post_start(&t, &cancel).await.expect("a cancelled postStart is not a failure");
        assert_eq!(rec.log(), ["0s exec touch /started"]);
    }

    #[tokio::test]
    async fn handlers_that_cannot_work_say_why() {
        let rec = Recorder::new(Duration::ZERO, 0);
        let t = target(rec, None);
        let tcp = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(80), host: None }),
            ..LifecycleHandler::default()
        };
        assert!(run_handler(&tcp, &t).await.is_err_and(|e| e.contains("tcpSocket")));
        assert!(run_handler(&LifecycleHandler::default(), &t).await.is_err_and(|e| e.contains("no action")));
        assert!(run_handler(&exec_handler(&[]), &t).await.is_err_and(|e| e.contains("no command")));
        let named = LifecycleHandler {
            http_get: Some(HTTPGetAction { port: IntOrString::String("nope".into()), ..HTTPGetAction::default() }),
            ..LifecycleHandler::default()
        };
        assert!(run_handler(&named, &t).await.is_err_and(|e| e.contains("no port named")));
    }

    #[tokio::test]
    async fn http_get_succeeds_on_any_answer_and_fails_without_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.expect("read");
            s.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await
                .expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let get = |port: i32| LifecycleHandler {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(port),
                path: Some("/hook".into()),
                ..HTTPGetAction::default()
            }),
            ..LifecycleHandler::default()
        };
        let t = target(Recorder::new(Duration::ZERO, 0), None);
        run_handler(&get(i32::from(port)), &t).await.expect("any answer is a success, as in the kubelet");
        let request = server.await.expect("server");
        assert!(request.starts_with("GET /hook HTTP/1.1"), "{request}");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed_port = closed.local_addr().expect("addr").port();
        drop(closed);
        assert!(run_handler(&get(i32::from(closed_port)), &t).await.is_err());
    }

    #[test]
    fn grace_left_after_pre_stop() {
        let s = Duration::from_secs;
        assert_eq!(grace_after_pre_stop(s(30), s(10)), s(20));
        assert_eq!(grace_after_pre_stop(s(30), s(29)), s(2));
        assert_eq!(grace_after_pre_stop(s(1), s(5)), s(2));
    }
}
