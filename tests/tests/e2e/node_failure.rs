//! Node failure, end to end: `skiff server` with a 3 s node grace period and 3 s default
//! unreachable toleration, two `skiff agent`s, and a Deployment of WASM pods spread over
//! them. SIGKILL one agent: its Node goes Ready=Unknown with the unreachable taint, its pods
//! are deleted after the toleration and replaced on the other node; restarted, the agent's
//! taints go and it runs none of the pods that were deleted meanwhile.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::Value;
use skiff_tests::{Agent, AgentOptions, Skiff, StartOptions, StoreKind, wait_until};

use crate::{get_json, pod_is_ready, push_guest};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

pub fn deployment(name: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    \
         matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      \
         containers:\n      - name: app\n        image: {image}\n        ports:\n        - containerPort: 8080\n"
    )
}

/// The pods of `app`, not terminating.
pub async fn app_pods(skiff: &Skiff, app: &str) -> Result<Vec<Value>> {
    let list = get_json(skiff, &["pods", "-l", &format!("app={app}")]).await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    Ok(items.into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect())
}

pub fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

fn taints(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| format!("{}:{}", t["key"].as_str().unwrap_or(""), t["effect"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

/// `name node phase ready deleting` per pod, for failure messages.
pub fn summary(list: &Value) -> String {
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let line = |p: &Value| {
        format!(
            "{} on {} {} ready={} deleting={}",
            p["metadata"]["name"].as_str().unwrap_or(""),
            node_of(p),
            p["status"]["phase"].as_str().unwrap_or(""),
            pod_is_ready(p),
            !p["metadata"]["deletionTimestamp"].is_null()
        )
    };
    items.iter().map(line).collect::<Vec<_>>().join("; ")
}

fn ready_status(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_pods_move_and_the_returning_agent_is_clean() -> Result<()> {
    let mut options = StartOptions::control_plane_only(StoreKind::Embedded);
    options.extra_args = ["--node-monitor-grace-period", "3", "--default-unreachable-toleration-seconds", "3"]
        .map(String::from)
        .to_vec();
    let skiff = Skiff::start_with(options).await?;
    // Renew the lease every second: well inside the 3 s grace period.
    let fast = AgentOptions { extra_args: vec!["--node-lease-duration-seconds".into(), "4".into()] };
    let mut a = Agent::start_with(&skiff, "node-a", fast.clone()).await?;
    let _b = Agent::start_with(&skiff, "node-b", fast).await?;
    let image = push_guest(&skiff, "http-probe", "probe:v1").await?;
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&deployment("web", &image, 2))).await?.ok()?;

    let pods = wait_until("2 Ready pods on both nodes", Duration::from_secs(60), POLL, || async {
        let pods = app_pods(&skiff, "web").await?;
        let ready = pods.len() == 2 && pods.iter().all(pod_is_ready);
        let spread = pods.iter().any(|p| node_of(p) == "node-a") && pods.iter().any(|p| node_of(p) == "node-b");
        Ok((ready && spread).then_some(pods))
    })
    .await?;
    let victims: Vec<(String, String)> = pods
        .iter()
        .filter(|p| node_of(p) == "node-a")
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["status"]["podIP"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();

    a.kill();
    let killed = tokio::time::Instant::now();
    let node = wait_until("node-a Unknown and tainted unreachable", Duration::from_secs(15), POLL, || async {
        let node = get_json(&skiff, &["node", "node-a"]).await?;
        let tainted = taints(&node).iter().any(|t| t == "node.kubernetes.io/unreachable:NoExecute");
        Ok((ready_status(&node) == "Unknown" && tainted).then_some(node))
    })
    .await?;
    ensure!(killed.elapsed() < Duration::from_secs(12), "noticed within ~10 s, took {:?}", killed.elapsed());
    ensure!(
        taints(&node).iter().any(|t| t == "node.kubernetes.io/unreachable:NoSchedule"),
        "NoSchedule variant too: {:?}",
        taints(&node)
    );

    wait_until("the victims gone and 2 Ready pods on node-b", STEP_TIMEOUT, POLL, || async {
        let all = get_json(&skiff, &["pods", "-l", "app=web"]).await?;
        let names: Vec<&str> =
            all["items"].as_array().into_iter().flatten().filter_map(|p| p["metadata"]["name"].as_str()).collect();
        let gone = victims.iter().all(|(v, _)| !names.contains(&v.as_str()));
        let pods = app_pods(&skiff, "web").await?;
        let moved = pods.len() == 2 && pods.iter().all(|p| pod_is_ready(p) && node_of(p) == "node-b");
        ensure!(gone && moved, "pods now: {}", summary(&all));
        Ok(Some(()))
    })
    .await?;
    let events = skiff
        .kubectl(&["get", "events", "--field-selector", "reason=TaintManagerEviction", "-o", "json"])
        .await?
        .json()?;
    ensure!(events["items"].as_array().is_some_and(|e| !e.is_empty()), "TaintManagerEviction events: {events}");

    a.restart(&skiff).await?;
    wait_until("node-a's taints removed", STEP_TIMEOUT, POLL, || async {
        let node = get_json(&skiff, &["node", "node-a"]).await?;
        Ok((ready_status(&node) == "True" && taints(&node).is_empty()).then_some(()))
    })
    .await?;
    // Nothing is bound to node-a any more, and the agent brought none of its old pods back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let on_a = get_json(&skiff, &["pods", "-A", "--field-selector", "spec.nodeName=node-a"]).await?;
    ensure!(on_a["items"].as_array().is_some_and(Vec::is_empty), "pods on node-a after its return: {on_a}");
    for (name, ip) in &victims {
        let refused = tokio::net::TcpStream::connect((ip.as_str(), 8080)).await.is_err();
        ensure!(refused, "old pod {name} at {ip}:8080 still answers: a stray pod runs on node-a");
    }
    ensure!(app_pods(&skiff, "web").await?.iter().all(|p| node_of(p) == "node-b"), "no pod moved back");
    Ok(())
}
