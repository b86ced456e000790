//! Compiling artifacts in a short-lived child process.
//!
//! Compiling a component runs cranelift: tens of MiB of short-lived allocations spread over
//! several threads, and megabytes of compiler code paged in. In a long-running node agent that
//! memory stays resident after the compile is over (malloc arenas keep their high-water mark,
//! the compiler's code pages stay mapped), which made the first pod of each artifact cost
//! ~20 MiB of agent RSS. With [`Compiler::Subprocess`] the agent instead runs a child (the
//! `skiff` binary itself, `skiff compile-wasm`) that compiles and writes the artifact into the
//! on-disk cache, and the agent only maps the result — a few hundred KiB. It also means a
//! compiler crash or a pathological module cannot take the agent down.
//!
//! The child builds its engine from the same [`RuntimeConfig`] as the agent; wasmtime checks
//! compatibility again when the agent loads the file, so a mismatch is an error, never a
//! wrong-code hazard.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::LoadError;
use crate::cache::{Kind, write_atomically};
use crate::config::RuntimeConfig;
use crate::runtime::build_engine;

/// Where compilation happens.
#[derive(Clone, Debug, Default)]
pub enum Compiler {
    /// In this process (tests, embedders that do not mind the memory).
    #[default]
    InProcess,
    /// In a child: this program and leading arguments, e.g. `["/usr/bin/skiff",
    /// "compile-wasm"]`; the runtime appends [`ChildArgs`] flags and writes the WebAssembly
    /// bytes to its stdin. The command must end up calling [`compile_from_stdin`].
    Subprocess(Vec<OsString>),
}

/// What the child needs to know, as flags: `--kind component|module --max-instances N
/// --max-memory BYTES --out PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildArgs {
    /// `component` or `module`.
    pub kind: String,
    /// [`RuntimeConfig::max_instances`] of the parent.
    pub max_instances: u32,
    /// [`RuntimeConfig::max_memory_per_instance`] of the parent.
    pub max_memory: u64,
    /// The cache file to write.
    pub out: std::path::PathBuf,
}

/// Runs `command` to compile `bytes` (of `kind`) into `out`. Blocking.
pub(crate) fn in_child(
    command: &[OsString],
    cfg: &RuntimeConfig,
    kind: Kind,
    bytes: &[u8],
    out: &Path,
) -> Result<(), LoadError> {
    let (program, leading) = command.split_first().ok_or_else(|| LoadError::Compile("no compiler command".into()))?;
    let kind_name = match kind {
        Kind::Component => "component",
        Kind::Module => "module",
    };
    let mut child = Command::new(program)
        .args(leading)
        .arg("--kind")
        .arg(kind_name)
        .arg("--max-instances")
        .arg(cfg.max_instances.to_string())
        .arg("--max-memory")
        .arg(cfg.max_memory_per_instance.to_string())
        .arg("--out")
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LoadError::Compile(format!("starting the compiler {}: {e}", Path::new(program).display())))?;
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(bytes));
    let output = child.wait_with_output().map_err(|e| LoadError::Compile(format!("waiting for the compiler: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr.trim();
        return Err(LoadError::Compile(if message.is_empty() {
            format!("the compiler process failed ({})", output.status)
        } else {
            message.to_owned()
        }));
    }
    if let Some(Err(e)) = written {
        return Err(LoadError::Compile(format!("sending the artifact to the compiler: {e}")));
    }
    Ok(())
}

/// The child's side: reads WebAssembly from stdin, compiles it with an engine configured like
/// the parent's, and writes the serialized code to `args.out` atomically. The error is the
/// message to print (the parent shows it as the container's reason).
pub fn compile_from_stdin(args: &ChildArgs) -> Result<(), String> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map_err(|e| format!("reading stdin: {e}"))?;
    compile_bytes(args, &bytes)
}

/// Compiles `bytes` as [`compile_from_stdin`] does.
fn compile_bytes(args: &ChildArgs, bytes: &[u8]) -> Result<(), String> {
    let cfg = RuntimeConfig {
        max_instances: args.max_instances,
        max_memory_per_instance: args.max_memory,
        ..RuntimeConfig::default()
    };
    let engine = build_engine(&cfg).map_err(|e| e.to_string())?;
    let compiled = match args.kind.as_str() {
        "component" => engine.precompile_component(bytes),
        "module" => engine.precompile_module(bytes),
        other => return Err(format!("unknown artifact kind {other:?} (component or module)")),
    }
    .map_err(|e| format!("{e:#}"))?;
    write_atomically(&args.out, &compiled).map_err(|e| format!("writing {}: {e}", args.out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kind: &str, out: std::path::PathBuf) -> ChildArgs {
        ChildArgs { kind: kind.into(), max_instances: 4, max_memory: 64 << 20, out }
    }

    #[test]
    fn the_child_writes_code_an_engine_like_the_parents_loads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("a.cmod");
        let wasm = wat::parse_str("(module (func (export \"f\")))").expect("wat");
        compile_bytes(&args("module", out.clone()), &wasm).expect("compiles");
        let parent = build_engine(&RuntimeConfig {
            max_instances: 4,
            max_memory_per_instance: 64 << 20,
            ..RuntimeConfig::default()
        })
        .expect("engine");
        #[allow(unsafe_code)] // the file was just written by wasmtime itself
        let module = unsafe { wasmtime::Module::deserialize_file(&parent, &out) }.expect("loads");
        assert!(module.get_export("f").is_some());
    }

    #[test]
    fn compile_errors_and_unknown_kinds_are_messages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = compile_bytes(&args("module", dir.path().join("x")), b"\0asm\x01\0\0\0\xff").expect_err("invalid");
        assert!(!err.is_empty());
        let err = compile_bytes(&args("library", dir.path().join("y")), b"").expect_err("bad kind");
        assert!(err.contains("unknown artifact kind"), "{err}");
    }

    #[test]
    fn a_failing_compiler_process_is_a_compile_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = RuntimeConfig::default();
        let err =
            in_child(&["false".into()], &cfg, Kind::Module, b"\0asm", &dir.path().join("z")).expect_err("false fails");
        assert!(err.to_string().contains("compiler process failed"), "{err}");
        let err = in_child(&["/nonexistent/skiff".into()], &cfg, Kind::Module, b"\0asm", &dir.path().join("z"))
            .expect_err("missing program");
        assert!(err.to_string().contains("starting the compiler"), "{err}");
    }
}
