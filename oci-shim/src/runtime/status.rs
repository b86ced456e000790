//! `status.json`: what the shim records about its container, and how an exit becomes a status.
//!
//! Owns: the file's format (written atomically, read by any later driver), turning a wait(2)
//! status into Kubernetes' exit code (128 + signal for a signalled process), and reading the
//! cgroup's OOM-kill counter. Does not own: waiting for the process (the shim does).

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How a container's init process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitStatus {
    /// The exit code; `128 + signal` when a signal ended it (as Kubernetes reports).
    pub code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process in the container's cgroup.
    pub oom_killed: bool,
    /// When the shim saw it exit (RFC 3339).
    pub finished_at: String,
}

impl ExitStatus {
    /// Kubernetes' `reason` for this exit: `OOMKilled`, `Completed` or `Error`.
    pub fn reason(&self) -> &'static str {
        if self.oom_killed {
            "OOMKilled"
        } else if self.code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// The content of `status.json`. Written by the shim when the container starts (pid, start time)
/// and again when it ends (exit) or when starting failed (error).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFile {
    /// The container's init process id (in the node's pid namespace).
    pub pid: Option<u32>,
    /// When `runc run --detach` returned: the container runs (RFC 3339).
    pub started_at: Option<String>,
    /// Set once the init process ended.
    pub exit: Option<ExitStatus>,
    /// Why the shim could not run the container (runc's own message included).
    pub error: Option<String>,
}

/// Reads `path`; `Ok(None)` when it does not exist yet.
pub fn read(path: &Path) -> io::Result<Option<StatusFile>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `path` atomically (temporary file + rename), so a reader never sees half a file.
pub fn write(path: &Path, status: &StatusFile) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Now, as RFC 3339 with nanoseconds (the timestamp of log lines and status times).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// The exit code Kubernetes reports: the code itself, or `128 + signal`.
pub fn exit_code(code: Option<i32>, signal: Option<i32>) -> i32 {
    match (code, signal) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    }
}

/// The `oom_kill` counter in cgroup v1's `memory.oom_control` or v2's `memory.events`.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

/// How many processes the OOM killer killed in the cgroup at `cgroups_path` (as in the runtime
/// spec), looking at cgroup v1's memory controller first, then cgroup v2. `None` when neither
/// file is readable (no memory controller, or the cgroup is gone).
pub fn oom_kills(cgroups_path: &str) -> Option<u64> {
    let rel = cgroups_path.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup/memory").join(rel).join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    candidates.iter().find_map(|p| std::fs::read_to_string(p).ok()).and_then(|text| parse_oom_kill(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counter_from_v1_and_v2() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_oom_kill(v1), Some(2));
        let v2 = "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v2), Some(1));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn exit_codes_and_reasons() {
        assert_eq!(exit_code(Some(3), None), 3);
        assert_eq!(exit_code(None, Some(9)), 137);
        let mut s = ExitStatus { code: 0, signal: None, oom_killed: false, finished_at: String::new() };
        assert_eq!(s.reason(), "Completed");
        s.code = 137;
        assert_eq!(s.reason(), "Error");
        s.oom_killed = true;
        assert_eq!(s.reason(), "OOMKilled");
    }

    #[test]
    fn round_trip_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.json");
        assert_eq!(read(&path).expect("read"), None);
        let status = StatusFile { pid: Some(42), started_at: Some(now_rfc3339()), ..Default::default() };
        write(&path, &status).expect("write");
        assert_eq!(read(&path).expect("read"), Some(status));
    }
}
