//! Running OCI containers with `runc`: runtime spec generation, bundles, the per-container shim
//! process and the driver the node agent calls.
//!
//! * [`spec`] — a plain [`ContainerSpec`] (+ the image's [`ImageConfig`]) to an OCI runtime spec,
//!   by Kubernetes' rules; pure.
//! * [`bundle`] — a bundle directory per container: overlayfs rootfs over read-only image
//!   snapshots, `config.json`, the log and `status.json`.
//! * [`shim`] — the small process that owns one container: it survives an agent restart and
//!   records the exit status so it is never lost. The `skiff` binary enters it via
//!   [`shim::main`].
//! * [`runc`] — [`Runc`], the driver: start, state, kill, stop, delete, list, exec.
//! * [`attach`] — live output of a running container for `kubectl attach` (the shim's socket).
//! * [`console`] — terminals: runc's console socket, the pty master, window sizes.
//!
//! Does not own: image unpacking (the caller passes snapshot directories), pod networking (the
//! caller passes a network namespace path), the node's runtime trait (the agent adapts to it).

pub mod attach;
pub mod bundle;
pub mod console;
pub mod runc;
pub mod security;
pub mod shim;
pub mod spec;
pub mod status;

pub use bundle::{Bundle, BundleError};
pub use runc::{ContainerState, ExecOptions, Handle, Runc, RuncConfig, RuncError, RuntimeStatus, TtyExec};
pub use spec::{ContainerSpec, ImageConfig, MountKind, MountSpec, Resources, SecurityOptions, SpecError};
pub use status::ExitStatus;
