//! The runtime against real guests built by `scripts/build-guests.sh`: `http-probe` served over
//! a real socket, `cli-probe` run as a command, hand-written wasip1 modules, garbage bytes.
//!
//! The tests share one runtime (and so compile each guest once); the cache test makes its own.

mod common;
use anyhow::{Context as _, Result};
use common::guest_bytes;
use skiff_wasm_runtime::{
    Artifact, CommandRun, Exit, GuestConfig, HttpOptions, HttpServer, LoadError, OutputSink, OutputStream, Preopen,
    RuntimeConfig, Shape, WasmRuntime,
};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

fn test_config(cache_dir: PathBuf) -> RuntimeConfig {
    // Few pool slots: every test binary reserves its own address space.
    RuntimeConfig { cache_dir, max_instances: 64, ..RuntimeConfig::default() }
}

fn runtime() -> &'static WasmRuntime {
    static RUNTIME: OnceLock<(tempfile::TempDir, WasmRuntime)> = OnceLock::new();
    &RUNTIME
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp cache dir");
            let rt = WasmRuntime::new(test_config(dir.path().to_owned())).expect("runtime");
            (dir, rt)
        })
        .1
}

fn load(name: &str) -> Artifact {
    let bytes = guest_bytes(name);
    runtime().load(&format!("test:{name}"), &bytes).expect("load guest")
}

/// Captures a guest's output.
#[derive(Debug, Default)]
struct Captured {
    stdout: Mutex<Vec<u8>>,
    stderr: Mutex<Vec<u8>>,
}

impl OutputSink for Captured {
    fn write(&self, stream: OutputStream, bytes: &[u8]) {
        let buf = match stream {
            OutputStream::Stdout => &self.stdout,
            OutputStream::Stderr => &self.stderr,
        };
        buf.lock().expect("sink lock").extend_from_slice(bytes);
    }
}

impl Captured {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("sink lock")).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("sink lock")).into_owned()
    }
}

fn guest(args: &[&str], out: &Arc<Captured>) -> GuestConfig {
    GuestConfig {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        env: Vec::new(),
        preopens: Vec::new(),
        memory_limit: None,
        output: Arc::clone(out) as Arc<dyn OutputSink>,
        netns: None,
        resolver: None,
    }
}

async fn serve(guest: GuestConfig, timeout: Duration) -> Result<HttpServer> {
    let opts = HttpOptions { listen: "127.0.0.1:0".parse()?, max_concurrency: 16, request_timeout: timeout };
    Ok(runtime().serve_http(&load("http-probe"), guest, opts).await?)
}

async fn get(server: &HttpServer, path: &str) -> Result<(u16, String)> {
    let url = format!("http://{}{path}", server.local_addr());
    let resp = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

async fn wait(run: &mut CommandRun) -> Exit {
    tokio::time::timeout(Duration::from_secs(20), run.wait()).await.expect("command ended in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probe_answers_over_a_real_socket() -> Result<()> {
    let out = Arc::new(Captured::default());
    let server = serve(guest(&[], &out), Duration::from_secs(10)).await?;
    assert_eq!(get(&server, "/").await?, (200, "ok".to_owned()));
    assert_eq!(get(&server, "/nope").await?.0, 404);
    let stats = server.stats();
    assert_eq!(stats.requests_total, 2);
    assert_eq!(stats.inflight, 0);
    assert_eq!(stats.memory_bytes, 0, "instances give their memory back");
    assert!(stats.cpu_time > Duration::ZERO);
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_guest_sees_env_and_only_its_volumes_with_their_permissions() -> Result<()> {
    let ro = tempfile::tempdir()?;
    let rw = tempfile::tempdir()?;
    std::fs::write(ro.path().join("hello.txt"), "from a volume")?;
    let out = Arc::new(Captured::default());
    let mut cfg = guest(&[], &out);
    cfg.env = vec![("GREETING".into(), "hi there".into())];
    cfg.preopens = vec![
        Preopen { host: ro.path().to_owned(), guest: "/ro".into(), read_only: true },
        Preopen { host: rw.path().to_owned(), guest: "/rw".into(), read_only: false },
    ];
    let server = serve(cfg, Duration::from_secs(10)).await?;
    assert_eq!(get(&server, "/env/GREETING").await?, (200, "hi there".to_owned()));
    assert_eq!(get(&server, "/env/HOME").await?.0, 404, "host env is not inherited");
    assert_eq!(get(&server, "/file?path=/ro/hello.txt").await?, (200, "from a volume".to_owned()));
    let (status, body) = get(&server, "/write?path=/ro/new.txt").await?;
    assert_eq!(status, 500, "read-only volume must refuse writes: {body}");
    assert!(!ro.path().join("new.txt").exists());
    assert_eq!(get(&server, "/write?path=/rw/new.txt").await?.0, 200);
    assert_eq!(std::fs::read_to_string(rw.path().join("new.txt"))?, "written");
    let (status, _) = get(&server, "/file?path=/etc/passwd").await?;
    assert_eq!(status, 500, "nothing outside the preopens is visible");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_memory_limit_fails_alone() -> Result<()> {
    let out = Arc::new(Captured::default());
    let mut cfg = guest(&[], &out);
    cfg.memory_limit = Some(24 << 20);
    let server = serve(cfg, Duration::from_secs(10)).await?;
    assert_eq!(get(&server, "/alloc?mb=4").await?.0, 200, "within the limit");
    let (status, body) = get(&server, "/alloc?mb=64").await?;
    assert_eq!(status, 503, "over the limit: {body}");
    assert_eq!(get(&server, "/").await?, (200, "ok".to_owned()), "the server keeps serving");
    assert_eq!(server.stats().requests_rejected_memory, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_request_times_out_while_others_are_served() -> Result<()> {
    let out = Arc::new(Captured::default());
    let server = serve(guest(&[], &out), Duration::from_millis(1500)).await?;
    let url = format!("http://{}/loop", server.local_addr());
    let started = Instant::now();
    let looping = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    assert_eq!(get(&server, "/").await?, (200, "ok".to_owned()));
    assert!(t.elapsed() < Duration::from_millis(1000), "/ waited for /loop: {:?}", t.elapsed());
    let status = tokio::time::timeout(Duration::from_secs(10), looping).await???;
    assert_eq!(status, 504);
    assert!(started.elapsed() < Duration::from_secs(5), "timeout took {:?}", started.elapsed());
    let stats = server.stats();
    assert_eq!(stats.requests_timed_out, 1);
    assert!(stats.cpu_time >= Duration::from_millis(500), "the loop burned CPU: {stats:?}");
    // A request blocked in the host (not running guest code) times out too.
    let server = serve(guest(&[], &out), Duration::from_millis(300)).await?;
    assert_eq!(get(&server, "/sleep?ms=5000").await?.0, 504);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_output_args_and_exit_codes() -> Result<()> {
    let out = Arc::new(Captured::default());
    let artifact = load("cli-probe");
    assert_eq!(artifact.shape(), Shape::Command);
    let mut run = runtime().run_command(&artifact, guest(&["print", "hello", "eprint", "oops"], &out))?;
    assert_eq!(wait(&mut run).await, Exit::Exited(0));
    assert_eq!(out.stdout(), "hello\n");
    assert_eq!(out.stderr(), "oops\n");

    let out = Arc::new(Captured::default());
    let mut run = runtime().run_command(&artifact, guest(&["exit", "3"], &out))?;
    // wasi:cli/run reports only success or failure.
    assert_eq!(wait(&mut run).await, Exit::Exited(1));
    assert_eq!(wait(&mut run).await, Exit::Exited(1), "wait is repeatable");

    let mut cfg = guest(&["env", "WHO"], &out);
    cfg.env = vec![("WHO".into(), "skiff".into())];
    let mut run = runtime().run_command(&artifact, cfg)?;
    assert_eq!(wait(&mut run).await, Exit::Exited(0));
    assert!(out.stdout().contains("skiff"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_volumes_respect_read_only() -> Result<()> {
    let ro = tempfile::tempdir()?;
    std::fs::write(ro.path().join("in.txt"), "volume text")?;
    let artifact = load("cli-probe");
    let preopens = vec![Preopen { host: ro.path().to_owned(), guest: "/data".into(), read_only: true }];
    let out = Arc::new(Captured::default());
    let mut cfg = guest(&["cat", "/data/in.txt"], &out);
    cfg.preopens = preopens.clone();
    assert_eq!(wait(&mut runtime().run_command(&artifact, cfg)?).await, Exit::Exited(0));
    assert_eq!(out.stdout(), "volume text");
    let out = Arc::new(Captured::default());
    let mut cfg = guest(&["write", "/data/out.txt"], &out);
    cfg.preopens = preopens;
    assert_eq!(wait(&mut runtime().run_command(&artifact, cfg)?).await, Exit::Exited(1));
    assert!(out.stderr().contains("write"), "stderr: {}", out.stderr());
    assert!(!ro.path().join("out.txt").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_over_its_memory_limit_is_oom_killed() -> Result<()> {
    let out = Arc::new(Captured::default());
    let mut cfg = guest(&["alloc", "4"], &out);
    cfg.memory_limit = Some(16 << 20);
    let mut run = runtime().run_command(&load("cli-probe"), cfg.clone())?;
    assert_eq!(wait(&mut run).await, Exit::Exited(0), "4 MiB fits: {}", out.stderr());
    cfg.args = vec!["alloc".into(), "64".into()];
    let mut run = runtime().run_command(&load("cli-probe"), cfg)?;
    assert_eq!(wait(&mut run).await, Exit::OomKilled);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_command_is_trapped_with_a_message() -> Result<()> {
    let out = Arc::new(Captured::default());
    let mut run = runtime().run_command(&load("cli-probe"), guest(&["trap"], &out))?;
    match wait(&mut run).await {
        Exit::Trapped(message) => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(out.stderr().contains("trap requested"), "panic message: {}", out.stderr());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_spinning_and_blocked_commands() -> Result<()> {
    let out = Arc::new(Captured::default());
    for args in [["spin", ""], ["sleep", "60000"]] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let mut run = runtime().run_command(&load("cli-probe"), guest(&args, &out))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        run.kill();
        assert_eq!(wait(&mut run).await, Exit::Killed, "{args:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "kill took {:?}", t.elapsed());
        if args[0] == "spin" {
            assert!(run.stats().cpu_time >= Duration::from_millis(200), "{:?}", run.stats());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_can_serve_over_wasi_sockets() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let out = Arc::new(Captured::default());
    let mut run = runtime().run_command(&load("cli-probe"), guest(&["serve", &port.to_string()], &out))?;
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        match reqwest::get(&url).await {
            Ok(resp) => break resp.text().await?,
            Err(e) if Instant::now() > deadline => anyhow::bail!("guest server never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(body, "cli-probe");
    run.kill();
    assert_eq!(wait(&mut run).await, Exit::Killed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasip1_modules_run_as_commands() -> Result<()> {
    let module = wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "p1 says hi\n")
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const 11))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                (call $proc_exit (i32.const 3))))"#,
    )?;
    let artifact = runtime().load("test:p1", &module)?;
    assert_eq!(artifact.shape(), Shape::Command);
    let out = Arc::new(Captured::default());
    let mut run = runtime().run_command(&artifact, guest(&[], &out))?;
    assert_eq!(wait(&mut run).await, Exit::Exited(3), "proc_exit codes pass through");
    assert_eq!(out.stdout(), "p1 says hi\n");
    Ok(())
}

#[test]
fn bad_artifacts_are_load_errors_with_clear_messages() -> Result<()> {
    let rt = runtime();
    match rt.load("test:invalid", &guest_bytes("invalid")) {
        Err(LoadError::InvalidBinary(m)) => assert!(m.contains("magic"), "{m}"),
        other => panic!("expected InvalidBinary, got {other:?}"),
    }
    let mut truncated = guest_bytes("http-probe");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(rt.load("test:truncated", &truncated), Err(LoadError::Compile(_))));
    let not_wasi = wat::parse_str(
        r#"(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))"#,
    )?;
    match rt.load("test:not-wasi", &not_wasi) {
        Err(LoadError::Unsupported(m)) => assert!(m.contains("_start"), "{m}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let empty_component = wat::parse_str("(component)")?;
    match rt.load("test:empty-component", &empty_component) {
        Err(LoadError::Unsupported(m)) => assert!(m.contains("wasi:http/incoming-handler"), "{m}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let wrong = rt.load("sha256:0000000000000000000000000000000000000000000000000000000000000000", b"\0asm\x01\0\0\0");
    assert!(matches!(wrong, Err(LoadError::DigestMismatch { .. })), "{wrong:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_shape_is_a_run_error() -> Result<()> {
    let out = Arc::new(Captured::default());
    assert!(runtime().run_command(&load("http-probe"), guest(&[], &out)).is_err());
    let opts = HttpOptions::new("127.0.0.1:0".parse()?);
    assert!(runtime().serve_http(&load("cli-probe"), guest(&[], &out), opts).await.is_err());
    Ok(())
}

#[test]
fn a_second_runtime_on_the_same_cache_compiles_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bytes = guest_bytes("hello-http");
    let first = WasmRuntime::new(test_config(dir.path().to_owned()))?;
    let a = first.load("test:hello", &bytes)?;
    assert_eq!(a.shape(), Shape::Http);
    assert_eq!(first.cache_stats().compiled, 1);
    let _again = first.load("test:hello", &bytes)?;
    assert_eq!(first.cache_stats().reused_in_memory, 1, "a second pod reuses the artifact");
    drop((a, _again, first));

    let second = WasmRuntime::new(test_config(dir.path().to_owned()))?;
    let t = Instant::now();
    let b = second.load("test:hello", &bytes)?;
    let took = t.elapsed();
    assert_eq!(b.shape(), Shape::Http);
    let stats = second.cache_stats();
    assert_eq!((stats.compiled, stats.loaded_from_disk), (0, 1), "{stats:?}");
    assert!(took < Duration::from_secs(2), "loading from cache took {took:?}");
    Ok(())
}
