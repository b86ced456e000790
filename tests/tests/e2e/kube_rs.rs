//! kube-rs against skiff: typed CRUD through `kube::Api` and a `kube::runtime::watcher`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use skiff_tests::{Skiff, StoreKind, both_stores, wait_until};

use crate::EVENT_TIMEOUT;

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app".into(), "typed".into())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some("registry.example/app:1".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn configmap(name: &str, label: (&str, &str)) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(label.0.into(), label.1.into())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".into(), "v1".into())])),
        ..ConfigMap::default()
    }
}

async fn typed_crud(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    let client = skiff.kube_client().await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods.create(&PostParams::default(), &pod("typed")).await?;
    ensure!(created.uid().is_some() && created.resource_version().is_some());
    let fetched = pods.get("typed").await?;
    ensure!(fetched.uid() == created.uid());
    let listed = pods.list(&ListParams::default().labels("app=typed")).await?;
    ensure!(listed.items.len() == 1, "{} pods listed", listed.items.len());
    let patch = json!({"metadata": {"labels": {"patched": "yes"}}});
    let patched = pods.patch("typed", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    ensure!(patched.labels().get("patched").map(String::as_str) == Some("yes"));
    pods.delete("typed", &DeleteParams::default()).await?;
    // An unscheduled pod is deleted at once, but allow for graceful deletion all the same.
    wait_until("pod deleted", EVENT_TIMEOUT, std::time::Duration::from_millis(200), || {
        let pods = pods.clone();
        async move { Ok(pods.get_opt("typed").await?.is_none().then_some(())) }
    })
    .await?;

    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &configmap("typed", ("app", "typed"))).await?;
    let patch = json!({"data": {"k": "v2"}});
    cms.patch("typed", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let cm = cms.get("typed").await?;
    ensure!(cm.data.as_ref().and_then(|d| d.get("k")).map(String::as_str) == Some("v2"));
    let listed = cms.list(&ListParams::default().labels("app=typed")).await?;
    ensure!(listed.items.len() == 1);
    cms.delete("typed", &DeleteParams::default()).await?;
    ensure!(cms.get_opt("typed").await?.is_none(), "configmap still there");
    Ok(())
}

/// What the watcher test waits for.
#[derive(Debug, PartialEq)]
enum Seen {
    Applied(String, String),
    Deleted(String),
}

async fn runtime_watcher(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    let client = skiff.kube_client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let config = watcher::Config::default().labels("watch=me");
    let mut events = watcher(cms.clone(), config).boxed();

    // Wait for the initial list to finish so later events are live changes.
    loop {
        let event = tokio::time::timeout(EVENT_TIMEOUT, events.try_next())
            .await
            .context("no InitDone")??
            .context("watch ended")?;
        if matches!(event, watcher::Event::InitDone) {
            break;
        }
    }

    let mut next = async || -> Result<Seen> {
        loop {
            let event = tokio::time::timeout(EVENT_TIMEOUT, events.try_next())
                .await
                .context("no watch event in time")??
                .context("watch ended")?;
            let value = |cm: &ConfigMap| cm.data.as_ref().and_then(|d| d.get("k")).cloned().unwrap_or_default();
            match event {
                watcher::Event::Apply(cm) => return Ok(Seen::Applied(cm.name_any(), value(&cm))),
                watcher::Event::Delete(cm) => return Ok(Seen::Deleted(cm.name_any())),
                // A relist (e.g. after a dropped watch) is allowed; keep waiting.
                watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {}
            }
        }
    };

    cms.create(&PostParams::default(), &configmap("watched", ("watch", "me"))).await?;
    // An unrelated object must not show up through the label selector.
    cms.create(&PostParams::default(), &configmap("ignored", ("watch", "not-me"))).await?;
    let seen = next().await?;
    ensure!(seen == Seen::Applied("watched".into(), "v1".into()), "added: {seen:?}");

    let patch = json!({"data": {"k": "v2"}});
    cms.patch("watched", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let seen = next().await?;
    ensure!(seen == Seen::Applied("watched".into(), "v2".into()), "modified: {seen:?}");

    cms.delete("watched", &DeleteParams::default()).await?;
    match next().await? {
        Seen::Deleted(name) if name == "watched" => Ok(()),
        other => bail!("expected deletion, saw {other:?}"),
    }
}

both_stores!(typed_crud, runtime_watcher);
