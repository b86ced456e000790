//! The container shim: one small process per container that outlives the agent.
//!
//! The driver ([`super::Runc`]) starts it (the `skiff` binary enters [`main`] from a hidden
//! `container-shim` subcommand). The shim:
//!
//! 1. leaves the agent's session and makes itself a child subreaper, so the container's init
//!    process becomes *its* child when `runc run --detach` exits — and so its exit status can
//!    be read;
//! 2. runs `runc run --detach` with two pipes as the container's stdout and stderr, copying
//!    them into the bundle's `log` file (and to clients of its attach socket, [`super::attach`]);
//! 3. writes `status.json` (pid, start time) and answers the driver with one line on its stdout:
//!    `ok <pid>` or `error <message>`;
//! 4. waits for init to exit, reads the cgroup's OOM-kill counter, writes the exit into
//!    `status.json`, and exits. The runc container stays (`stopped`) until the driver deletes it.
//!
//! Log format: the CRI log format every Kubernetes log reader understands, one line per line
//! of output: `<RFC 3339 time> <stdout|stderr> <F|P> <text>`; `P` marks a piece of a line longer
//! than 16 KiB, continued by the next entry.
//!
//! It is synchronous on purpose (no tokio runtime): it starts faster and does little.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_spec::runtime::Spec;
use rustix::process::{WaitOptions, getpid};

use super::attach::{self, AttachServer, StdinSink};
use super::bundle::Bundle;
use super::status::{self, ExitStatus, StatusFile};

/// A log line longer than this is split into `P` (partial) entries, as CRI runtimes do.
const MAX_LINE: usize = 16 * 1024;
/// How long the log copiers may take to drain after init exited (a leaked descriptor in a
/// process that escaped the pid namespace would otherwise hold the shim forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What becomes of a container's stdin (Kubernetes `stdin` and `stdinOnce`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StdinMode {
    /// `/dev/null` (`stdin: false`).
    #[default]
    Closed,
    /// A pipe the shim keeps open; attached clients write to it (`stdin: true`).
    Open,
    /// As `Open`, closed when the first attached client leaves (`stdinOnce: true`).
    Once,
}

impl StdinMode {
    fn as_arg(self) -> &'static str {
        match self {
            StdinMode::Closed => "closed",
            StdinMode::Open => "open",
            StdinMode::Once => "once",
        }
    }

    fn parse(arg: &str) -> Result<Self, String> {
        match arg {
            "closed" => Ok(StdinMode::Closed),
            "open" => Ok(StdinMode::Open),
            "once" => Ok(StdinMode::Once),
            other => Err(format!("--stdin must be closed, open or once, not {other:?}")),
        }
    }
}

/// The shim's command line: what the driver passes and [`main`] parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    /// Container id.
    pub id: String,
    /// The directory holding the bundles (the bundle is `<bundle_root>/<id>`).
    pub bundle_root: PathBuf,
    /// The runc binary.
    pub runc: PathBuf,
    /// runc's `--root` (its state directory).
    pub runc_root: PathBuf,
    /// The container's stdin.
    pub stdin: StdinMode,
}

impl ShimArgs {
    /// As command-line arguments for [`ShimArgs::parse`].
    pub fn to_args(&self) -> Vec<OsString> {
        vec![
            "--id".into(),
            self.id.clone().into(),
            "--bundle-root".into(),
            self.bundle_root.clone().into(),
            "--runc".into(),
            self.runc.clone().into(),
            "--runc-root".into(),
            self.runc_root.clone().into(),
            "--stdin".into(),
            self.stdin.as_arg().into(),
        ]
    }

    /// Parses the arguments written by [`ShimArgs::to_args`].
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let (mut id, mut bundle_root, mut runc, mut runc_root) = (None, None, None, None);
        let mut stdin = StdinMode::Closed;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
            match flag.to_str() {
                Some("--id") => id = Some(value.to_string_lossy().into_owned()),
                Some("--bundle-root") => bundle_root = Some(PathBuf::from(value)),
                Some("--runc") => runc = Some(PathBuf::from(value)),
                Some("--runc-root") => runc_root = Some(PathBuf::from(value)),
                Some("--stdin") => stdin = StdinMode::parse(&value.to_string_lossy())?,
                _ => return Err(format!("unknown argument {}", flag.to_string_lossy())),
            }
        }
        Ok(Self {
            id: id.ok_or("--id is required")?,
            bundle_root: bundle_root.ok_or("--bundle-root is required")?,
            runc: runc.unwrap_or_else(|| PathBuf::from("runc")),
            runc_root: runc_root.ok_or("--runc-root is required")?,
            stdin,
        })
    }
}

/// The shim's entry point. `args` exclude the program name (and any subcommand).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = match ShimArgs::parse(args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("container-shim: {e}");
            return ExitCode::from(2);
        }
    };
    // Out of the agent's session and process group: a signal to the agent's group (Ctrl-C, a
    // service manager stopping it) must not reach the container's keeper.
    let _ = rustix::process::setsid();
    if let Err(e) = rustix::process::set_child_subreaper(Some(getpid())) {
        return fail_early(&format!("PR_SET_CHILD_SUBREAPER: {e}"));
    }
    let Some(bundle) = Bundle::open(&args.bundle_root, &args.id) else {
        return fail_early(&format!("no bundle for {} under {}", args.id, args.bundle_root.display()));
    };
    match run(&args, &bundle) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let record = StatusFile { error: Some(message.clone()), ..StatusFile::default() };
            let _ = status::write(&bundle.status_path(), &record);
            answer(&format!("error {}", message.replace('\n', " ")));
            eprintln!("container-shim {}: {message}", args.id);
            ExitCode::FAILURE
        }
    }
}

fn fail_early(message: &str) -> ExitCode {
    answer(&format!("error {message}"));
    eprintln!("container-shim: {message}");
    ExitCode::FAILURE
}

/// The one-line answer to the driver on stdout.
fn answer(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn runc(args: &ShimArgs, bundle: &Bundle) -> Command {
    let mut cmd = Command::new(&args.runc);
    cmd.arg("--root").arg(&args.runc_root);
    cmd.arg("--log").arg(bundle.dir().join("runc.log")).arg("--log-format").arg("json");
    cmd
}

/// runc's last error message from its JSON log (what it printed on failing), if any.
fn runc_error(bundle: &Bundle) -> Option<String> {
    let text = std::fs::read_to_string(bundle.dir().join("runc.log")).ok()?;
    text.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["level"] == "error").then(|| v["msg"].as_str().map(str::to_string))?
    })
}

fn run(args: &ShimArgs, bundle: &Bundle) -> Result<(), String> {
    let cgroups_path = Spec::load(bundle.config())
        .map_err(|e| format!("reading {}: {e}", bundle.config().display()))?
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(bundle.log())
        .map_err(|e| format!("opening {}: {e}", bundle.log().display()))?;
    let log = Arc::new(Mutex::new(log));
    // Without the socket the container still runs; only `kubectl attach` will say it cannot.
    // The container's stdin: the read end goes to runc, the write end to attached clients.
    let (stdin_r, stdin_w) = match args.stdin {
        StdinMode::Closed => (None, None),
        StdinMode::Open | StdinMode::Once => {
            let (r, w) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
            (Some(r), Some(w))
        }
    };
    let stdin = StdinSink::new(stdin_w, args.stdin == StdinMode::Once);
    let attached = match AttachServer::bind(bundle.dir(), stdin) {
        Ok(server) => Some(Arc::new(server)),
        Err(e) => {
            eprintln!("container-shim {}: no attach socket: {e}", args.id);
            None
        }
    };
    let (out_r, out_w) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let _ = std::fs::remove_file(bundle.pid_file());

    // One `runc run --detach` rather than `create` + `start`: a runc process less per
    // container start (about a fifth of the start-up latency). With `--detach`, runc exits
    // once the container runs and its init is re-parented to this subreaper.
    let ran = runc(args, bundle)
        .arg("run")
        .arg("--detach")
        .arg("--bundle")
        .arg(bundle.dir())
        .arg("--pid-file")
        .arg(bundle.pid_file())
        .arg(&args.id)
        .stdin(stdin_r.map_or_else(Stdio::null, Stdio::from))
        .stdout(out_w)
        .stderr(err_w)
        .status()
        .map_err(|e| format!("running {}: {e}", args.runc.display()))?;
    // The Command (and with it our copy of the write ends) is gone: the pipes close when the
    // container's processes exit, which ends the copiers.
    let copiers = [
        spawn_copier(out_r, Stream::Stdout, Arc::clone(&log), attached.clone()),
        spawn_copier(err_r, Stream::Stderr, Arc::clone(&log), attached.clone()),
    ];
    if !ran.success() {
        return Err(runc_error(bundle).unwrap_or_else(|| format!("runc run failed: {ran}")));
    }
    let pid: i32 = std::fs::read_to_string(bundle.pid_file())
        .map_err(|e| format!("reading {}: {e}", bundle.pid_file().display()))?
        .trim()
        .parse()
        .map_err(|e| format!("runc pid file: {e}"))?;
    let mut record =
        StatusFile { pid: u32::try_from(pid).ok(), started_at: Some(status::now_rfc3339()), ..StatusFile::default() };
    status::write(&bundle.status_path(), &record).map_err(|e| format!("writing status: {e}"))?;
    answer(&format!("ok {pid}"));

    let (code, signal) = reap_until(pid);
    let oom_killed =
        cgroups_path.as_deref().and_then(|p| status::oom_kills(&p.to_string_lossy())).is_some_and(|n| n > 0);
    wait_drained(copiers);
    if let Some(server) = &attached {
        server.close();
    }
    record.exit = Some(ExitStatus {
        code: status::exit_code(code, signal),
        signal,
        oom_killed,
        finished_at: status::now_rfc3339(),
    });
    status::write(&bundle.status_path(), &record).map_err(|e| format!("writing status: {e}"))
}

/// Reaps every child (orphans of the container land here too) until `pid` exits; returns its
/// exit code or terminating signal.
fn reap_until(pid: i32) -> (Option<i32>, Option<i32>) {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((child, st))) if child.as_raw_nonzero().get() == pid => {
                return (st.exit_status(), st.terminating_signal());
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            // No children left yet init is not reaped: it was not re-parented to us.
            Err(_) => return (None, None),
        }
    }
}

fn wait_drained(copiers: [std::sync::mpsc::Receiver<()>; 2]) {
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    for done in copiers {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let _ = done.recv_timeout(left);
    }
}

/// Which output of the container a copier carries.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn log_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn attach_byte(self) -> u8 {
        match self {
            Stream::Stdout => attach::STDOUT,
            Stream::Stderr => attach::STDERR,
        }
    }
}

/// Copies `pipe` into the log (and to attached clients) on a thread; the receiver yields when
/// the pipe reached EOF.
fn spawn_copier(
    mut pipe: io::PipeReader,
    which: Stream,
    log: Arc<Mutex<File>>,
    attached: Option<Arc<AttachServer>>,
) -> std::sync::mpsc::Receiver<()> {
    let stream = which.log_name();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut framer = LineFramer::default();
        let mut buf = vec![0u8; 32 * 1024];
        let write = |entry: Vec<u8>| {
            if let Ok(mut file) = log.lock() {
                let _ = file.write_all(&entry);
            }
        };
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    framer.push(&buf[..n], |tag, text| write(cri_line(stream, tag, text)));
                    if let Some(server) = &attached {
                        server.broadcast(which.attach_byte(), &buf[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        framer.finish(|tag, text| write(cri_line(stream, tag, text)));
        let _ = tx.send(());
    });
    rx
}

/// One CRI log entry.
pub fn cri_line(stream: &str, tag: char, text: &[u8]) -> Vec<u8> {
    let mut out = format!("{} {stream} {tag} ", status::now_rfc3339()).into_bytes();
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// Splits a byte stream into log entries: whole lines (`F`) and pieces of over-long ones (`P`).
#[derive(Debug, Default)]
pub struct LineFramer {
    pending: Vec<u8>,
}

impl LineFramer {
    /// Feeds bytes; calls `emit(tag, line)` for every complete entry.
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(char, &[u8])) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&bytes[..nl]);
            self.flush_partials(&mut emit);
            emit('F', &self.pending);
            self.pending.clear();
            bytes = &bytes[nl + 1..];
        }
        self.pending.extend_from_slice(bytes);
        self.flush_partials(&mut emit);
    }

    fn flush_partials(&mut self, emit: &mut impl FnMut(char, &[u8])) {
        while self.pending.len() > MAX_LINE {
            emit('P', &self.pending[..MAX_LINE]);
            self.pending.drain(..MAX_LINE);
        }
    }

    /// At end of stream: an unterminated last line is still a whole entry.
    pub fn finish(&mut self, mut emit: impl FnMut(char, &[u8])) {
        if !self.pending.is_empty() {
            emit('F', &self.pending);
            self.pending.clear();
        }
    }
}

/// Parses the shim's answer line on its stdout: `ok <pid>` / `error <message>`.
pub fn parse_answer(line: &str) -> Result<u32, String> {
    let line = line.trim_end();
    if let Some(pid) = line.strip_prefix("ok ") {
        return pid.trim().parse().map_err(|_| format!("bad shim answer {line:?}"));
    }
    Err(line.strip_prefix("error ").unwrap_or(line).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&[u8]]) -> Vec<(char, Vec<u8>)> {
        let mut out = Vec::new();
        let mut f = LineFramer::default();
        for c in chunks {
            f.push(c, |t, l| out.push((t, l.to_vec())));
        }
        f.finish(|t, l| out.push((t, l.to_vec())));
        out
    }

    #[test]
    fn lines_are_framed_across_reads() {
        let out = frame(&[b"hel", b"lo\nwor", b"ld\n\nlast"]);
        let want: Vec<(char, Vec<u8>)> =
            vec![('F', b"hello".to_vec()), ('F', b"world".to_vec()), ('F', b"".to_vec()), ('F', b"last".to_vec())];
        assert_eq!(out, want);
    }

    #[test]
    fn long_lines_become_partials() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut input = long.clone();
        input.push(b'\n');
        let out = frame(&[&input]);
        assert_eq!(out.iter().map(|(t, _)| *t).collect::<String>(), "PPF");
        assert_eq!(out[2].1.len(), 5);
    }

    #[test]
    fn cri_line_shape() {
        let line = String::from_utf8(cri_line("stderr", 'F', b"oops")).expect("utf8");
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        assert!(parts[0].parse::<jiff::Timestamp>().is_ok(), "{line}");
        assert_eq!(&parts[1..], ["stderr", "F", "oops\n"]);
    }

    #[test]
    fn args_round_trip_and_answers() {
        let args = ShimArgs {
            id: "c1".into(),
            bundle_root: "/b".into(),
            runc: "/usr/sbin/runc".into(),
            runc_root: "/r".into(),
            stdin: StdinMode::Once,
        };
        assert_eq!(ShimArgs::parse(args.to_args()).expect("parse"), args);
        assert!(ShimArgs::parse(vec!["--id".into()]).is_err());
        assert_eq!(parse_answer("ok 42\n"), Ok(42));
        assert_eq!(parse_answer("error no such file"), Err("no such file".to_string()));
    }
}
