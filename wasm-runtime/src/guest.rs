//! What a guest is given: [`GuestConfig`] (args, env, volumes, memory limit, output) and the
//! per-store host state ([`Host`], [`P1Host`]) built from it.
//!
//! Capabilities are explicit: nothing of the host process is inherited — no env, no args, no
//! stdin, no directories — except what the pod spec grants: its env, its volumes as preopens
//! (read-only ones opened with `FsPerms::ReadOnly`, enforced by wasmtime-wasi, not by the
//! guest's good will), and the network (pods talk to the world; the node decides addresses) —
//! the pod's network namespace when it has one (see `netns`) — and, when the embedder gives
//! one, a [`NameResolver`] for cluster names (`names.rs`, `lookup.rs`, `outgoing.rs`).

use crate::RunError;
use crate::limits::GuestLimiter;
use crate::names::NameResolver;
use crate::outgoing::ClusterHttpHooks;
use crate::output::{OutputSink, OutputStream, SinkStream};
use crate::tls_send::ClusterTls;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// `argv[0]` of every guest: the program name is not something a pod spec sets.
pub const GUEST_ARGV0: &str = "main.wasm";

/// How one guest (a pod's container) runs.
#[derive(Clone, Debug)]
pub struct GuestConfig {
    /// Arguments after the program name (the container's `command` + `args`); the guest's
    /// `argv[0]` is [`GUEST_ARGV0`].
    pub args: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Directories the guest may see.
    pub preopens: Vec<Preopen>,
    /// Cap on the guest's linear memory in bytes; for an HTTP guest, on the sum over its live
    /// instances. `None`: only the engine's per-memory maximum applies.
    pub memory_limit: Option<u64>,
    /// Where stdout and stderr go.
    pub output: Arc<dyn OutputSink>,
    /// The network namespace the guest's sockets live in (a mixed pod's sandbox, so it shares
    /// `localhost` and the pod IP with the pod's containers); `None`: the agent's own.
    pub netns: Option<PathBuf>,
    /// Resolves the guest's cluster names (name lookups and outgoing HTTP); `None`: the host's
    /// resolver only (a pod with `dnsPolicy: Default`, or an embedder without cluster DNS).
    pub resolver: Option<NameResolver>,
}

/// A host directory visible to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// Directory on the host.
    pub host: PathBuf,
    /// Path the guest sees it at (a volume's `mountPath`).
    pub guest: String,
    /// Read-only mount: the guest cannot create, write or delete anything under it.
    pub read_only: bool,
}

impl GuestConfig {
    /// Checks that every preopen can be opened, so a bad volume fails the start with a clear
    /// message instead of every request.
    pub(crate) fn check_preopens(&self) -> Result<(), RunError> {
        for p in &self.preopens {
            if let Err(e) = std::fs::read_dir(&p.host) {
                return Err(RunError::Preopen { host: p.host.clone(), guest: p.guest.clone(), message: e.to_string() });
            }
        }
        Ok(())
    }

    /// The store data of one component instance of this guest.
    pub(crate) fn host(&self, wasi: WasiCtx, limiter: GuestLimiter, tls: &ClusterTls) -> Host {
        Host {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: ClusterHttpHooks { resolver: self.resolver.clone(), tls: tls.clone() },
            resolver: self.resolver.clone(),
            limiter,
        }
    }

    /// A WASI context granting exactly what this config says.
    pub(crate) fn wasi_builder(&self) -> Result<WasiCtxBuilder, RunError> {
        let mut b = WasiCtxBuilder::new();
        b.arg(GUEST_ARGV0);
        b.args(&self.args);
        b.envs(&self.env);
        b.stdout(SinkStream::new(Arc::clone(&self.output), OutputStream::Stdout));
        b.stderr(SinkStream::new(Arc::clone(&self.output), OutputStream::Stderr));
        b.inherit_network().allow_tcp(true).allow_udp(true).allow_ip_name_lookup(true);
        for p in &self.preopens {
            let perms = if p.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            b.preopened_dir(&p.host, &p.guest, perms).map_err(|e| RunError::Preopen {
                host: p.host.clone(),
                guest: p.guest.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(b)
    }
}

/// Store data of a component guest (HTTP or command).
pub(crate) struct Host {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub hooks: ClusterHttpHooks,
    pub resolver: Option<NameResolver>,
    pub limiter: GuestLimiter,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Store data of a core wasip1 command module.
pub(crate) struct P1Host {
    pub wasi: WasiP1Ctx,
    pub limiter: GuestLimiter,
}
