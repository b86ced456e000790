//! Which runtime runs a pod, decided once per worker.
//!
//! The rule, in order:
//! 1. the runtime the pod names (`runtimeClassName`, else the `skiff.dev/runtime` annotation or
//!    label) — a name the node does not offer is the pod's error;
//! 2. a node with one runtime runs everything on it;
//! 3. after an agent restart, the runtime that owns the containers the pod's status reports
//!    (`containerStatuses[].containerID`), so re-adoption never depends on a registry;
//! 4. by image kind: the first runtime after the default one that claims one of the pod's
//!    images (init containers included) — the OCI runtime claims container images, and it runs
//!    the pod's WebAssembly containers inside the same sandbox (a mixed pod);
//! 5. otherwise the node's default runtime (WASM, the first).
//!
//! So `kubectl create deployment web --image=registry/busybox` needs no runtime class on a
//! node offering `oci`, and an all-WASM pod keeps the in-process fast path with no sandbox.
//! Classifying may pull an image (the launch then finds it present); a pull that fails here
//! is not the pod's error — the default runtime's launch reports the real reason. What it does
//! not do: steer scheduling (a pod of container images on a WASM-only node gets that node's
//! "container image" error; name the runtime class to constrain placement).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::spec;
use crate::runtime::{ContainerRuntime, PullCredentials, PullPolicy};

/// The runtime for `pod` per the module's rule; `Err` when it names one the node lacks.
pub async fn choose_runtime(
    pod: &Pod,
    runtimes: &[Arc<dyn ContainerRuntime>],
    creds: &PullCredentials,
) -> Result<Arc<dyn ContainerRuntime>, String> {
    if spec::named_runtime(pod).is_some() || runtimes.len() < 2 {
        return spec::runtime_for(pod, runtimes);
    }
    if let Some(owner) = owner_of_reported_containers(pod, runtimes) {
        return Ok(owner);
    }
    // Collected first: nothing borrowed from the pod is held across the pulls below.
    let images: Vec<(String, PullPolicy)> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .filter_map(|c| {
            // Only what the launch would do: `Never` stays local, anything else may fetch.
            let policy = match spec::pull_policy(c) {
                PullPolicy::Never => PullPolicy::Never,
                _ => PullPolicy::IfNotPresent,
            };
            Some((c.image.clone()?, policy))
        })
        .collect();
    for (image, policy) in &images {
        for runtime in &runtimes[1..] {
            if runtime.claims_image(image, *policy, creds).await {
                return Ok(runtime.clone());
            }
        }
    }
    spec::runtime_for(pod, runtimes)
}

/// The runtime whose container ids the pod's status reports (an earlier agent started them).
fn owner_of_reported_containers(
    pod: &Pod,
    runtimes: &[Arc<dyn ContainerRuntime>],
) -> Option<Arc<dyn ContainerRuntime>> {
    let status = pod.status.as_ref()?;
    let statuses = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    let ids: Vec<&str> = statuses.filter_map(|s| s.container_id.as_deref()).collect();
    runtimes.iter().find(|r| ids.iter().any(|id| r.owns_container_id(id))).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerSpec, ImageRef, RunningContainer, RuntimeError};
    use async_trait::async_trait;
    use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec, PodStatus};

    /// A runtime that claims images starting with `prefix` and ids starting with `prefix://`.
    #[derive(Debug)]
    struct Fake {
        name: &'static str,
        prefix: &'static str,
    }

    #[async_trait]
    impl ContainerRuntime for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        async fn pull(&self, image: &str, _: PullPolicy, _: &PullCredentials) -> Result<ImageRef, RuntimeError> {
            Ok(ImageRef { reference: image.into(), image_id: image.into() })
        }
        async fn claims_image(&self, image: &str, _: PullPolicy, _: &PullCredentials) -> bool {
            image.starts_with(self.prefix)
        }
        fn owns_container_id(&self, id: &str) -> bool {
            id.starts_with(&format!("{}://", self.prefix))
        }
        async fn start(&self, _: ContainerSpec) -> Result<Box<dyn RunningContainer>, RuntimeError> {
            Err(RuntimeError::new("NotSupported", "a fake"))
        }
    }

    fn runtimes() -> Vec<Arc<dyn ContainerRuntime>> {
        vec![Arc::new(Fake { name: "wasm", prefix: "wasm" }), Arc::new(Fake { name: "oci", prefix: "oci" })]
    }

    fn pod(init: &[&str], images: &[&str], class: Option<&str>) -> Pod {
        let containers = |images: &[&str]| {
            images
                .iter()
                .map(|i| Container { name: (*i).into(), image: Some((*i).into()), ..Default::default() })
                .collect()
        };
        Pod {
            spec: Some(PodSpec {
                init_containers: Some(containers(init)),
                containers: containers(images),
                runtime_class_name: class.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn chosen(pod: &Pod) -> Result<&'static str, String> {
        choose_runtime(pod, &runtimes(), &PullCredentials::default()).await.map(|r| r.name())
    }

    #[tokio::test]
    async fn all_wasm_images_stay_on_the_default_runtime() {
        assert_eq!(chosen(&pod(&[], &["wasm/a", "wasm/b"], None)).await, Ok("wasm"));
    }

    #[tokio::test]
    async fn one_container_image_anywhere_moves_the_pod() {
        assert_eq!(chosen(&pod(&[], &["wasm/a", "oci/busybox"], None)).await, Ok("oci"));
        assert_eq!(chosen(&pod(&["oci/setup"], &["wasm/a"], None)).await, Ok("oci"));
    }

    #[tokio::test]
    async fn a_named_runtime_wins_and_a_missing_one_is_an_error() {
        assert_eq!(chosen(&pod(&[], &["oci/busybox"], Some("wasm"))).await, Ok("wasm"));
        let error = chosen(&pod(&[], &["wasm/a"], Some("crun"))).await.expect_err("crun is not offered");
        assert!(error.contains("\"crun\" is not offered") && error.contains("wasm, oci"), "{error}");
    }

    #[tokio::test]
    async fn reported_container_ids_keep_the_pod_where_it_ran() {
        let mut p = pod(&[], &["wasm/a"], None);
        p.status = Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "wasm/a".into(),
                container_id: Some("oci://abc".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(chosen(&p).await, Ok("oci"));
    }
}
