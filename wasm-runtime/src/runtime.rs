//! [`WasmRuntime`]: the engine, its linkers, the artifact cache and the epoch ticker.
//!
//! One per node agent. Cloning is cheap (an `Arc`); the ticker thread stops when the last
//! clone drops. Loading is blocking (compiling takes up to seconds): call it from
//! `spawn_blocking`.

use crate::artifact::{self, Artifact, Code, Encoding, Shape};
use crate::cache::{DiskCache, Kind};
use crate::compile::{self, Compiler};
use crate::config::{RuntimeConfig, wasmtime_config};
use crate::guest::{Host, P1Host};
use crate::tls_send::ClusterTls;
use crate::{LoadError, RuntimeError};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// The WASM runtime of a node. See the crate docs.
#[derive(Clone, Debug)]
pub struct WasmRuntime {
    pub(crate) inner: Arc<RuntimeInner>,
}

/// How artifacts were obtained since this runtime started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Artifacts compiled from WebAssembly (the slow path).
    pub compiled: u64,
    /// Artifacts loaded from the on-disk cache of compiled code.
    pub loaded_from_disk: u64,
    /// Loads answered by an artifact already loaded in memory.
    pub reused_in_memory: u64,
}

pub(crate) struct RuntimeInner {
    pub engine: Engine,
    pub component_linker: Linker<Host>,
    pub module_linker: wasmtime::Linker<P1Host>,
    pub epoch_tick: Duration,
    /// TLS settings of guests' HTTPS requests to cluster names.
    pub cluster_tls: ClusterTls,
    cache: DiskCache,
    /// The settings the engine was built from (the compiler child needs them).
    config: RuntimeConfig,
    /// Loaded artifacts by content hash, so a second pod of the same artifact shares it.
    loaded: Mutex<HashMap<String, Weak<artifact::Inner>>>,
    compiled: AtomicU64,
    loaded_from_disk: AtomicU64,
    reused_in_memory: AtomicU64,
    _ticker: Ticker,
}

impl std::fmt::Debug for RuntimeInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeInner")
            .field("cache", &self.cache)
            .field("epoch_tick", &self.epoch_tick)
            .finish_non_exhaustive()
    }
}

impl WasmRuntime {
    /// Builds the engine (pooling allocator, falling back to on-demand allocation if the host
    /// cannot reserve the pool's address space), the linkers, and starts the epoch ticker.
    pub fn new(cfg: RuntimeConfig) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(&cfg.cache_dir)
            .map_err(|source| RuntimeError::CacheDir { path: cfg.cache_dir.clone(), source })?;
        let engine = build_engine(&cfg)?;
        let mut component_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker))
            .and_then(|()| crate::lookup::add_to_linker(&mut component_linker))
            .map_err(|e| RuntimeError::Engine(format!("linking WASI: {e:#}")))?;
        let mut module_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |h: &mut P1Host| &mut h.wasi)
            .map_err(|e| RuntimeError::Engine(format!("linking WASI preview 1: {e:#}")))?;
        let cluster_tls = ClusterTls::new(cfg.extra_tls_roots_pem.as_deref())?;
        let ticker = Ticker::start(engine.clone(), cfg.epoch_tick)?;
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                cache: DiskCache::new(cfg.cache_dir.clone(), &engine),
                engine,
                component_linker,
                module_linker,
                epoch_tick: cfg.epoch_tick,
                cluster_tls,
                config: cfg.clone(),
                loaded: Mutex::new(HashMap::new()),
                compiled: AtomicU64::new(0),
                loaded_from_disk: AtomicU64::new(0),
                reused_in_memory: AtomicU64::new(0),
                _ticker: ticker,
            }),
        })
    }

    /// Compiles `bytes` or loads them from the cache, classifies and links them. Blocking.
    ///
    /// `digest` names the artifact (its OCI digest); when it is a `sha256:` digest the bytes
    /// must match it. The cache is keyed by the bytes' own SHA-256 either way.
    pub fn load(&self, digest: &str, bytes: &[u8]) -> Result<Artifact, LoadError> {
        let encoding = artifact::sniff(bytes).map_err(LoadError::InvalidBinary)?;
        let sha = hex::encode(Sha256::digest(bytes));
        if let Some(expected) = digest.strip_prefix("sha256:")
            && !expected.eq_ignore_ascii_case(&sha)
        {
            return Err(LoadError::DigestMismatch { expected: digest.to_owned(), actual: format!("sha256:{sha}") });
        }
        let inner = &self.inner;
        if let Some(existing) = lock(&inner.loaded).get(&sha).and_then(Weak::upgrade) {
            inner.reused_in_memory.fetch_add(1, Ordering::Relaxed);
            return Ok(Artifact { inner: existing });
        }
        let code = match encoding {
            Encoding::Component => self.link_component(self.component(&sha, bytes)?)?,
            Encoding::Module => self.link_module(self.module(&sha, bytes)?)?,
        };
        let artifact = Arc::new(artifact::Inner { digest: digest.to_owned(), code });
        let mut loaded = lock(&inner.loaded);
        loaded.retain(|_, weak| weak.strong_count() > 0);
        loaded.insert(sha, Arc::downgrade(&artifact));
        Ok(Artifact { inner: artifact })
    }

    /// How artifacts were obtained so far (the cache tests assert on it).
    pub fn cache_stats(&self) -> CacheStats {
        let i = &self.inner;
        CacheStats {
            compiled: i.compiled.load(Ordering::Relaxed),
            loaded_from_disk: i.loaded_from_disk.load(Ordering::Relaxed),
            reused_in_memory: i.reused_in_memory.load(Ordering::Relaxed),
        }
    }

    fn component(&self, sha: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let inner = &self.inner;
        let path = inner.cache.path(sha, Kind::Component);
        if path.exists() {
            match deserialize_component(&inner.engine, &path) {
                Ok(c) => {
                    inner.loaded_from_disk.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
                Err(error) => tracing::warn!(path = %path.display(), %error, "stale cache entry; recompiling"),
            }
        }
        if let Compiler::Subprocess(command) = &inner.config.compiler {
            compile::in_child(command, &inner.config, Kind::Component, bytes, &path)?;
            inner.compiled.fetch_add(1, Ordering::Relaxed);
            return deserialize_component(&inner.engine, &path)
                .map_err(|e| LoadError::Compile(format!("loading the compiled artifact: {e:#}")));
        }
        let component = Component::new(&inner.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        inner.compiled.fetch_add(1, Ordering::Relaxed);
        match component.serialize() {
            Ok(serialized) => {
                inner.cache.store(&path, &serialized);
                // Run from the cache file rather than the compiled copy: its code is mapped from
                // the file, so only the pages in use stay resident (the copy would stay in full).
                if let Ok(mapped) = deserialize_component(&inner.engine, &path) {
                    return Ok(mapped);
                }
            }
            Err(error) => tracing::warn!(%error, "could not serialize compiled component"),
        }
        Ok(component)
    }

    fn module(&self, sha: &str, bytes: &[u8]) -> Result<Module, LoadError> {
        let inner = &self.inner;
        let path = inner.cache.path(sha, Kind::Module);
        if path.exists() {
            match deserialize_module(&inner.engine, &path) {
                Ok(m) => {
                    inner.loaded_from_disk.fetch_add(1, Ordering::Relaxed);
                    return Ok(m);
                }
                Err(error) => tracing::warn!(path = %path.display(), %error, "stale cache entry; recompiling"),
            }
        }
        if let Compiler::Subprocess(command) = &inner.config.compiler {
            compile::in_child(command, &inner.config, Kind::Module, bytes, &path)?;
            inner.compiled.fetch_add(1, Ordering::Relaxed);
            return deserialize_module(&inner.engine, &path)
                .map_err(|e| LoadError::Compile(format!("loading the compiled artifact: {e:#}")));
        }
        let module = Module::new(&inner.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        inner.compiled.fetch_add(1, Ordering::Relaxed);
        match module.serialize() {
            Ok(serialized) => {
                inner.cache.store(&path, &serialized);
                // Run from the cache file rather than the compiled copy: its code is mapped from
                // the file, so only the pages in use stay resident (the copy would stay in full).
                if let Ok(mapped) = deserialize_module(&inner.engine, &path) {
                    return Ok(mapped);
                }
            }
            Err(error) => tracing::warn!(%error, "could not serialize compiled module"),
        }
        Ok(module)
    }

    fn link_component(&self, component: Component) -> Result<Code, LoadError> {
        let engine = &self.inner.engine;
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
        let Some(shape) = artifact::component_shape(exports.iter().map(String::as_str)) else {
            return Err(LoadError::Unsupported(format!(
                "the component exports neither wasi:http/incoming-handler nor wasi:cli/run \
                 (it exports: {})",
                if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
            )));
        };
        let pre = self
            .inner
            .component_linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Unsupported(format!("{e:#}")))?;
        let unsupported = |e: wasmtime::Error| LoadError::Unsupported(format!("{e:#}"));
        Ok(match shape {
            Shape::Http => Code::Http(ProxyPre::new(pre).map_err(unsupported)?),
            Shape::Command => Code::Command(CommandPre::new(pre).map_err(unsupported)?),
        })
    }

    fn link_module(&self, module: Module) -> Result<Code, LoadError> {
        if !matches!(module.get_export("_start"), Some(wasmtime::ExternType::Func(_))) {
            return Err(LoadError::Unsupported(
                "a core WebAssembly module must be a WASI preview 1 command exporting `_start`".to_owned(),
            ));
        }
        let pre =
            self.inner.module_linker.instantiate_pre(&module).map_err(|e| LoadError::Unsupported(format!("{e:#}")))?;
        Ok(Code::CoreCommand(pre))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent: keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// SAFETY (both functions below): wasmtime's deserialize is unsafe because the file is run as
// native code. The cache directory belongs to this node agent and its entries are only ever
// written by `DiskCache::store` from wasmtime's own `serialize` output; wasmtime still checks
// the header, version and engine compatibility and refuses anything else.
#[allow(unsafe_code)]
fn deserialize_component(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    unsafe { Component::deserialize_file(engine, path) }
}

/// The engine for `cfg`: the pooling allocator, falling back to on-demand allocation if the
/// host cannot reserve the pool's address space. The compiler child builds its engine here too.
pub(crate) fn build_engine(cfg: &RuntimeConfig) -> Result<Engine, RuntimeError> {
    match Engine::new(&wasmtime_config(cfg, true)) {
        Ok(engine) => Ok(engine),
        Err(error) => {
            tracing::warn!(%error, "pooling allocator unavailable; using on-demand allocation");
            Engine::new(&wasmtime_config(cfg, false)).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
        }
    }
}

#[allow(unsafe_code)]
fn deserialize_module(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    unsafe { Module::deserialize_file(engine, path) }
}

/// The thread advancing the engine's epoch every tick; stops when dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Self, RuntimeError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".to_owned())
            .spawn(move || {
                // Ends when the sender drops (Disconnected), i.e. the runtime is gone.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .map_err(RuntimeError::Ticker)?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
