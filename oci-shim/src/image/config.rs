//! The parts of a container image's config blob the runtime needs: what to run (entrypoint,
//! cmd, env, working dir, user), what it exposes, and the layer DiffIDs that key snapshots.
//!
//! Parsed with `oci-spec` (Docker's config format is the same document). The user string is
//! kept as written (`name`, `uid`, `uid:gid`, …): resolving it against the image's
//! `/etc/passwd` belongs to whoever builds the runtime spec.

use std::collections::BTreeMap;

use oci_spec::image::ImageConfiguration;

use super::ImageError;

/// What an image says about running it (`config` in the image config blob).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint` (Kubernetes `command` replaces it).
    pub entrypoint: Vec<String>,
    /// `Cmd` (Kubernetes `args` replaces it).
    pub cmd: Vec<String>,
    /// `Env`, `NAME=value` strings in image order.
    pub env: Vec<String>,
    /// `WorkingDir`; empty means `/`.
    pub working_dir: String,
    /// `User` as written in the image; empty means root.
    pub user: String,
    /// `ExposedPorts`, parsed.
    pub exposed_ports: Vec<ExposedPort>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `StopSignal` (e.g. `SIGQUIT`); empty means SIGTERM.
    pub stop_signal: String,
    /// `Volumes`: paths the image expects to be volumes.
    pub volumes: Vec<String>,
    /// `os`/`architecture` the image was built for (e.g. `linux`, `amd64`).
    pub os: String,
    pub architecture: String,
    /// `rootfs.diff_ids`: digests of the uncompressed layers, bottom first.
    pub diff_ids: Vec<String>,
}

/// One `ExposedPorts` entry (`"80/tcp"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedPort {
    pub port: u16,
    /// `tcp`, `udp` or `sctp` (lower case; `tcp` when the entry names none).
    pub protocol: String,
}

impl ImageConfig {
    /// Parses a config blob. `digest` names it in errors.
    pub fn parse(digest: &str, bytes: &[u8]) -> Result<ImageConfig, ImageError> {
        let parsed: ImageConfiguration = serde_json::from_slice(bytes)
            .map_err(|e| ImageError::InvalidArtifact(format!("image config {digest} is not valid: {e}")))?;
        let mut config = ImageConfig {
            os: parsed.os().to_string(),
            architecture: parsed.architecture().to_string(),
            diff_ids: parsed.rootfs().diff_ids().clone(),
            ..ImageConfig::default()
        };
        if let Some(c) = parsed.config() {
            config.entrypoint = c.entrypoint().clone().unwrap_or_default();
            config.cmd = c.cmd().clone().unwrap_or_default();
            config.env = c.env().clone().unwrap_or_default();
            config.working_dir = c.working_dir().clone().unwrap_or_default();
            config.user = c.user().clone().unwrap_or_default();
            config.stop_signal = c.stop_signal().clone().unwrap_or_default();
            config.volumes = c.volumes().clone().unwrap_or_default();
            config.labels = c.labels().clone().unwrap_or_default().into_iter().collect();
            for entry in c.exposed_ports().iter().flatten() {
                config.exposed_ports.push(parse_port(entry).ok_or_else(|| {
                    ImageError::InvalidArtifact(format!("image config {digest}: bad ExposedPorts entry {entry:?}"))
                })?);
            }
        }
        Ok(config)
    }
}

/// `"80"`, `"80/tcp"`, `"53/UDP"` -> port and lower-case protocol.
fn parse_port(entry: &str) -> Option<ExposedPort> {
    let (port, protocol) = entry.split_once('/').unwrap_or((entry, "tcp"));
    let protocol = protocol.to_ascii_lowercase();
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return None;
    }
    Some(ExposedPort { port: port.parse().ok()?, protocol })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_docker_style_config() {
        let blob = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {
                "User": "1000:1000", "Env": ["PATH=/usr/bin:/bin", "A=b"],
                "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "WorkingDir": "/srv",
                "ExposedPorts": {"80/tcp": {}, "53/UDP": {}, "8080": {}},
                "Labels": {"org.example": "x"}, "StopSignal": "SIGQUIT", "Volumes": {"/data": {}}
            },
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa", "sha256:bb"]},
            "history": []
        });
        let config = ImageConfig::parse("sha256:c", blob.to_string().as_bytes()).expect("parse");
        assert_eq!(config.entrypoint, ["/bin/sh", "-c"]);
        assert_eq!(config.cmd, ["echo hi"]);
        assert_eq!(config.env, ["PATH=/usr/bin:/bin", "A=b"]);
        assert_eq!((config.working_dir.as_str(), config.user.as_str()), ("/srv", "1000:1000"));
        assert_eq!(config.diff_ids, ["sha256:aa", "sha256:bb"]);
        let mut ports: Vec<(u16, &str)> = config.exposed_ports.iter().map(|p| (p.port, p.protocol.as_str())).collect();
        ports.sort();
        assert_eq!(ports, [(53, "udp"), (80, "tcp"), (8080, "tcp")]);
        assert_eq!(config.labels["org.example"], "x");
        assert_eq!(config.stop_signal, "SIGQUIT");
        assert_eq!(config.volumes, ["/data"]);
        assert_eq!((config.os.as_str(), config.architecture.as_str()), ("linux", "amd64"));
    }

    #[test]
    fn minimal_and_broken_configs() {
        let minimal = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config = ImageConfig::parse("sha256:c", minimal).expect("minimal");
        assert!(config.entrypoint.is_empty() && config.cmd.is_empty() && config.exposed_ports.is_empty());
        let err = ImageConfig::parse("sha256:c", b"not json").expect_err("broken");
        assert!(err.to_string().contains("image config sha256:c"), "{err}");
        assert_eq!(parse_port("x/tcp"), None);
        assert_eq!(parse_port("1/quic"), None);
    }
}
