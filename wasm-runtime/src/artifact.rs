//! [`Artifact`]: a compiled, classified, pre-linked WebAssembly program, and the pure
//! functions that classify bytes before and after compiling.
//!
//! Shapes: a component exporting `wasi:http/incoming-handler` is [`Shape::Http`]; one
//! exporting `wasi:cli/run`, or a core module exporting `_start` (wasip1), is
//! [`Shape::Command`]. Linking happens here too (an `InstancePre`), so an artifact importing
//! something Skiff does not provide fails at load with the missing import named, not later
//! on every start.

use crate::guest::{Host, P1Host};
use std::sync::Arc;
use wasmtime::InstancePre as ModulePre;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// The workload shape of an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A `wasi:http/proxy` component: serves HTTP, a fresh instance per request.
    Http,
    /// A `wasi:cli/command` component or a wasip1 command module: runs like a process.
    Command,
}

/// A loaded artifact: cheap to clone, shareable by every pod running it.
#[derive(Clone)]
pub struct Artifact {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub digest: String,
    pub code: Code,
}

/// The pre-instantiated program of each shape.
pub(crate) enum Code {
    Http(ProxyPre<Host>),
    Command(CommandPre<Host>),
    CoreCommand(ModulePre<P1Host>),
}

impl Artifact {
    /// Its workload shape.
    pub fn shape(&self) -> Shape {
        match self.inner.code {
            Code::Http(_) => Shape::Http,
            Code::Command(_) | Code::CoreCommand(_) => Shape::Command,
        }
    }

    /// The digest it was loaded under.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact").field("digest", &self.inner.digest).field("shape", &self.shape()).finish()
    }
}

/// What the header of a binary says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// A core module (`\0asm` version 1).
    Module,
    /// A component (`\0asm` version `0x0d`, layer 1).
    Component,
}

/// Reads the 8-byte preamble; `Err` says why the bytes are not WebAssembly.
pub(crate) fn sniff(bytes: &[u8]) -> Result<Encoding, String> {
    let Some(preamble) = bytes.get(..8) else {
        return Err(format!("{} bytes is too short for a WebAssembly header", bytes.len()));
    };
    if &preamble[..4] != b"\0asm" {
        return Err("missing the `\\0asm` magic number (not a .wasm file?)".to_owned());
    }
    match &preamble[4..8] {
        [1, 0, 0, 0] => Ok(Encoding::Module),
        [0x0d, 0, 1, 0] => Ok(Encoding::Component),
        other => Err(format!("unknown WebAssembly version/layer {other:02x?}")),
    }
}

/// Interface names a component export list is recognised by (any `0.2.x` version).
pub(crate) fn component_shape<'a>(exports: impl IntoIterator<Item = &'a str>) -> Option<Shape> {
    let mut shape = None;
    for name in exports {
        let iface = name.split('@').next().unwrap_or(name);
        match iface {
            "wasi:http/incoming-handler" => return Some(Shape::Http),
            "wasi:cli/run" => shape = Some(Shape::Command),
            _ => {}
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_modules_components_and_garbage_apart() {
        assert_eq!(sniff(b"\0asm\x01\0\0\0rest"), Ok(Encoding::Module));
        assert_eq!(sniff(b"\0asm\x0d\0\x01\0rest"), Ok(Encoding::Component));
        assert!(sniff(b"\0asm").expect_err("short").contains("too short"));
        assert!(sniff(b"not wasm at all").expect_err("magic").contains("magic"));
        assert!(sniff(b"\0asm\x02\0\0\0").expect_err("version").contains("version"));
    }

    #[test]
    fn http_export_wins_over_run() {
        let both = ["wasi:cli/run@0.2.0", "wasi:http/incoming-handler@0.2.12"];
        assert_eq!(component_shape(both), Some(Shape::Http));
        assert_eq!(component_shape(["wasi:cli/run@0.2.3"]), Some(Shape::Command));
        assert_eq!(component_shape(["my:pkg/thing"]), None);
    }
}
