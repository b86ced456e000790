//! Reading the API objects pods refer to — ConfigMaps, Secrets, PersistentVolumeClaims and
//! PersistentVolumes — through the agent's `kube::Client`, with a short TTL cache so the env
//! of many containers (or many pods) referring to one ConfigMap costs one request per second.
//!
//! Only reads; the node never writes these objects. Not-found is an answer (`None`), not an
//! error, because whether it is fatal depends on `optional`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret};
use kube::Api;

use crate::pod_env::PodEnvError;

/// How long a read ConfigMap/Secret is reused. Shorter than the volume refresh period, so
/// every refresh sees the object at most this old.
pub const CACHE_TTL: Duration = Duration::from_millis(800);

/// `(kind, namespace, name)`.
type Key = (&'static str, String, String);
type Entry = (Instant, Option<BTreeMap<String, Vec<u8>>>);

/// Cached reads of the objects pods refer to.
#[derive(Clone)]
pub struct ApiObjects {
    client: kube::Client,
    cache: Arc<Mutex<HashMap<Key, Entry>>>,
}

impl std::fmt::Debug for ApiObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Cached values may be secrets: never print them.
        f.debug_struct("ApiObjects").finish_non_exhaustive()
    }
}

fn api_error(what: &str, ns: &str, name: &str, e: kube::Error) -> PodEnvError {
    PodEnvError::Config(format!("failed to get {what} {ns}/{name}: {e}"))
}

/// `data` and `binaryData` of a ConfigMap, as bytes.
pub fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())).collect();
    out.extend(cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
    out
}

/// `data` (and a never-stored `stringData`) of a Secret, as bytes.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    out.extend(secret.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())));
    out
}

impl ApiObjects {
    pub fn new(client: kube::Client) -> ApiObjects {
        ApiObjects { client, cache: Arc::default() }
    }

    fn cached(&self, key: &Key) -> Option<Option<BTreeMap<String, Vec<u8>>>> {
        let cache = self.cache.lock().ok()?;
        let (at, value) = cache.get(key)?;
        (at.elapsed() < CACHE_TTL).then(|| value.clone())
    }

    fn remember(&self, key: Key, value: Option<BTreeMap<String, Vec<u8>>>) {
        if let Ok(mut cache) = self.cache.lock() {
            // Drop stale entries now and then so deleted objects do not pile up.
            if cache.len() > 1024 {
                cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            }
            cache.insert(key, (Instant::now(), value));
        }
    }

    /// The data of ConfigMap `ns/name`, `None` when it does not exist.
    pub async fn config_map(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, PodEnvError> {
        let key = ("configmap", ns.to_string(), name.to_string());
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let value =
            api.get_opt(name).await.map_err(|e| api_error("configmap", ns, name, e))?.map(|cm| config_map_data(&cm));
        self.remember(key, value.clone());
        Ok(value)
    }

    /// The data of Secret `ns/name`, `None` when it does not exist.
    pub async fn secret(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, PodEnvError> {
        let key = ("secret", ns.to_string(), name.to_string());
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let value = api.get_opt(name).await.map_err(|e| api_error("secret", ns, name, e))?.map(|s| secret_data(&s));
        self.remember(key, value.clone());
        Ok(value)
    }

    /// Secret `ns/name` with its `type`, for `imagePullSecrets` (uncached: read once per pull,
    /// and a rotated registry password should work at the next retry).
    pub async fn typed_secret(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<(Option<String>, BTreeMap<String, Vec<u8>>)>, PodEnvError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = api.get_opt(name).await.map_err(|e| api_error("secret", ns, name, e))?;
        Ok(secret.map(|s| (s.type_.clone(), secret_data(&s))))
    }

    /// A PersistentVolumeClaim (uncached: binding changes matter).
    pub async fn claim(&self, ns: &str, name: &str) -> Result<Option<PersistentVolumeClaim>, PodEnvError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        api.get_opt(name).await.map_err(|e| api_error("persistentvolumeclaim", ns, name, e))
    }

    /// A PersistentVolume (uncached).
    pub async fn volume(&self, name: &str) -> Result<Option<PersistentVolume>, PodEnvError> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        api.get_opt(name).await.map_err(|e| api_error("persistentvolume", "", name, e))
    }
}
