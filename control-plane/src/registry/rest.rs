//! The validated write path and the read path, shared by the HTTP handlers and (in later
//! issues) the in-process controllers: decode → default → strategy → validate → admission
//! (namespace lifecycle) → compare-and-swap in the store.
//!
//! It speaks `serde_json::Value` objects that have been round-tripped through their
//! `k8s-openapi` type, and [`ApiError`]s that the HTTP layer renders as `Status` objects.

use serde_json::{Value, json};
use skiff_api::{defaults, validation};
use tracing::instrument;

use super::catalog::ResourceInfo;
use super::namespaces::NamespaceCache;
use super::object::{self, meta_mut, meta_str};
use super::service_alloc::{self, ServiceAllocator, ServiceNetwork};
use super::strategy;
use crate::apiserver::error::ApiError;
use crate::apiserver::request::FieldValidation;
use crate::storage::{KeyValue, Revision, SharedStore, StoreError};

/// How a write is carried out.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self { dry_run: false, field_validation: FieldValidation::Strict }
    }
}

/// The outcome of a write: the object as stored and warnings for the client.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// Options of a delete (query parameters and `DeleteOptions` body merged).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

/// The outcome of a delete.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub object: Value,
    /// False when the object still exists (graceful deletion or finalizers pending).
    pub gone: bool,
}

/// Reads and writes API objects through the store with the API server's rules.
#[derive(Debug, Clone)]
pub struct Registry {
    store: SharedStore,
    namespaces: NamespaceCache,
    /// `tolerationSeconds` of the default not-ready/unreachable tolerations new pods get.
    default_toleration_seconds: i64,
    /// Cluster IPs and node ports of Services.
    services: ServiceAllocator,
}

/// How often a write retries after losing a compare-and-swap race it did not ask for.
const MAX_RETRIES: usize = 16;

impl Registry {
    pub fn new(store: SharedStore) -> Self {
        let services = ServiceAllocator::new(store.clone(), ServiceNetwork::default());
        Self { store, namespaces: NamespaceCache::default(), default_toleration_seconds: 300, services }
    }

    /// Sets the Service network (`--service-cluster-ip-range`, `--service-node-port-range`).
    pub fn with_service_network(mut self, network: ServiceNetwork) -> Self {
        self.services = ServiceAllocator::new(self.store.clone(), network);
        self
    }

    /// The Service address and port allocator (the repair controller and bootstrap use it).
    pub fn service_allocator(&self) -> &ServiceAllocator {
        &self.services
    }

    /// Sets the `tolerationSeconds` of the default not-ready/unreachable tolerations
    /// (`--default-unreachable-toleration-seconds`; 300 when not set).
    pub fn with_default_toleration(mut self, toleration: std::time::Duration) -> Self {
        self.default_toleration_seconds = i64::try_from(toleration.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// The stored object at `key`, or the Kubernetes NotFound for `info`/`name`.
    async fn existing(&self, key: &str, info: &ResourceInfo, name: &str) -> Result<KeyValue, ApiError> {
        self.store.get(key).await.map_err(|e| store_err(e, info, name))?.ok_or_else(|| not_found(info, name))
    }

    /// The namespace cache admission reads; [`NamespaceCache::run`] keeps it current.
    pub fn namespace_cache(&self) -> NamespaceCache {
        self.namespaces.clone()
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Reads one object.
    pub async fn get(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = info.key(ns, name);
        match self.store.get(&key).await.map_err(|e| store_err(e, info, name))? {
            Some(kv) => object::decode(&kv),
            None => Err(not_found(info, name)),
        }
    }

    /// Creates an object from a client body.
    #[instrument(level = "debug", skip(self, body, opts), fields(kind = info.kind, ns = ns))]
    pub async fn create(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        body: Value,
        opts: WriteOptions,
    ) -> Result<Written, ApiError> {
        let (mut obj, warnings) = decode_body(info, ns, body, opts.field_validation)?;
        let generate_name = meta_str(&obj, "generateName").map(str::to_string);
        if object::name(&obj).is_empty() && generate_name.is_none() {
            return Err(ApiError::Invalid {
                kind: info.qualified_kind(),
                name: String::new(),
                causes: vec![validation::FieldCause::required("metadata.name", "name or generateName is required")],
            });
        }
        // Before the static defaults, which would otherwise add these with 300 s.
        if info.kind == "Pod" {
            strategy::add_default_tolerations(&mut obj, self.default_toleration_seconds);
        }
        defaults::apply_defaults(info.kind, &mut obj);
        crate::controllers::volume::admission::default_storage_class(&self.store, info.kind, &mut obj).await?;
        // The uid first: a strategy may build on it (a Job's generated selector).
        let meta = meta_mut(&mut obj);
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(object::now()));
        meta.remove("resourceVersion");
        strategy::prepare_for_create(info, &mut obj);
        if info.namespaced {
            let shown = match object::name(&obj) {
                "" => generate_name.as_deref().unwrap_or_default(),
                n => n,
            };
            self.admit_namespace(info, ns.unwrap_or_default(), shown).await?;
        }

        for _ in 0..MAX_RETRIES {
            if let Some(prefix) = &generate_name
                && (object::name(&obj).is_empty() || meta_str(&obj, "generateName").is_some())
            {
                let generated = format!("{prefix}{}", object::random_suffix());
                meta_mut(&mut obj).insert("name".into(), json!(generated));
            }
            let causes = validation::validate(info.kind, &obj, None);
            if !causes.is_empty() {
                return Err(invalid(info, &obj, causes));
            }
            let name = object::name(&obj).to_string();
            if opts.dry_run {
                let rev = self.store.current_revision().await?;
                object::set_resource_version(&mut obj, rev);
                return Ok(Written { object: obj, warnings });
            }
            let key = info.key(ns, &name);
            let reserved = match info.kind {
                "Service" => Some(self.services.assign(&mut obj, None).await?),
                _ => None,
            };
            let created = self.store.create(&key, object::encode(&obj)?).await;
            if let (Err(_), Some(reserved)) = (&created, reserved) {
                self.services.release(reserved).await;
            }
            match created {
                Ok(kv) => {
                    object::set_resource_version(&mut obj, kv.mod_revision);
                    return Ok(Written { object: obj, warnings });
                }
                // A generated name collided: draw another.
                Err(StoreError::AlreadyExists(_))
                    if generate_name.is_some() && meta_str(&obj, "generateName").is_some() => {}
                Err(e) => return Err(store_err(e, info, &name)),
            }
        }
        Err(ApiError::Internal("could not generate a unique name".into()))
    }

    /// Replaces an object (or one of its `status`/`finalize` subresources) with a client body.
    #[instrument(level = "debug", skip(self, body, opts), fields(kind = info.kind, ns = ns, name = name))]
    pub async fn update(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        body: Value,
        opts: WriteOptions,
    ) -> Result<Written, ApiError> {
        let (new, warnings) = decode_body(info, ns, body, opts.field_validation)?;
        if object::name(&new) != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object::name(&new)
            )));
        }
        let precondition: Option<Revision> = match meta_str(&new, "resourceVersion") {
            None | Some("") => None,
            Some(rv) => Some(parse_rv(rv)?),
        };
        let mut written =
            self.update_with(info, ns, name, subresource, opts, precondition, |_old| Ok(new.clone())).await?;
        written.warnings.extend(warnings);
        Ok(written)
    }

    /// Read-modify-write of one object: `mutate` turns the current object into the desired
    /// one (already decoded). With `precondition` the write only succeeds at that revision;
    /// without, a lost race re-reads and re-applies `mutate`.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_with<F>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        opts: WriteOptions,
        precondition: Option<Revision>,
        mut mutate: F,
    ) -> Result<Written, ApiError>
    where
        F: FnMut(&Value) -> Result<Value, ApiError> + Send,
    {
        let key = info.key(ns, name);
        for _ in 0..MAX_RETRIES {
            let kv = self.existing(&key, info, name).await?;
            let old = object::decode(&kv)?;
            if let Some(rv) = precondition
                && rv != kv.mod_revision
            {
                return Err(conflict(info, name));
            }
            let mut new = mutate(&old)?;
            if let Some(uid) = meta_str(&new, "uid")
                && !uid.is_empty()
                && Some(uid) != meta_str(&old, "uid")
            {
                return Err(ApiError::Conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or("")
                )));
            }
            defaults::apply_defaults(info.kind, &mut new);
            strategy::prepare_for_update(info, subresource, &mut new, &old);
            let service_spec = info.kind == "Service" && subresource.is_none();
            if service_spec {
                service_alloc::carry_over(&mut new, &old);
            }
            // A binding is the one write that may set spec.nodeName, which the pod update
            // rules forbid: it is validated as an object, not as an update.
            let old_for_rules = if subresource == Some("binding") { None } else { Some(&old) };
            let causes = validation::validate(info.kind, &new, old_for_rules);
            if !causes.is_empty() {
                return Err(invalid(info, &new, causes));
            }
            object::set_resource_version(&mut new, kv.mod_revision);
            // Nothing changed: no write, no new revision (as Kubernetes does).
            if new == old {
                return Ok(Written { object: old, warnings: vec![] });
            }
            // The last finalizer of an object being deleted is gone: the delete completes.
            if deletion_complete(info, &new) {
                if opts.dry_run {
                    return Ok(Written { object: new, warnings: vec![] });
                }
                match self.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => return Ok(Written { object: new, warnings: vec![] }),
                    Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                    Err(e) => return Err(store_err(e, info, name)),
                }
            }
            if opts.dry_run {
                return Ok(Written { object: new, warnings: vec![] });
            }
            let reserved = if service_spec { Some(self.services.assign(&mut new, Some(&old)).await?) } else { None };
            let updated = self.store.update(&key, object::encode(&new)?, kv.mod_revision).await;
            if let (Err(_), Some(reserved)) = (&updated, reserved) {
                self.services.release(reserved).await;
            }
            match updated {
                Ok(kv) => {
                    object::set_resource_version(&mut new, kv.mod_revision);
                    return Ok(Written { object: new, warnings: vec![] });
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(store_err(e, info, name)),
            }
        }
        Err(conflict(info, name))
    }

    /// Deletes an object, honouring preconditions, graceful pod deletion and finalizers.
    #[instrument(level = "debug", skip(self, opts), fields(kind = info.kind, ns = ns, name = name))]
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        if info.kind == "Namespace" && SYSTEM_NAMESPACES.contains(&name) {
            return Err(ApiError::Forbidden(format!(
                "{} \"{name}\" is forbidden: this namespace may not be deleted",
                info.resource_name()
            )));
        }
        let key = info.key(ns, name);
        for _ in 0..MAX_RETRIES {
            let kv = self.existing(&key, info, name).await?;
            let mut obj = object::decode(&kv)?;
            if let Some(uid) = &opts.precondition_uid
                && Some(uid.as_str()) != meta_str(&obj, "uid")
            {
                return Err(ApiError::Conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&obj, "uid").unwrap_or("")
                )));
            }
            if let Some(rv) = &opts.precondition_resource_version
                && parse_rv(rv)? != kv.mod_revision
            {
                return Err(ApiError::Conflict(format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    kv.mod_revision
                )));
            }
            let finalizers = gc_finalizers(info, object::finalizers(&obj), opts.propagation_policy.as_deref())?;
            let already_terminating = meta_str(&obj, "deletionTimestamp").is_some();
            if info.kind == "Namespace" {
                // Namespaces are emptied by the namespace controller first; it finalizes them.
                if already_terminating && !deletion_complete(info, &obj) {
                    return Err(ApiError::Conflict(format!(
                        "Operation cannot be fulfilled on namespaces \"{name}\": The system is ensuring all content \
                         is removed from this namespace.  Upon completion, this namespace will automatically be \
                         purged by the system."
                    )));
                }
                if !already_terminating {
                    let mut spec_finalizers = namespace_finalizers(&obj);
                    push_unique(&mut spec_finalizers, "kubernetes");
                    obj["spec"]["finalizers"] = json!(spec_finalizers);
                    obj["status"]["phase"] = json!("Terminating");
                }
            }
            let grace = self.grace_period(info, &obj, opts);
            let graceful = grace > 0 && !already_terminating;
            if finalizers.is_empty() && !graceful && (info.kind != "Namespace" || already_terminating) {
                if opts.dry_run {
                    return Ok(Deleted { object: obj, gone: true });
                }
                match self.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => return Ok(Deleted { object: obj, gone: true }),
                    Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(store_err(e, info, name)),
                }
            }
            // Graceful deletion or pending finalizers: mark the object and let its owner
            // (the node agent, a controller) finish the job.
            let meta = meta_mut(&mut obj);
            if !already_terminating {
                meta.insert("deletionTimestamp".into(), json!(object::now_plus(grace)));
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            } else if graceful
                || opts.grace_period_seconds.is_some_and(|g| {
                    g < meta.get("deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(i64::MAX)
                })
            {
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            if finalizers.is_empty() {
                meta.remove("finalizers");
            } else {
                meta.insert("finalizers".into(), json!(finalizers));
            }
            if opts.dry_run {
                return Ok(Deleted { object: obj, gone: false });
            }
            match self.store.update(&key, object::encode(&obj)?, kv.mod_revision).await {
                Ok(kv) => {
                    object::set_resource_version(&mut obj, kv.mod_revision);
                    return Ok(Deleted { object: obj, gone: false });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e, info, name)),
            }
        }
        Err(conflict(info, name))
    }

    /// Pods bound to a node get a grace period (their agent stops them, then deletes with 0);
    /// everything else is deleted at once.
    fn grace_period(&self, info: &ResourceInfo, obj: &Value, opts: &DeleteOptions) -> i64 {
        if info.kind != "Pod" {
            return 0;
        }
        let bound =
            obj.get("spec").and_then(|s| s.get("nodeName")).and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let phase = obj.get("status").and_then(|s| s.get("phase")).and_then(Value::as_str).unwrap_or("");
        if !bound || matches!(phase, "Succeeded" | "Failed") {
            return 0;
        }
        opts.grace_period_seconds
            .or_else(|| obj.get("spec")?.get("terminationGracePeriodSeconds")?.as_i64())
            .unwrap_or(30)
            .max(0)
    }

    /// Namespace lifecycle admission: a namespaced object needs its namespace to exist and
    /// not be terminating.
    async fn admit_namespace(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<(), ApiError> {
        let terminating = match self.namespaces.lookup(ns) {
            Some(terminating) => terminating,
            None => {
                let ns_info = super::catalog::find("", "v1", "namespaces").ok_or(ApiError::NoRoute)?;
                meta_str(&self.get(ns_info, None, ns).await?, "deletionTimestamp").is_some()
            }
        };
        if terminating {
            return Err(ApiError::Forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being \
                 terminated",
                info.resource_name()
            )));
        }
        Ok(())
    }
}

/// Namespaces that exist from the start and may never be deleted (NamespaceLifecycle).
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The garbage collector's finalizers an object gets from a delete with `policy`, as the Go
/// API server computes them: an explicit policy replaces `orphan` / `foregroundDeletion`;
/// without one, finalizers already there stand, else the kind's default applies (Orphan for
/// batch/v1 Jobs, kept for backward compatibility; Background for everything else).
fn gc_finalizers(info: &ResourceInfo, existing: Vec<String>, policy: Option<&str>) -> Result<Vec<String>, ApiError> {
    const GC: [&str; 2] = ["orphan", "foregroundDeletion"];
    let has_gc = existing.iter().any(|f| GC.contains(&f.as_str()));
    let policy = match policy {
        Some(p) => p,
        None if has_gc => return Ok(existing),
        None if info.group == "batch" && info.kind == "Job" => "Orphan",
        None => "Background",
    };
    let mut out: Vec<String> = existing.into_iter().filter(|f| !GC.contains(&f.as_str())).collect();
    match policy {
        "Background" => {}
        "Foreground" => out.push("foregroundDeletion".into()),
        "Orphan" => out.push("orphan".into()),
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid propagationPolicy {other:?}: must be one of Foreground, Background, Orphan"
            )));
        }
    }
    Ok(out)
}

/// `spec.finalizers` of a namespace.
fn namespace_finalizers(obj: &Value) -> Vec<String> {
    obj.get("spec")
        .and_then(|s| s.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Whether an object being deleted may now leave the store: no finalizers left, no grace
/// period still running (a pod's node confirms with a delete of its own), and for a
/// namespace no `spec.finalizers` either (Kubernetes' `ShouldDeleteDuringUpdate`).
fn deletion_complete(info: &ResourceInfo, obj: &Value) -> bool {
    let grace = obj.get("metadata").and_then(|m| m.get("deletionGracePeriodSeconds")).and_then(Value::as_i64);
    meta_str(obj, "deletionTimestamp").is_some()
        && object::finalizers(obj).is_empty()
        && grace.unwrap_or(0) == 0
        && (info.kind != "Namespace" || namespace_finalizers(obj).is_empty())
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// Checks `apiVersion`/`kind` and the namespace against the URL, decodes through the typed
/// object, and applies the field-validation directive to unknown fields.
pub fn decode_body(
    info: &ResourceInfo,
    ns: Option<&str>,
    mut body: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let api_version = info.api_version();
    match body.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => body["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match body.get("kind").and_then(Value::as_str) {
        None | Some("") => body["kind"] = json!(info.kind),
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) for this URL",
                info.kind
            )));
        }
    }
    if info.namespaced {
        let url_ns = ns.unwrap_or_default();
        match meta_str(&body, "namespace") {
            None | Some("") => {
                meta_mut(&mut body).insert("namespace".into(), json!(url_ns));
            }
            Some(n) if n == url_ns => {}
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
        }
    } else if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("namespace");
    }
    let decoded = info.codec.decode(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            info.kind, info.version, info.kind
        ))
    })?;
    let unknown: Vec<String> =
        decoded.unknown_fields.iter().map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.'))).collect();
    match fv {
        FieldValidation::Strict if !unknown.is_empty() => Err(ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            info.kind,
            info.version,
            info.kind,
            unknown.join(", ")
        ))),
        FieldValidation::Warn => Ok((decoded.value, unknown)),
        _ => Ok((decoded.value, vec![])),
    }
}

fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))
}

pub fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::NotFound { resource: info.resource_name(), name: name.into() }
}

fn conflict(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::from_store(
        StoreError::Conflict { key: String::new(), expected: 0, actual: 0 },
        &info.resource_name(),
        name,
    )
}

pub fn store_err(e: StoreError, info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::from_store(e, &info.resource_name(), name)
}

fn invalid(info: &ResourceInfo, obj: &Value, causes: Vec<validation::FieldCause>) -> ApiError {
    ApiError::Invalid { kind: info.qualified_kind(), name: object::name(obj).into(), causes }
}
