//! [`RuntimeConfig`] and the wasmtime [`wasmtime::Config`] built from it.
//!
//! The engine is tuned for many small, short-lived instances, as `wasmtime serve` is: the
//! pooling allocator (instances, memories, tables and async stacks come from pre-reserved
//! slots, copy-on-write memory images make instantiation a few microseconds), the default
//! 4 GiB-per-memory virtual reservation (so compiled code needs no bounds checks — same code
//! quality as `wasmtime serve`), and epoch interruption (the only way to stop a runaway guest
//! without paying for fuel metering on every instruction).

use std::path::PathBuf;
use std::time::Duration;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Settings of one [`crate::WasmRuntime`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached (created if missing).
    pub cache_dir: PathBuf,
    /// How many component instances may be live at once, across all guests: every in-flight
    /// HTTP request and every running command holds one.
    pub max_instances: u32,
    /// Upper bound of one linear memory in bytes (a pod's own `limits.memory` is usually
    /// lower and enforced separately).
    pub max_memory_per_instance: u64,
    /// How often the engine's epoch advances: the granularity of request timeouts, kills and
    /// of cooperative yielding of CPU-bound guests.
    pub epoch_tick: Duration,
    /// Where artifacts are compiled (see [`crate::Compiler`]).
    pub compiler: crate::Compiler,
    /// Root certificates (PEM, one or more) that guests' HTTPS requests to cluster names trust
    /// besides the public web roots: the cluster CA, so that serving certificates it issued
    /// verify, as a Kubernetes pod trusts `kube-root-ca.crt`. `None`: the web roots only.
    pub extra_tls_roots_pem: Option<String>,
}

impl Default for RuntimeConfig {
    /// 1000 instances (what `wasmtime serve` pools by default; each slot costs only virtual
    /// address space), 512 MiB per linear memory (a function rarely needs more; the slot's
    /// 4 GiB reservation is virtual either way, so a higher cap costs nothing but a lower one
    /// would refuse legitimate pods with big `limits.memory`), a 10 ms epoch (timeouts are
    /// precise to ~10 ms while the ticker thread costs nothing measurable).
    fn default() -> Self {
        Self {
            cache_dir: std::env::temp_dir().join("skiff-wasm-cache"),
            max_instances: 1000,
            max_memory_per_instance: 512 << 20,
            epoch_tick: Duration::from_millis(10),
            compiler: crate::Compiler::InProcess,
            extra_tls_roots_pem: None,
        }
    }
}

/// The wasmtime configuration for `cfg`; `pooling` off gives the on-demand allocator (the
/// fallback when the host cannot reserve the pool's address space).
pub(crate) fn wasmtime_config(cfg: &RuntimeConfig, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if pooling {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(cfg)));
    }
    config
}

/// Pool sizes: a component instance of a Rust `wasm32-wasip2` program holds a few core
/// instances (main module, adapter, shims) and up to two memories; size the pools so that
/// `max_instances` such components fit.
fn pooling_config(cfg: &RuntimeConfig) -> PoolingAllocationConfig {
    let n = cfg.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(4))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(usize::try_from(cfg.max_memory_per_instance).unwrap_or(usize::MAX));
    pool
}
