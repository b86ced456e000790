//! The `containers` benchmark (issue 5): OCI container pod startup against bare runc, and
//! image pull + unpack throughput of the node's image store.
//!
//! Startup: `skiff up --pod-network bridge --runtimes wasm,oci` runs inside a network
//! namespace this bench creates (no bridge, route or iptables change in the machine's own
//! namespace) with a busybox image pushed to its built-in registry. Pods with
//! `runtimeClassName: oci` running `sleep 1000` are created one after another, each timed on
//! the client's clock from sending the create to reading the watch event whose container
//! status is `running`; each is deleted (untimed) before the next. Interleaved with them, the
//! anchor: `runc run --detach` of an equivalent bundle (the same busybox unpacked into a plain
//! directory, `runc spec` adjusted to `sleep 1000`, runc's default private namespaces, no
//! network setup), timed until `runc state` says running, then `runc delete -f` (untimed).
//!
//! Pull: a random-content gzip layer (incompressible, so compressed ≈ uncompressed size) is
//! pushed to a throw-away `docker-registry` on loopback; each run pulls it into a fresh store
//! dir with [`ImageStore::pull`] and unpacks it with [`ImageStore::container_rootfs`].
//! What this does not do: tune skiff, or measure layer sharing and caches (every run is cold).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use skiff_oci_shim::image::{ImageStore, PullPolicy, RegistryCredentials, push_image_layout};
use skiff_tests::binary::skiff_binary;
use skiff_tests::oci_node::{OciLeftovers, runc_delete_all, skiff_in_host_mounts};
use skiff_tests::{DockerRegistry, NetNs, Skiff, StartOptions, StoreKind, wait_until, with_timeout};

use crate::pods::{Cluster, micros_histogram, release_warning, verdict};
use crate::report;

/// How long one runc command may take.
const RUNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a deleted pod may take to disappear from the API.
const POD_GONE_TIMEOUT: Duration = Duration::from_secs(60);
/// Target: skiff's p50 at most this many times bare runc's.
const TARGET_RATIO: f64 = 1.5;

/// Settings of one `containers` run.
#[derive(Debug, Clone)]
pub struct ContainersBench {
    /// Timed pods (and as many timed bare runc containers).
    pub pods: usize,
    /// Size of the generated layer in MiB.
    pub image_mib: usize,
    /// Pull + unpack runs (the median is reported).
    pub pull_runs: usize,
    /// skiff binary; default beside this bench.
    pub skiff_bin: Option<PathBuf>,
    /// [`crate::pods::load_note`] taken when the run started.
    pub load_at_start: String,
}

/// Results of the startup comparison.
#[derive(Debug)]
struct Startup {
    warmup_skiff: Duration,
    warmup_runc: Duration,
    skiff: Histogram<u64>,
    runc: Histogram<u64>,
}

/// One pull + unpack run.
#[derive(Debug, Clone, Copy)]
struct PullRun {
    pull: Duration,
    unpack: Duration,
    tar: Duration,
}

/// Results of the pull benchmark.
#[derive(Debug)]
struct Pull {
    compressed: u64,
    uncompressed: u64,
    runs: Vec<PullRun>,
    fs: String,
}

impl ContainersBench {
    /// Runs both parts and returns the markdown section body.
    pub async fn run(&self) -> Result<String> {
        ensure!(self.pods > 0 && self.pull_runs > 0, "--pods and --pull-runs must be at least 1");
        let binary = match &self.skiff_bin {
            Some(path) => path.clone(),
            None => skiff_binary()?,
        };
        let startup = self.startup(&binary).await?;
        let pull = self.pull().await?;
        Ok(self.render(&binary, &startup, &pull))
    }

    async fn startup(&self, binary: &Path) -> Result<Startup> {
        let netns = NetNs::create()?;
        let scripts = tempfile::Builder::new().prefix("skiff-bench-oci-").tempdir()?;
        let mut options = StartOptions::new(StoreKind::Embedded);
        options.binary = Some(skiff_in_host_mounts(scripts.path(), binary)?);
        options.netns = Some(netns.name().to_string());
        options.extra_args = ["--pod-network", "bridge", "--runtimes", "wasm,oci"].map(String::from).to_vec();
        let skiff = Skiff::start_with(options).await?;
        let oci_dir = skiff.data_dir().join("agent").join("oci");
        let http = skiff.http()?;
        let mut cluster = Cluster { skiff, http, image: String::new(), binary: binary.to_path_buf() };
        // Declared after the cluster, so dropped first: mounts go before skiff removes its dir.
        let _leftovers = OciLeftovers::new(cluster.skiff.data_dir());
        cluster.image = skiff_tests::oci_image::push_busybox(&cluster.skiff, "bench/busybox", "v1").await?;
        eprintln!("pushed {}", cluster.image);
        let bare = BareRunc::new(scripts.path())?;
        let result = self.startup_series(&cluster, &oci_dir, &bare).await;
        bare.cleanup();
        cluster.with_log(result)
    }

    async fn startup_series(&self, cluster: &Cluster, oci_dir: &Path, bare: &BareRunc) -> Result<Startup> {
        let namespace = "bench-oci";
        cluster.create_namespace(namespace).await?;
        let mut watch = cluster.watch_pods(namespace, is_running).await?;
        let mut time_pod = async |name: &str| -> Result<Duration> {
            let t0 = Instant::now();
            create_pod(cluster, namespace, name).await?;
            let running = match watch.wait_for(name).await {
                Ok(running) => running,
                Err(error) => {
                    let status = cluster.pod_status(namespace, name).await;
                    return Err(error.context(format!("pod {name} status now: {status}")));
                }
            };
            let took = running.at.duration_since(t0);
            delete_pod(cluster, oci_dir, namespace, name).await?;
            Ok(took)
        };
        // Warm-ups: image pull and unpack, first CNI call, runc's first start.
        let warmup_skiff = time_pod("warmup").await?;
        let warmup_runc = bare.time_one("warmup").await?;
        eprintln!("warm-up: pod running after {warmup_skiff:?}, bare runc after {warmup_runc:?}");
        let (mut skiff, mut runc) = (micros_histogram()?, micros_histogram()?);
        for i in 0..self.pods {
            // Interleaved, so both sides see the same machine load.
            skiff.saturating_record(micros(time_pod(&format!("pod-{i}")).await?));
            runc.saturating_record(micros(bare.time_one(&format!("bare-{i}")).await?));
            if (i + 1) % 10 == 0 {
                eprintln!("{} of {} measured", i + 1, self.pods);
            }
        }
        Ok(Startup { warmup_skiff, warmup_runc, skiff, runc })
    }

    async fn pull(&self) -> Result<Pull> {
        let work = tempfile::Builder::new().prefix("skiff-bench-pull-").tempdir()?;
        let layout = work.path().join("layout");
        eprintln!("generating a {} MiB random layer", self.image_mib);
        let image_mib = self.image_mib;
        let layout_dir = layout.clone();
        let (compressed, uncompressed, layer_file) =
            tokio::task::spawn_blocking(move || write_random_layout(&layout_dir, image_mib)).await??;
        let registry = DockerRegistry::start().await?;
        let reference = format!("{}/bench/random:v1", registry.host_port);
        let creds = RegistryCredentials { insecure_registries: vec![registry.host_port.clone()], ..Default::default() };
        push_image_layout(&layout, &reference, &creds).await.with_context(|| format!("pushing {reference}"))?;
        let mut runs = Vec::new();
        for run in 0..self.pull_runs {
            let store_dir = work.path().join(format!("store-{run}"));
            let store = ImageStore::open(&store_dir)?;
            let t0 = Instant::now();
            let pulled = store.pull(&reference, PullPolicy::Always, &creds).await?;
            let t1 = Instant::now();
            let image = store.container_rootfs(&pulled).await?;
            let t2 = Instant::now();
            ensure!(image.lowerdirs.len() == 1, "expected one layer, got {:?}", image.lowerdirs);
            let tar = time_tar_x(&layer_file, &work.path().join(format!("tar-{run}"))).await?;
            eprintln!("pull {:?}, unpack {:?}, tar -xzf {tar:?}", t1 - t0, t2 - t1);
            runs.push(PullRun { pull: t1 - t0, unpack: t2 - t1, tar });
            std::fs::remove_dir_all(&store_dir).with_context(|| format!("removing {}", store_dir.display()))?;
        }
        Ok(Pull { compressed, uncompressed, runs, fs: fs_type(work.path()) })
    }

    fn render(&self, binary: &Path, startup: &Startup, pull: &Pull) -> String {
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let (skiff50, runc50) = (ms(&startup.skiff, 0.5), ms(&startup.runc, 0.5));
        let ratio = skiff50 / runc50.max(f64::MIN_POSITIVE);
        let mut out = format!(
            "## Containers: OCI pod startup vs bare runc, image pull + unpack\n\n\
             Run {} on {}{}.{} Measured with {}; skiff `{}`, {}; temporary dirs (skiff's data \
             dir, the runc bundle, the image stores) in `{}` ({}).\n\n\
             Reproduce (as root): `cargo build --release -p skiff -p skiff-bench && target/release/skiff-bench \
             containers --pods {} --image-mib {} --pull-runs {}`\n\n",
            report::now(),
            report::machine(),
            release_warning(),
            self.load_at_start,
            build_profile(),
            binary.display(),
            tool_version("runc", &["--version"]),
            std::env::temp_dir().display(),
            fs_type(&std::env::temp_dir()),
            self.pods,
            self.image_mib,
            self.pull_runs,
        );
        out += &format!(
            "### Pod startup: create → container running\n\n\
             `skiff up --pod-network bridge --runtimes wasm,oci` (embedded store, in-process node) inside a \
             network namespace the bench creates; a busybox image (static busybox, one layer) pushed to the \
             built-in registry. Pods `runtimeClassName: oci`, `command: [sleep, \"1000\"]`, created one after \
             another; each timed on the client from sending the create to reading the watch event whose \
             `containerStatuses[0].state.running` is set (schedule, image check, overlay rootfs, pod network \
             namespace + CNI bridge, cgroup, shim, `runc run --detach`, status write, watch fan-out), then \
             deleted (untimed) until gone from the API, from `runc list` and from the node's pod \
             network namespaces. Anchor, interleaved pod by pod: `runc run --detach` of \
             a bundle with the same busybox in a plain directory and `runc spec` set to `sleep 1000` (runc's \
             default namespaces, no network setup, no overlay, no shim), timed until `runc state` says \
             running, then `runc delete -f` (untimed). Warm-ups not counted: pod {:.1} ms, bare runc {:.1} ms.\n\n",
            startup.warmup_skiff.as_secs_f64() * 1000.0,
            startup.warmup_runc.as_secs_f64() * 1000.0,
        );
        let row = |what: &str, h: &Histogram<u64>| {
            vec![
                what.to_string(),
                h.len().to_string(),
                format!("{:.1}", ms(h, 0.5)),
                format!("{:.1}", ms(h, 0.9)),
                format!("{:.1}", ms(h, 0.99)),
                format!("{:.1}", h.max() as f64 / 1000.0),
            ]
        };
        out += &report::table(
            &["", "runs", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            &[row("skiff OCI pod", &startup.skiff), row("bare `runc run --detach`", &startup.runc)],
        );
        out += &format!(
            "\n| target | measured | verdict |\n| --- | --- | --- |\n\
             | pod p50 ≤ {TARGET_RATIO}× bare runc p50 | {ratio:.2}× ({skiff50:.1} ms vs {runc50:.1} ms) | {} |\n\n",
            verdict(ratio <= TARGET_RATIO),
        );
        out += &format!(
            "### Image pull + unpack\n\n\
             One {:.1} MiB layer ({:.1} MiB gzip; random content, so barely compressible) pushed to a \
             throw-away `docker-registry` on loopback (plain HTTP). Each run opens a fresh store dir \
             ({} file system) and times `ImageStore::pull` (manifest, config, layer download with digest \
             check) and `ImageStore::container_rootfs` (gunzip + untar into the snapshot dir). MiB/s: pull = \
             gzip bytes / pull time, unpack and total = uncompressed bytes / time. Anchor: `tar -xzf` of the \
             same layer file into an empty dir. Median of {} runs.\n\n",
            mib(pull.uncompressed),
            mib(pull.compressed),
            pull.fs,
            pull.runs.len(),
        );
        let median = |f: fn(&PullRun) -> Duration| {
            let mut v: Vec<Duration> = pull.runs.iter().map(f).collect();
            v.sort();
            v[v.len() / 2]
        };
        let (p, u, t) = (median(|r| r.pull), median(|r| r.unpack), median(|r| r.tar));
        let total = median(|r| r.pull + r.unpack);
        let rate = |bytes: u64, d: Duration| format!("{:.0}", mib(bytes) / d.as_secs_f64().max(f64::MIN_POSITIVE));
        out += &report::table(
            &["step", "median s", "MiB/s"],
            &[
                vec!["pull".into(), format!("{:.3}", p.as_secs_f64()), rate(pull.compressed, p)],
                vec!["unpack".into(), format!("{:.3}", u.as_secs_f64()), rate(pull.uncompressed, u)],
                vec!["pull + unpack".into(), format!("{:.3}", total.as_secs_f64()), rate(pull.uncompressed, total)],
                vec!["anchor: `tar -xzf`".into(), format!("{:.3}", t.as_secs_f64()), rate(pull.uncompressed, t)],
            ],
        );
        out
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Whether every container of the pod (the watch event's object) is running.
fn is_running(pod: &Value) -> bool {
    pod.pointer("/status/containerStatuses").and_then(Value::as_array).is_some_and(|statuses| {
        !statuses.is_empty() && statuses.iter().all(|s| s.pointer("/state/running").is_some_and(Value::is_object))
    })
}

fn pod(namespace: &str, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"bench": "containers"}},
        "spec": {
            "runtimeClassName": "oci",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": image, "command": ["sleep", "1000"]}],
        },
    })
}

async fn create_pod(cluster: &Cluster, namespace: &str, name: &str) -> Result<()> {
    let response = cluster
        .http
        .post(format!("{}/api/v1/namespaces/{namespace}/pods", cluster.skiff.url))
        .json(&pod(namespace, name, &cluster.image))
        .send()
        .await?;
    let status = response.status();
    if status != reqwest::StatusCode::CREATED {
        bail!("create pod {name}: {status}: {}", response.text().await?);
    }
    Ok(())
}

/// Deletes pod `name` at once and waits (bounded) until the API no longer has it and the node
/// has no runc container and no pod network namespace left under `oci_dir`, so its teardown
/// is not in the next pod's figure.
async fn delete_pod(cluster: &Cluster, oci_dir: &Path, namespace: &str, name: &str) -> Result<()> {
    let url = format!("{}/api/v1/namespaces/{namespace}/pods/{name}", cluster.skiff.url);
    let status = cluster.http.delete(format!("{url}?gracePeriodSeconds=0")).send().await?.status();
    ensure!(status.is_success() || status == reqwest::StatusCode::NOT_FOUND, "delete pod {name}: {status}");
    wait_until(&format!("pod {name} gone"), POD_GONE_TIMEOUT, Duration::from_millis(50), || {
        let request = cluster.http.get(&url).send();
        async move { Ok((request.await?.status() == reqwest::StatusCode::NOT_FOUND).then_some(())) }
    })
    .await?;
    let (runc_root, netns_dir) = (oci_dir.join("runc"), oci_dir.join("netns"));
    wait_until(&format!("pod {name} torn down on the node"), POD_GONE_TIMEOUT, Duration::from_millis(50), || {
        let list = tokio::process::Command::new("runc").arg("--root").arg(&runc_root).args(["list", "-q"]).output();
        let netns_left = std::fs::read_dir(&netns_dir).map_or(0, Iterator::count);
        async move {
            let list = list.await.context("runc list")?;
            ensure!(list.status.success(), "runc list: {}", String::from_utf8_lossy(&list.stderr));
            Ok((list.stdout.iter().all(u8::is_ascii_whitespace) && netns_left == 0).then_some(()))
        }
    })
    .await
}

/// The anchor: a busybox bundle run with plain `runc`, with its own runc state dir.
#[derive(Debug)]
struct BareRunc {
    root: PathBuf,
    bundle: PathBuf,
}

impl BareRunc {
    /// Unpacks busybox into `dir/bundle/rootfs` and writes a `runc spec` running `sleep 1000`.
    fn new(dir: &Path) -> Result<BareRunc> {
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
        let layer = skiff_tests::oci_image::busybox_layer()?;
        tar::Archive::new(&layer[..]).unpack(&rootfs).context("unpacking busybox")?;
        let out = std::process::Command::new("runc").arg("spec").arg("--bundle").arg(&bundle).output();
        let out = out.context("running runc spec (apt-get install runc)")?;
        ensure!(out.status.success(), "runc spec: {}", String::from_utf8_lossy(&out.stderr));
        let path = bundle.join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?).context("runc spec's config.json")?;
        spec["process"]["args"] = json!(["sleep", "1000"]);
        spec["process"]["terminal"] = json!(false);
        std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
        Ok(BareRunc { root: dir.join("runc-root"), bundle })
    }

    /// `runc run --detach` of container `id` until `runc state` says running, then deletes it.
    async fn time_one(&self, id: &str) -> Result<Duration> {
        let t0 = Instant::now();
        // Null stdio: the detached container inherits it, and a pipe would never close.
        self.runc(&["run", "--detach", "--bundle", &self.bundle.to_string_lossy(), id]).await?;
        let state = loop {
            let state: Value = serde_json::from_slice(&self.runc(&["state", id]).await?).context("runc state")?;
            if state["status"] != "created" || t0.elapsed() > RUNC_TIMEOUT {
                break state;
            }
        };
        let took = t0.elapsed();
        ensure!(state["status"] == "running", "bare runc container {id} is {}", state["status"]);
        self.runc(&["delete", "--force", id]).await?;
        Ok(took)
    }

    /// Runs `runc --root <root> args…` (bounded) and returns its stdout.
    async fn runc(&self, args: &[&str]) -> Result<Vec<u8>> {
        let mut command = tokio::process::Command::new("runc");
        command.arg("--root").arg(&self.root).args(args).stdin(Stdio::null()).kill_on_drop(true);
        let capture = args.first() == Some(&"state");
        command.stdout(if capture { Stdio::piped() } else { Stdio::null() }).stderr(Stdio::null());
        // Not `output()`: tokio's pipes stdout and stderr whatever was set, and the detached
        // container would hold those pipes open.
        let output = with_timeout(&format!("runc {}", args.join(" ")), RUNC_TIMEOUT, async {
            command.spawn().context("running runc")?.wait_with_output().await.context("waiting for runc")
        })
        .await?;
        ensure!(output.status.success(), "runc {} failed: {}", args.join(" "), output.status);
        Ok(output.stdout)
    }

    fn cleanup(&self) {
        runc_delete_all(&self.root);
    }
}

/// Writes an OCI image layout in `dir` with one gzip layer of `mib` MiB of random files;
/// returns (gzip size, tar size, path of the gzip blob).
fn write_random_layout(dir: &Path, mib: usize) -> Result<(u64, u64, PathBuf)> {
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ u64::from(std::process::id());
    let mut tar = tar::Builder::new(Vec::with_capacity(mib << 20 | 1 << 20));
    let mut file = vec![0u8; 1 << 20];
    for i in 0..mib {
        for chunk in file.chunks_mut(8) {
            // xorshift64: fast and incompressible enough for gzip.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(file.len() as u64);
        header.set_mtime(1_700_000_000);
        tar.append_data(&mut header, format!("data/file-{i:03}"), &file[..])?;
    }
    let layer = tar.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer)?;
    let gz = gz.finish()?;
    let layer_file = skiff_tests::oci_image::write_layout(
        dir,
        "v1",
        &gz,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &format!("sha256:{}", hex::encode(Sha256::digest(&layer))),
    )?;
    Ok((gz.len() as u64, layer.len() as u64, layer_file))
}

/// Times `tar -xzf layer -C dest` (the anchor for unpacking), then removes `dest`.
async fn time_tar_x(layer: &Path, dest: &Path) -> Result<Duration> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let t0 = Instant::now();
    let status = with_timeout("tar -xzf", Duration::from_secs(300), async {
        tokio::process::Command::new("tar")
            .arg("-xzf")
            .arg(layer)
            .arg("-C")
            .arg(dest)
            .kill_on_drop(true)
            .status()
            .await
            .context("running tar")
    })
    .await?;
    let took = t0.elapsed();
    ensure!(status.success(), "tar -xzf {}: {status}", layer.display());
    std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    Ok(took)
}

/// The file system type of `path` (`stat -f`), or "unknown".
fn fs_type(path: &Path) -> String {
    std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The first line of `program args…`, or "program: unknown version".
fn tool_version(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| format!("{program}: unknown version"))
}

/// Which cargo profile built this bench, judged by the directory it runs from.
fn build_profile() -> &'static str {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or("");
    match dir {
        "profiling" => "the profiling profile (opt-level 3, no LTO)",
        "release" => "the release profile",
        "debug" => "a debug build",
        _ => "an unknown build profile",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_needs_every_container_running() {
        let pod = |states: Value| json!({"status": {"containerStatuses": states}});
        assert!(is_running(&pod(json!([{"state": {"running": {"startedAt": "x"}}}]))));
        assert!(!is_running(&pod(json!([{"state": {"waiting": {"reason": "ContainerCreating"}}}]))));
        assert!(!is_running(&pod(json!([]))));
        assert!(!is_running(&json!({"status": {}})));
    }

    #[test]
    fn random_layout_is_consistent() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let (gz, tar, file) = write_random_layout(dir.path(), 2)?;
        assert!(tar > 2 << 20, "tar holds 2 MiB of files: {tar}");
        assert!(gz > (tar * 9) / 10, "random content barely compresses: {gz} of {tar}");
        assert_eq!(std::fs::metadata(&file)?.len(), gz);
        let index: Value = serde_json::from_slice(&std::fs::read(dir.path().join("index.json"))?)?;
        assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "v1");
        Ok(())
    }

    #[test]
    fn oci_pod_spec() {
        let p = pod("ns", "a", "r/busybox:v1");
        assert_eq!(p["spec"]["runtimeClassName"], "oci");
        assert_eq!(p["spec"]["containers"][0]["command"], json!(["sleep", "1000"]));
    }
}
