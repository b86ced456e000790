//! Running one CNI plugin executable under the CNI environment contract.
//!
//! What it owns: finding the plugin in the configured directories, the `CNI_*` environment,
//! stdin/stdout, a timeout (the child is killed on expiry), and turning a failure into a
//! [`CniError`] that carries the plugin's own `code`/`msg`/`details`. Optionally the plugin
//! runs inside another network namespace through `nsenter --net=<path>`: an exec is simpler
//! and easier to read in `ps` than `setns` on a throw-away thread, and `pre_exec` would need
//! `unsafe`, which the workspace denies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::cni::CniError;

/// One invocation's environment (the parts that are not the plugin's stdin).
#[derive(Debug)]
pub struct Invocation<'a> {
    pub command: &'static str,
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub args: String,
    pub plugin_dirs: &'a [PathBuf],
    pub host_netns: Option<&'a Path>,
    pub timeout: Duration,
}

/// The error object a plugin prints on stdout when it fails (CNI spec "Error").
#[derive(Debug, Deserialize)]
struct PluginError {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// The first `plugin` executable in `dirs`.
pub fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(CniError::PluginNotFound { plugin: plugin.to_string(), dirs: dirs.to_vec() });
    }
    dirs.iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::PluginNotFound { plugin: plugin.to_string(), dirs: dirs.to_vec() })
}

/// Runs `plugin` with `stdin`; its stdout on success.
pub async fn run_plugin(plugin: &str, inv: &Invocation<'_>, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let bin = find_plugin(plugin, inv.plugin_dirs)?;
    let mut cmd = match inv.host_netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("--").arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let cni_path = std::env::join_paths(inv.plugin_dirs)
        .map_err(|e| CniError::Spawn { plugin: plugin.to_string(), source: std::io::Error::other(e) })?;
    cmd.env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", &inv.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let spawn_err = |source| CniError::Spawn { plugin: plugin.to_string(), source };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let mut pipe = child.stdin.take().ok_or_else(|| spawn_err(std::io::Error::other("no stdin pipe")))?;
    let run = async {
        // A plugin may exit without reading stdin (e.g. a broken binary); that shows in its
        // exit status, so a failed write is not the error to report.
        let _ = pipe.write_all(stdin).await;
        drop(pipe);
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(inv.timeout, run)
        .await
        .map_err(|_| CniError::Timeout { plugin: plugin.to_string(), command: inv.command, after: inv.timeout })?
        .map_err(spawn_err)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(failure(plugin, inv.command, &out.stdout, &out.stderr, out.status.code()))
}

/// The error for a failed plugin: its own error object if it printed one.
fn failure(plugin: &str, command: &'static str, stdout: &[u8], stderr: &[u8], status: Option<i32>) -> CniError {
    match serde_json::from_slice::<PluginError>(stdout) {
        Ok(e) => CniError::Plugin { plugin: plugin.to_string(), command, code: e.code, msg: e.msg, details: e.details },
        Err(_) => CniError::Crashed {
            plugin: plugin.to_string(),
            command,
            status,
            output: format!("{} {}", String::from_utf8_lossy(stdout).trim(), String::from_utf8_lossy(stderr).trim())
                .trim()
                .to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_errors_keep_msg_and_details() {
        let out = br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to set bridge addr","details":"could not add IP address to \"skiff0\": permission denied"}"#;
        let err = failure("bridge", "ADD", out, b"", Some(1));
        let CniError::Plugin { code, ref msg, ref details, .. } = err else { panic!("not a plugin error: {err:?}") };
        assert_eq!(code, 11);
        assert_eq!(msg, "failed to set bridge addr");
        assert!(details.contains("permission denied"));
        let text = err.to_string();
        assert!(text.contains("bridge") && text.contains("ADD") && text.contains("permission denied"), "{text}");
    }

    #[test]
    fn non_json_failures_keep_the_output() {
        let err = failure("portmap", "DEL", b"", b"panic: runtime error", Some(2));
        assert!(matches!(err, CniError::Crashed { status: Some(2), .. }));
        assert!(err.to_string().contains("panic: runtime error"));
    }

    #[test]
    fn missing_plugins_name_the_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = find_plugin("bridge", &[dir.path().to_path_buf()]).expect_err("no plugin there");
        assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
        assert!(find_plugin("../sh", &[PathBuf::from("/bin")]).is_err());
    }
}
