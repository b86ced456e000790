//! `wasi:cli` commands (components exporting `wasi:cli/run`, and wasip1 modules): run like
//! a process, on a thread of their own.
//!
//! A command may compute for hours or block on a socket, so it never runs on the caller's
//! async workers: each gets a thread with a current-thread tokio runtime (wasmtime-wasi's
//! sockets and clocks need one); that thread first joins the pod's network namespace if the
//! guest has one (see `netns`). The epoch callback yields every tick, which is what lets a
//! CPU-bound guest notice [`CommandRun::kill`]; a guest blocked in the host is stopped by
//! dropping its future. How it ended is an [`Exit`]: a refused memory growth followed by a
//! trap is `OomKilled`, as the kernel's OOM killer would be for a container.

use crate::artifact::Code;
use crate::guest::{GuestConfig, Host, P1Host};
use crate::limits::{GuestLimiter, MemoryBudget};
use crate::netns::NetNamespace;
use crate::stats::{Counters, GuestStats};
use crate::{Artifact, RunError, Shape, WasmRuntime};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Notify, oneshot};
use wasmtime::{InstancePre, Store, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::CommandPre;

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It returned or called `exit`. A component's `wasi:cli/run` only reports success (0)
    /// or failure (1); a wasip1 module's `proc_exit` code is passed through.
    Exited(i32),
    /// It trapped after its memory limit refused a growth.
    OomKilled,
    /// It trapped (the message says how: `unreachable`, a panic, out-of-bounds access, …).
    Trapped(String),
    /// [`CommandRun::kill`] stopped it.
    Killed,
}

/// A running command. Dropping it kills the guest.
#[derive(Debug)]
pub struct CommandRun {
    done: Option<oneshot::Receiver<Exit>>,
    exit: Option<Exit>,
    kill: Arc<KillSwitch>,
    counters: Arc<Counters>,
    _thread: std::thread::JoinHandle<()>,
}

impl CommandRun {
    /// Waits for the guest to end. Cancel-safe; after the end it returns the same [`Exit`].
    pub async fn wait(&mut self) -> Exit {
        if let Some(done) = self.done.as_mut() {
            let exit = done.await.unwrap_or_else(|_| Exit::Trapped("the guest's thread ended without a result".into()));
            self.done = None;
            self.exit = Some(exit);
        }
        self.exit.clone().unwrap_or_else(|| Exit::Trapped("no result".to_owned()))
    }

    /// Stops the guest (it ends with [`Exit::Killed`] unless it already ended).
    pub fn kill(&self) {
        self.kill.kill();
    }

    /// CPU time and memory of the guest.
    pub fn stats(&self) -> GuestStats {
        self.counters.snapshot()
    }
}

impl Drop for CommandRun {
    fn drop(&mut self) {
        self.kill.kill();
    }
}

#[derive(Debug, Default)]
struct KillSwitch {
    killed: AtomicBool,
    notify: Notify,
}

impl KillSwitch {
    fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        // `notify_one` keeps a permit if the guest's thread is not waiting yet.
        self.notify.notify_one();
    }

    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }
}

/// A ready-to-run guest of either kind.
enum Prepared {
    Component(Store<Host>, CommandPre<Host>),
    Core(Store<P1Host>, InstancePre<P1Host>),
}

impl WasmRuntime {
    /// Starts `artifact` (a command) on its own thread. Setup errors (a volume that cannot be
    /// opened, wrong shape) are returned here; everything after is in the [`Exit`].
    pub fn run_command(&self, artifact: &Artifact, guest: GuestConfig) -> Result<CommandRun, RunError> {
        guest.check_preopens()?;
        let budget = Arc::new(MemoryBudget::new(guest.memory_limit));
        let counters = Arc::new(Counters::new(Arc::clone(&budget)));
        let limiter = GuestLimiter::new(budget);
        let denied = limiter.denied_flag();
        let kill = Arc::new(KillSwitch::default());
        let engine = &self.inner.engine;
        let mut builder = guest.wasi_builder()?;
        let prepared = match &artifact.inner.code {
            Code::Command(pre) => {
                let mut store = Store::new(engine, guest.host(builder.build(), limiter, &self.inner.cluster_tls));
                store.limiter(|h| &mut h.limiter);
                interrupt_on_kill(&mut store, &kill);
                Prepared::Component(store, pre.clone())
            }
            Code::CoreCommand(pre) => {
                let mut store = Store::new(engine, P1Host { wasi: builder.build_p1(), limiter });
                store.limiter(|h| &mut h.limiter);
                interrupt_on_kill(&mut store, &kill);
                Prepared::Core(store, pre.clone())
            }
            Code::Http(_) => {
                return Err(RunError::WrongShape {
                    digest: artifact.digest().to_owned(),
                    actual: Shape::Http,
                    wanted: Shape::Command,
                });
            }
        };
        let netns = guest.netns.as_deref().map(NetNamespace::open).transpose()?;
        let (tx, done) = oneshot::channel();
        let thread = {
            let (kill, counters, runtime) = (Arc::clone(&kill), Arc::clone(&counters), self.clone());
            std::thread::Builder::new()
                .name("wasm-command".to_owned())
                .spawn(move || {
                    // Before the runtime exists, so every socket of the guest is the pod's.
                    let joined = netns.as_ref().map_or(Ok(()), NetNamespace::enter);
                    let exit = match joined {
                        Ok(()) => run_to_exit(prepared, &kill, &counters, &denied),
                        Err(e) => Exit::Trapped(format!("joining the pod's network namespace: {e}")),
                    };
                    drop(runtime); // keep the engine and its epoch ticker alive until here
                    let _ = tx.send(exit);
                })
                .map_err(RunError::Thread)?
        };
        Ok(CommandRun { done: Some(done), exit: None, kill, counters, _thread: thread })
    }
}

fn interrupt_on_kill<T: 'static>(store: &mut Store<T>, kill: &Arc<KillSwitch>) {
    let kill = Arc::clone(kill);
    store.epoch_deadline_callback(move |_| {
        Ok(if kill.is_killed() { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
    });
    store.set_epoch_deadline(1);
}

fn run_to_exit(prepared: Prepared, kill: &KillSwitch, counters: &Arc<Counters>, denied: &AtomicBool) -> Exit {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return Exit::Trapped(format!("starting the guest's async runtime: {e}")),
    };
    rt.block_on(async {
        let run = counters.metered(run(prepared));
        tokio::select! {
            result = run => exit_of(result, denied.load(Ordering::Relaxed), kill.is_killed()),
            () = kill.notify.notified() => Exit::Killed,
        }
    })
}

/// `Ok(true)`: success; `Ok(false)`: `wasi:cli/run` returned an error.
async fn run(prepared: Prepared) -> wasmtime::Result<bool> {
    match prepared {
        Prepared::Component(mut store, pre) => {
            let command = pre.instantiate_async(&mut store).await?;
            Ok(command.wasi_cli_run().call_run(&mut store).await?.is_ok())
        }
        Prepared::Core(mut store, pre) => {
            let instance = pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await?;
            Ok(true)
        }
    }
}

/// How a run ended (pure, tested).
fn exit_of(result: wasmtime::Result<bool>, memory_denied: bool, killed: bool) -> Exit {
    match result {
        Ok(true) => Exit::Exited(0),
        Ok(false) => Exit::Exited(1),
        Err(e) => {
            if let Some(I32Exit(code)) = e.downcast_ref::<I32Exit>() {
                Exit::Exited(*code)
            } else if killed {
                Exit::Killed
            } else if memory_denied {
                Exit::OomKilled
            } else {
                Exit::Trapped(trap_message(&e))
            }
        }
    }
}

/// A one-paragraph message for a container status: the trap, then the innermost frames.
fn trap_message(e: &wasmtime::Error) -> String {
    const MAX: usize = 2048;
    let mut message = match e.downcast_ref::<Trap>() {
        Some(trap) => format!("wasm trap: {trap}"),
        None => format!("{e:#}"),
    };
    if let Some(trace) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        message.push_str(&format!("\n{trace}"));
    }
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_classified() {
        assert_eq!(exit_of(Ok(true), false, false), Exit::Exited(0));
        assert_eq!(exit_of(Ok(false), false, false), Exit::Exited(1));
        assert_eq!(exit_of(Err(I32Exit(7).into()), true, false), Exit::Exited(7));
        assert_eq!(exit_of(Err(Trap::Interrupt.into()), false, true), Exit::Killed);
        assert_eq!(exit_of(Err(Trap::UnreachableCodeReached.into()), true, false), Exit::OomKilled);
        match exit_of(Err(Trap::UnreachableCodeReached.into()), false, false) {
            Exit::Trapped(m) => assert!(m.contains("unreachable"), "{m}"),
            other => panic!("expected a trap, got {other:?}"),
        }
    }
}
