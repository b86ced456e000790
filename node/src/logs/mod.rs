//! Container log files on the node: where they live, the sink runtimes write to, and the
//! readers behind `kubectl logs`.
//!
//! Layout (the kubelet's, under the data dir): `pods/<namespace>_<name>_<uid>/<container>/
//! <restart>.log`, one file per run of a container, in the CRI log format ([`format`]) so
//! timestamps, `--since` and `--timestamps` work; rotated by size into `<restart>.log.<time>`
//! ([`writer`]). Namespaces and pod names are DNS labels/subdomains, so `_` separates them
//! unambiguously. What this module does not do: decide when a run starts or ends (the pod
//! worker opens a sink per run) or serve HTTP (the node API does, from [`LogStore::read`]).

pub mod format;
pub mod reader;
pub mod writer;

use std::path::{Path, PathBuf};

use crate::runtime::PodRef;

pub use reader::{LogBody, LogOptions};
pub use writer::{FileSink, RotationPolicy};

/// Errors of the log store, phrased as the kubelet phrases them (the API server relays them).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The container has not started a run yet (or the pod none at all: the API server has
    /// already checked that the pod exists and is bound here).
    #[error("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")]
    NotStarted { pod: String, container: String },
    /// `--previous` but there is no earlier run.
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    NoPrevious { pod: String, container: String },
}

impl LogError {
    fn io(path: &Path, source: std::io::Error) -> LogError {
        LogError::Io { path: path.to_path_buf(), source }
    }
}

/// The log files of one container run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLog {
    /// `<pod dir>/<container>`.
    pub container_dir: PathBuf,
    /// The run's restart count.
    pub restart: u32,
}

impl RunLog {
    /// The current (not rotated) file of the run.
    pub fn path(&self) -> PathBuf {
        self.container_dir.join(format!("{}.log", self.restart))
    }
}

/// The node's container logs.
#[derive(Debug, Clone)]
pub struct LogStore {
    root: PathBuf,
    policy: RotationPolicy,
}

impl LogStore {
    /// Logs under `root` (normally `<data-dir>/pods`), rotated with the default policy.
    pub fn new(root: impl Into<PathBuf>) -> LogStore {
        LogStore { root: root.into(), policy: RotationPolicy::default() }
    }

    /// The same store with another rotation policy.
    pub fn with_policy(mut self, policy: RotationPolicy) -> LogStore {
        self.policy = policy;
        self
    }

    /// `<root>/<namespace>_<name>_<uid>`.
    pub fn pod_dir(&self, pod: &PodRef) -> PathBuf {
        self.root.join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
    }

    /// Opens the sink for run `restart` of `container` (creating directories).
    pub fn open(&self, pod: &PodRef, container: &str, restart: u32) -> Result<FileSink, LogError> {
        let dir = self.pod_dir(pod).join(container);
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let run = RunLog { container_dir: dir, restart };
        let path = run.path();
        FileSink::open(path.clone(), self.policy).map_err(|e| LogError::io(&path, e))
    }

    /// Removes every log of the pod (it is gone for good).
    pub fn remove_pod(&self, pod: &PodRef) -> Result<(), LogError> {
        let dir = self.pod_dir(pod);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LogError::io(&dir, e)),
        }
    }

    /// The pod directory of `namespace/name`: the most recently changed one when pods of the
    /// same name came and went (their uids differ).
    fn find_pod_dir(&self, namespace: &str, name: &str) -> Result<Option<PathBuf>, LogError> {
        let prefix = format!("{namespace}_{name}_");
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io(&self.root, e)),
        };
        let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(uid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
            if uid.contains('_') {
                continue;
            }
            let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(t, _)| modified > *t) {
                best = Some((modified, entry.path()));
            }
        }
        Ok(best.map(|(_, p)| p))
    }

    /// The run to read: the latest, or with `previous` the one before it.
    pub fn find_run(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Result<RunLog, LogError> {
        let not_started = || LogError::NotStarted { pod: pod.to_string(), container: container.to_string() };
        let container_dir = self.find_pod_dir(namespace, pod)?.ok_or_else(not_started)?.join(container);
        let mut runs = run_numbers(&container_dir);
        runs.sort_unstable();
        let latest = runs.pop().ok_or_else(not_started)?;
        if !previous {
            return Ok(RunLog { container_dir, restart: latest });
        }
        // `--previous` is the run right before the latest (restartCount - 1).
        match latest.checked_sub(1).filter(|p| runs.contains(p)) {
            Some(restart) => Ok(RunLog { container_dir, restart }),
            None => Err(LogError::NoPrevious { pod: pod.to_string(), container: container.to_string() }),
        }
    }

    /// The log of `namespace/pod/container` as a byte stream (see [`LogOptions`]).
    pub async fn read(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        opts: LogOptions,
    ) -> Result<LogBody, LogError> {
        let run = self.find_run(namespace, pod, container, opts.previous)?;
        reader::read(run, opts).await
    }
}

/// Restart numbers that have a current log file in `container_dir`.
pub(crate) fn run_numbers(container_dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(container_dir) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse::<u32>().ok()).collect()
}

#[cfg(test)]
mod tests;
