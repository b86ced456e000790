//! Registry credentials from `imagePullSecrets`, read and matched the way the kubelet does
//! (`pkg/credentialprovider`: `BasicDockerKeyring`, `URLsMatch`, `isDefaultRegistryMatch`).
//!
//! What it owns: parsing the two Secret formats — `kubernetes.io/dockerconfigjson`
//! (`.dockerconfigjson`: `{"auths": {"host[:port][/path]": {...}}}`) and the legacy
//! `kubernetes.io/dockercfg` (`.dockercfg`: the `auths` map alone) — into a [`Keyring`], and
//! answering which credentials apply to an image. What it does not: read Secrets from the API
//! (`crate::environment` does), or talk to registries (the runtime does, trying the
//! candidates in the order given here).
//!
//! Matching, as in the kubelet: a key is stripped of `https://`/`http://` and of a leading
//! `/v1/` or `/v2/` path; it matches an image when the ports are equal, the hosts have the same
//! number of dot-separated labels that match one by one (a label may be a glob with `*`/`?`),
//! and the key's path is a prefix of the image's repository path. More specific keys are
//! tried first (keys sorted in reverse), and for one key the Secrets in `imagePullSecrets`
//! order. Images on Docker Hub (`nginx`, `user/app`, `docker.io/...`) that no key matches fall
//! back to the `index.docker.io` key (what `docker login` writes as `https://index.docker.io/v1/`).

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

/// `type` of a Secret holding a `~/.docker/config.json`.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// Its data key.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// `type` of the legacy `~/.dockercfg` Secret.
pub const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";
/// Its data key.
pub const DOCKERCFG_KEY: &str = ".dockercfg";

/// The key `docker login` writes for Docker Hub, and the one Docker Hub images fall back to.
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// A username and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    // Passwords never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Why a pull Secret could not be read. The message names the Secret and the entry, since it
/// ends up in the container's `ErrImagePull` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullSecretError {
    #[error("imagePullSecret {secret:?}: {key} is not valid docker config JSON: {message}")]
    Json { secret: String, key: &'static str, message: String },
    #[error("imagePullSecret {secret:?}: the entry for {registry:?} has an auth that is not base64 of user:password")]
    Auth { secret: String, registry: String },
    #[error("imagePullSecret {secret:?} of type {kind} has no {key} key")]
    MissingKey { secret: String, kind: &'static str, key: &'static str },
}

/// One `auths` entry as written by docker clients.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConfigEntry {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

/// `config.json`: other fields (`credsStore`, `HttpHeaders`, ...) are ignored, and a config
/// without `auths` has no credentials, as for the kubelet.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConfigJson {
    auths: BTreeMap<String, ConfigEntry>,
}

/// One credential with the (normalised) key it applies to.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    credential: Credential,
}

/// Credentials by registry key, in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    entries: Vec<Entry>,
}

impl Keyring {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the entries of one Secret. Returns `Ok(false)` when the Secret is not of a docker
    /// config type (the kubelet ignores those); a docker config Secret that cannot be read is
    /// an error.
    pub fn add_secret(
        &mut self,
        name: &str,
        secret_type: Option<&str>,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<bool, PullSecretError> {
        let (kind, key) = match secret_type {
            Some(DOCKER_CONFIG_JSON_TYPE) => (DOCKER_CONFIG_JSON_TYPE, DOCKER_CONFIG_JSON_KEY),
            Some(DOCKERCFG_TYPE) => (DOCKERCFG_TYPE, DOCKERCFG_KEY),
            _ => return Ok(false),
        };
        let bytes = data.get(key).filter(|b| !b.is_empty()).ok_or_else(|| PullSecretError::MissingKey {
            secret: name.to_string(),
            kind,
            key,
        })?;
        let json_error =
            |e: serde_json::Error| PullSecretError::Json { secret: name.into(), key, message: e.to_string() };
        let auths = if key == DOCKER_CONFIG_JSON_KEY {
            serde_json::from_slice::<ConfigJson>(bytes).map_err(json_error)?.auths
        } else {
            serde_json::from_slice::<BTreeMap<String, ConfigEntry>>(bytes).map_err(json_error)?
        };
        for (registry, entry) in auths {
            if let Some(credential) = credential(name, &registry, entry)? {
                self.entries.push(Entry { key: normalise_key(&registry), credential });
            }
        }
        Ok(true)
    }

    /// The credentials to try for `image`, best first; empty when none applies (pull
    /// anonymously).
    pub fn lookup(&self, image: &str) -> Vec<Credential> {
        let target = repository(image);
        let mut keys: Vec<&str> = self.entries.iter().map(|e| e.key.as_str()).collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.dedup();
        let mut out: Vec<Credential> = keys
            .into_iter()
            .filter(|key| urls_match(key, &target))
            .flat_map(|key| self.entries.iter().filter(move |e| e.key == key).map(|e| e.credential.clone()))
            .collect();
        if out.is_empty() && is_default_registry(&target) {
            out =
                self.entries.iter().filter(|e| e.key == DEFAULT_REGISTRY_HOST).map(|e| e.credential.clone()).collect();
        }
        out
    }
}

/// The credential of one entry: `auth` (base64 `user:password`) wins over `username` and
/// `password`, as in docker's config. An entry with neither gives nothing (anonymous).
fn credential(secret: &str, registry: &str, entry: ConfigEntry) -> Result<Option<Credential>, PullSecretError> {
    if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
        let bad = || PullSecretError::Auth { secret: secret.to_string(), registry: registry.to_string() };
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credential { username: username.to_string(), password: password.to_string() }));
    }
    match (entry.username, entry.password) {
        (None, None) => Ok(None),
        (username, password) => {
            Ok(Some(Credential { username: username.unwrap_or_default(), password: password.unwrap_or_default() }))
        }
    }
}

/// `https://host:port/v1/` → `host:port`; `quay.io/team` stays as is.
fn normalise_key(key: &str) -> String {
    let key = key.trim();
    let rest = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // docker treats /v1/ and /v2/ as the registry root.
    let path = if path.starts_with("/v1/") || path.starts_with("/v2/") { &path[3..] } else { path };
    if path.is_empty() || path == "/" { host.to_string() } else { format!("{host}{path}") }
}

/// The repository of an image, fully qualified as the kubelet looks it up: no tag or digest,
/// Docker Hub spelled `docker.io` with `library/` for official images.
fn repository(image: &str) -> String {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    // A tag is a `:` after the last `/` (a `:` before it is a registry port).
    let image = match (image.rfind(':'), image.rfind('/')) {
        (Some(colon), slash) if slash.is_none_or(|s| colon > s) => &image[..colon],
        _ => image,
    };
    match image.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            if first == "index.docker.io" { format!("docker.io/{rest}") } else { image.to_string() }
        }
        Some(_) => format!("docker.io/{image}"),
        None => format!("docker.io/library/{image}"),
    }
}

/// Whether a (qualified) repository is on Docker Hub.
fn is_default_registry(repository: &str) -> bool {
    matches!(repository.split_once('/'), Some(("docker.io" | "index.docker.io", _)))
}

/// `host:port/path` → (host labels, port, path).
fn split(url: &str) -> (Vec<&str>, &str, &str) {
    let (host, path) = match url.find('/') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (host, port) = match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
        _ => (host, ""),
    };
    (host.split('.').collect(), port, path)
}

/// The kubelet's `URLsMatch`: equal ports, as many host labels, each matching its glob, and the
/// key's path a prefix of the image's.
fn urls_match(key: &str, target: &str) -> bool {
    let (key_labels, key_port, key_path) = split(key);
    let (target_labels, target_port, target_path) = split(target);
    key_port == target_port
        && key_labels.len() == target_labels.len()
        && target_path.starts_with(key_path)
        && key_labels.iter().zip(&target_labels).all(|(k, t)| glob_match(k.as_bytes(), t.as_bytes()))
}

/// `*` (any run) and `?` (one character) globs over one host label.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob_match(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn data(key: &str, json: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([(key.to_string(), json.as_bytes().to_vec())])
    }

    fn keyring(json: &str) -> Keyring {
        let mut k = Keyring::default();
        assert!(k.add_secret("s", Some(DOCKER_CONFIG_JSON_TYPE), &data(DOCKER_CONFIG_JSON_KEY, json)).expect("parses"));
        k
    }

    fn users(k: &Keyring, image: &str) -> Vec<String> {
        k.lookup(image).into_iter().map(|c| c.username).collect()
    }

    #[test]
    fn dockerconfigjson_with_username_and_password() {
        let k = keyring(r#"{"auths":{"127.0.0.1:5000":{"username":"alice","password":"s3cret"}}}"#);
        let found = k.lookup("127.0.0.1:5000/demo/app:v1");
        assert_eq!(found, vec![Credential { username: "alice".into(), password: "s3cret".into() }]);
        assert!(k.lookup("127.0.0.1:5001/demo/app:v1").is_empty(), "another port is another registry");
        assert!(k.lookup("127.0.0.2:5000/demo/app").is_empty());
    }

    #[test]
    fn base64_auth_wins_and_may_contain_colons() {
        let json = format!(
            r#"{{"auths":{{"reg.example.com":{{"username":"ignored","password":"x","auth":"{}"}}}}}}"#,
            b64("bob:pa:ss")
        );
        let k = keyring(&json);
        assert_eq!(
            k.lookup("reg.example.com/team/app@sha256:abc"),
            vec![Credential { username: "bob".into(), password: "pa:ss".into() }]
        );
    }

    #[test]
    fn legacy_dockercfg() {
        let json = format!(r#"{{"https://reg.example.com":{{"auth":"{}","email":"a@b"}}}}"#, b64("carol:pw"));
        let mut k = Keyring::default();
        assert!(k.add_secret("old", Some(DOCKERCFG_TYPE), &data(DOCKERCFG_KEY, &json)).expect("parses"));
        assert_eq!(users(&k, "reg.example.com/app:v1"), ["carol"]);
    }

    #[test]
    fn other_secret_types_are_ignored() {
        let mut k = Keyring::default();
        let d = data(DOCKER_CONFIG_JSON_KEY, "{}");
        assert!(!k.add_secret("opaque", Some("Opaque"), &d).expect("ignored"));
        assert!(!k.add_secret("untyped", None, &d).expect("ignored"));
        assert!(k.is_empty());
    }

    #[test]
    fn malformed_secrets_are_clear_errors() {
        let mut k = Keyring::default();
        let err = k
            .add_secret("bad", Some(DOCKER_CONFIG_JSON_TYPE), &data(DOCKER_CONFIG_JSON_KEY, "{not json"))
            .expect_err("bad JSON");
        assert!(matches!(err, PullSecretError::Json { .. }), "{err}");
        assert!(err.to_string().contains("\"bad\"") && err.to_string().contains(".dockerconfigjson"), "{err}");
        let err = k
            .add_secret("list", Some(DOCKER_CONFIG_JSON_TYPE), &data(DOCKER_CONFIG_JSON_KEY, r#"{"auths":[1]}"#))
            .expect_err("auths not a map");
        assert!(err.to_string().contains("auths") || err.to_string().contains("map"), "{err}");
        let err = k
            .add_secret(
                "badauth",
                Some(DOCKER_CONFIG_JSON_TYPE),
                &data(DOCKER_CONFIG_JSON_KEY, r#"{"auths":{"r.io":{"auth":"!!"}}}"#),
            )
            .expect_err("bad base64");
        assert_eq!(err, PullSecretError::Auth { secret: "badauth".into(), registry: "r.io".into() });
        let nocolon = format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, b64("nocolon"));
        let err = k
            .add_secret("c", Some(DOCKER_CONFIG_JSON_TYPE), &data(DOCKER_CONFIG_JSON_KEY, &nocolon))
            .expect_err("no colon");
        assert!(matches!(err, PullSecretError::Auth { .. }));
        let err = k.add_secret("empty", Some(DOCKERCFG_TYPE), &BTreeMap::new()).expect_err("missing key");
        assert!(err.to_string().contains(".dockercfg"), "{err}");
        assert!(k.is_empty());
    }

    #[test]
    fn keys_with_schemes_and_api_paths() {
        assert_eq!(normalise_key("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(normalise_key("http://reg:5000/v2/"), "reg:5000");
        assert_eq!(normalise_key("quay.io/team"), "quay.io/team");
        assert_eq!(normalise_key("https://quay.io/v2/team"), "quay.io/team");
    }

    #[test]
    fn images_are_qualified_like_the_kubelet_does() {
        assert_eq!(repository("nginx"), "docker.io/library/nginx");
        assert_eq!(repository("nginx:1.27"), "docker.io/library/nginx");
        assert_eq!(repository("user/app:v1"), "docker.io/user/app");
        assert_eq!(repository("index.docker.io/user/app"), "docker.io/user/app");
        assert_eq!(repository("localhost:5000/app:v1"), "localhost:5000/app");
        assert_eq!(repository("127.0.0.1:5000/a/b@sha256:00"), "127.0.0.1:5000/a/b");
    }

    #[test]
    fn docker_hub_aliases() {
        let hub = format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#, b64("hub:pw"));
        let k = keyring(&hub);
        assert_eq!(users(&k, "nginx"), ["hub"]);
        assert_eq!(users(&k, "docker.io/user/app:v1"), ["hub"]);
        assert!(k.lookup("quay.io/user/app").is_empty());
        let k = keyring(r#"{"auths":{"docker.io":{"username":"d","password":"p"}}}"#);
        assert_eq!(users(&k, "user/app"), ["d"]);
    }

    #[test]
    fn specific_keys_first_then_secret_order() {
        let mut k = Keyring::default();
        let first = r#"{"auths":{"quay.io":{"username":"broad1","password":"p"}}}"#;
        let second = r#"{"auths":{"quay.io":{"username":"broad2","password":"p"},"quay.io/team":{"username":"team","password":"p"}}}"#;
        k.add_secret("a", Some(DOCKER_CONFIG_JSON_TYPE), &data(DOCKER_CONFIG_JSON_KEY, first)).expect("a");
        k.add_secret("b", Some(DOCKER_CONFIG_JSON_TYPE), &data(DOCKER_CONFIG_JSON_KEY, second)).expect("b");
        assert_eq!(users(&k, "quay.io/team/app:v1"), ["team", "broad1", "broad2"]);
        assert_eq!(users(&k, "quay.io/other/app"), ["broad1", "broad2"]);
    }

    #[test]
    fn host_globs() {
        let k = keyring(r#"{"auths":{"*.example.com":{"username":"w","password":"p"}}}"#);
        assert_eq!(users(&k, "reg.example.com/app"), ["w"]);
        assert!(k.lookup("a.reg.example.com/app").is_empty(), "a glob label matches one label");
        assert!(k.lookup("example.com/app").is_empty());
        assert!(glob_match(b"r?g", b"reg"));
        assert!(!glob_match(b"r?g", b"rg"));
    }
}
