//! Guests inside a pod's network namespace (mixed pods: WASM and OCI containers sharing one
//! network, so `localhost` and the pod IP are the same for both).
//!
//! A socket belongs to the network namespace of the thread that created it, and `setns`
//! changes only the calling thread. So a guest whose sockets must live in a pod's namespace
//! runs entirely on threads that joined it:
//! * an HTTP component gets a tokio runtime of its own whose every thread (workers and the
//!   blocking pool) joins the namespace as it starts ([`NetNamespace::runtime`]); its listener,
//!   its outgoing `wasi:http` requests, its `wasi:sockets` and its name lookups are all made
//!   there, with no per-call hook in wasmtime-wasi(-http) needed;
//! * a command joins it on its own thread before that thread builds its runtime.
//!
//! What it does not own: creating or deleting namespaces (the node's sandbox does), nor
//! mounts or any other namespace — only the network one is joined.

use crate::RunError;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Worker threads of an HTTP component's own runtime: requests are short and a guest that
/// computes yields every epoch tick, so two keep one busy request from stalling the others.
const WORKER_THREADS: usize = 2;
/// Bound on the blocking pool of that runtime (file I/O and name lookups of the guest).
const MAX_BLOCKING_THREADS: usize = 16;

/// An open network namespace (the open file keeps it alive and names it for `setns`).
#[derive(Clone, Debug)]
pub(crate) struct NetNamespace {
    path: PathBuf,
    file: Arc<File>,
}

impl NetNamespace {
    /// Opens the namespace at `path` (e.g. `/run/skiff/netns/<pod-uid>`) and checks on a
    /// throw-away thread that it can be joined, so a wrong path or missing privilege fails
    /// the start with a clear message rather than later on a runtime thread.
    pub(crate) fn open(path: &Path) -> Result<Self, RunError> {
        let fail = |message: String| RunError::Netns { path: path.to_path_buf(), message };
        let file = File::open(path).map_err(|e| fail(format!("opening it: {e}")))?;
        let ns = NetNamespace { path: path.to_path_buf(), file: Arc::new(file) };
        let probe = ns.clone();
        std::thread::Builder::new()
            .name("netns-probe".to_owned())
            .spawn(move || probe.enter())
            .map_err(RunError::Thread)?
            .join()
            .map_err(|_| fail("the probe thread panicked".to_owned()))?
            .map_err(|e| fail(format!("joining it: {e}")))?;
        Ok(ns)
    }

    /// Moves the calling thread into the namespace. Only for threads this crate owns.
    pub(crate) fn enter(&self) -> std::io::Result<()> {
        rustix::thread::move_into_link_name_space(self.file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .map_err(std::io::Error::from)
    }

    /// A multi-threaded tokio runtime whose threads all live in the namespace.
    pub(crate) fn runtime(&self) -> Result<tokio::runtime::Runtime, RunError> {
        let ns = self.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name("wasm-pod-net")
            .enable_all()
            .on_thread_start(move || {
                // Cannot fail once the probe joined it (same file, same process privileges);
                // should it anyway, say so loudly: that thread's sockets would be the node's.
                if let Err(error) = ns.enter() {
                    tracing::error!(path = %ns.path.display(), %error, "a guest thread could not join the pod's network namespace");
                }
            })
            .build()
            .map_err(|e| RunError::Netns { path: self.path.clone(), message: format!("starting its runtime: {e}") })
    }
}
