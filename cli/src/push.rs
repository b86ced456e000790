//! `skiff push FILE NAME:TAG`: uploads a `.wasm` file as a CNCF wasm OCI artifact, or a
//! container image from an OCI image layout directory or a tar/tar.gz of one (told apart by
//! content, `push_layout`), and prints the reference to put in a pod's `image:`. For a layout,
//! the tag also picks the image when its `index.json` names several
//! (`org.opencontainers.image.ref.name`); a multi-platform image is pushed whole.
//!
//! By default it pushes to the cluster's built-in registry, found through a kubeconfig (the
//! data dir's, else `$KUBECONFIG`, else `~/.kube/config`): the API server's `host:port`, its
//! CA and the user's token. `--registry HOST:PORT` pushes to any other registry instead
//! (anonymously; `--insecure` for plain HTTP), which is how tests reach `docker-registry`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use clap::Args;
use skiff_oci_shim::image::{Auth, RegistryCredentials, push_image_layout, push_wasm};

use push_layout::Source;

#[path = "push_layout.rs"]
mod push_layout;

/// Arguments of `skiff push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The `.wasm` module or component, OCI image layout directory, or `.tar`/`.tar.gz` of a
    /// layout to push.
    file: PathBuf,
    /// Repository and tag, e.g. `demo/hello:v1`.
    name_tag: String,
    /// Kubeconfig naming the cluster (and its built-in registry).
    #[arg(long, env = "SKIFF_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Data dir whose kubeconfig to use [default: as for `skiff up`].
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Push to this registry (`HOST:PORT`) instead of the cluster's built-in one.
    #[arg(long)]
    registry: Option<String>,
    /// Reach `--registry` over plain HTTP.
    #[arg(long, requires = "registry")]
    insecure: bool,
}

/// Where the kubeconfig's current context points.
#[derive(Debug, PartialEq, Eq)]
struct ClusterAccess {
    /// `host:port` of the API server (= the built-in registry).
    host_port: String,
    ca_pem: Option<String>,
    token: Option<String>,
}

/// Runs `skiff push`; prints `HOST:PORT/NAME:TAG` on success.
pub fn run(args: PushArgs) -> anyhow::Result<()> {
    validate_name_tag(&args.name_tag)?;
    let source = push_layout::open(&args.file)?;
    let (host_port, creds) = match &args.registry {
        Some(registry) => {
            let insecure_registries = if args.insecure { vec![registry.clone()] } else { Vec::new() };
            (registry.clone(), RegistryCredentials { insecure_registries, ..RegistryCredentials::default() })
        }
        None => {
            let path = kubeconfig_path(args.kubeconfig.as_deref(), args.data_dir.as_deref())?;
            let access = read_kubeconfig(&path)?;
            let creds = RegistryCredentials {
                auth: access.token.clone().map(Auth::Bearer),
                insecure_registries: Vec::new(),
                extra_root_ca_pem: access.ca_pem.clone(),
            };
            (access.host_port, creds)
        }
    };
    let reference = format!("{host_port}/{}", args.name_tag);
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let pushed = rt
        .block_on(async {
            match &source {
                Source::Wasm(wasm) => push_wasm(&reference, wasm.clone(), &creds).await,
                Source::Layout { dir, .. } => push_image_layout(dir, &reference, &creds).await,
            }
        })
        .with_context(|| format!("pushing {} as {reference}", args.file.display()))?;
    eprintln!("pushed {} ({})", reference, pushed.digest);
    println!("{reference}");
    Ok(())
}

/// `NAME:TAG` with a lowercase repository path and a tag.
fn validate_name_tag(name_tag: &str) -> anyhow::Result<()> {
    let Some((name, tag)) = name_tag.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) else {
        bail!("{name_tag:?} is not NAME:TAG (e.g. demo/hello:v1): the tag is missing");
    };
    let name_ok = !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        });
    if !name_ok {
        bail!("invalid repository name {name:?}: use lowercase letters, digits and . _ - separated by /");
    }
    let tag_ok = tag.len() <= 128
        && tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !tag_ok {
        bail!("invalid tag {tag:?}: use letters, digits and . _ - (at most 128)");
    }
    Ok(())
}

/// `--kubeconfig`, else the data dir's, else `$KUBECONFIG`'s first file, else `~/.kube/config`.
fn kubeconfig_path(explicit: Option<&Path>, data_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let data_dir = data_dir.map(Path::to_path_buf).unwrap_or_else(super::default_data_dir);
    let mut candidates = vec![data_dir.join("kubeconfig")];
    if let Some(env) = std::env::var_os("KUBECONFIG") {
        candidates.extend(std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".kube/config"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("no kubeconfig found: pass --kubeconfig, --data-dir, or set KUBECONFIG")
}

/// Reads the current context's server, CA and token.
fn read_kubeconfig(path: &Path) -> anyhow::Result<ClusterAccess> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing kubeconfig {}", path.display()))?;
    let current = doc["current-context"].as_str().context("kubeconfig has no current-context")?;
    let named = |list: &str, name: &str| {
        doc[list].as_sequence().and_then(|items| items.iter().find(|i| i["name"].as_str() == Some(name)).cloned())
    };
    let context = named("contexts", current).with_context(|| format!("context {current:?} not in kubeconfig"))?;
    let cluster_name = context["context"]["cluster"].as_str().context("context names no cluster")?;
    let cluster =
        named("clusters", cluster_name).with_context(|| format!("cluster {cluster_name:?} not in kubeconfig"))?;
    let server = cluster["cluster"]["server"].as_str().context("cluster has no server")?;
    let host_port = server
        .strip_prefix("https://")
        .with_context(|| format!("server {server:?} is not https:// (the built-in registry is served over TLS)"))?
        .trim_end_matches('/')
        .to_string();
    let ca_pem = match (
        cluster["cluster"]["certificate-authority-data"].as_str(),
        cluster["cluster"]["certificate-authority"].as_str(),
    ) {
        (Some(data), _) => {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .context("certificate-authority-data is not base64")?;
            Some(String::from_utf8(pem).context("certificate-authority-data is not PEM")?)
        }
        (None, Some(file)) => Some(std::fs::read_to_string(file).with_context(|| format!("reading CA {file}"))?),
        (None, None) => None,
    };
    let token = match context["context"]["user"].as_str().and_then(|user| named("users", user)) {
        Some(user) => user["user"]["token"].as_str().map(str::to_string),
        None => None,
    };
    Ok(ClusterAccess { host_port, ca_pem, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_tags() {
        validate_name_tag("demo/hello:v1").expect("valid");
        validate_name_tag("a:latest").expect("valid");
        for bad in ["demo/hello", "Demo/hello:v1", "demo//hello:v1", "demo/hello:", "demo/hello:.x", "host:5000/demo"] {
            assert!(validate_name_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_skiff_kubeconfigs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        let ca = base64::engine::general_purpose::STANDARD.encode("-----BEGIN CERTIFICATE-----\n");
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: skiff\nclusters:\n- name: skiff\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: tok\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n"
        );
        std::fs::write(&path, yaml).expect("write");
        let access = read_kubeconfig(&path).expect("read");
        assert_eq!(access.host_port, "127.0.0.1:6443");
        assert_eq!(access.token.as_deref(), Some("tok"));
        assert_eq!(access.ca_pem.as_deref(), Some("-----BEGIN CERTIFICATE-----\n"));
    }
}
