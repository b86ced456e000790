//! UDP Service ports through the node agent's service proxy, for real (issue 6): `skiff up
//! --pod-network bridge` inside a network namespace this test creates (so cluster IPs are
//! local addresses there and nothing touches the machine's network).
//!
//! Two UDP echo servers run inside the namespace on 192.0.2.10:9000 and 192.0.2.11:9000
//! (TEST-NET addresses added to its `lo`), each answering with its own name; selector-less
//! Services with manual Endpoints name them, as users front an outside UDP service. Checked:
//! new clients are spread round robin over both, every datagram of one client goes to the same
//! backend (a flow, as conntrack keeps), replies come from the cluster IP (the clients'
//! sockets are connected to it, so nothing else would arrive); `sessionAffinity: ClientIP`
//! puts every socket of one client IP on one backend; a backend removed from the Endpoints gets
//! no more datagrams, its clients move on; with no endpoint left, a datagram is refused
//! (ICMP port unreachable, `ECONNREFUSED`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use skiff_tests::{Inside, NetNs, Skiff, StartOptions, StoreKind, wait_until};
use tokio::net::UdpSocket;

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json};

/// The echo servers: name and address.
const BACKENDS: [(&str, &str); 2] = [("a", "192.0.2.10:9000"), ("b", "192.0.2.11:9000")];

/// Starts an echo server inside the namespace on `addr` answering `name:<datagram>`.
async fn echo(inside: &Inside, name: &'static str, addr: &str) -> Result<tokio::task::JoinHandle<()>> {
    let addr: SocketAddr = addr.parse()?;
    let socket = inside.call(move || std::net::UdpSocket::bind(addr)).await?.with_context(|| format!("bind {addr}"))?;
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    Ok(tokio::spawn(async move {
        let mut buf = [0; 1500];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let reply = [name.as_bytes(), b":", &buf[..len]].concat();
            let _ = socket.send_to(&reply, peer).await;
        }
    }))
}

/// A client socket inside the namespace, connected to `to`.
async fn client(inside: &Inside, to: SocketAddr) -> Result<UdpSocket> {
    let socket = inside
        .call(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            socket.connect(to)?;
            socket.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(socket)
        })
        .await??;
    Ok(UdpSocket::from_std(socket)?)
}

/// Sends `what`, returns the name of the backend that answered (`Err` with the I/O error kind
/// on a refusal or no answer in 2 s).
async fn ask(socket: &UdpSocket, what: &str) -> std::io::Result<String> {
    socket.send(what.as_bytes()).await?;
    let mut buf = [0; 1500];
    let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    let answer = String::from_utf8_lossy(&buf[..len]).into_owned();
    let (name, echoed) = answer.split_once(':').unwrap_or_default();
    if echoed != what {
        return Err(std::io::Error::other(format!("answer {answer:?} to {what:?}")));
    }
    Ok(name.to_owned())
}

/// A selector-less UDP Service `name` on port 53 with manual Endpoints `ips` (port 9000).
fn service(name: &str, extra: &str, ips: &[&str]) -> String {
    let addresses: Vec<String> = ips.iter().map(|ip| format!("{{ip: \"{ip}\"}}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{name: echo, port: 53, \
         protocol: UDP}}]\n{extra}---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}}}\nsubsets:\n\
         - addresses: [{}]\n  ports: [{{name: echo, port: 9000, protocol: UDP}}]\n",
        addresses.join(", ")
    )
}

async fn cluster_ip(skiff: &Skiff, name: &str) -> Result<SocketAddr> {
    let svc = get_json(skiff, &["service", name]).await?;
    let ip = svc["spec"]["clusterIP"].as_str().context("no clusterIP")?;
    Ok(SocketAddr::new(ip.parse()?, 53))
}

/// Waits until a fresh client gets an answer through `to`.
async fn answering(skiff: &Skiff, inside: &Inside, to: SocketAddr) -> Result<()> {
    wait_until(&format!("{to}/UDP to answer"), POD_TIMEOUT, POLL, || async {
        Ok(ask(&client(inside, to).await?, "hello").await.ok().map(|_| ()))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_service_ports_relay_datagrams_per_client_flow() -> Result<()> {
    let netns = NetNs::create()?;
    for (_, addr) in BACKENDS {
        let ip = addr.split(':').next().context("ip")?;
        netns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"])?;
    }
    let inside = Inside::new(netns.name())?;
    let _echo_a = echo(&inside, BACKENDS[0].0, BACKENDS[0].1).await?;
    let _echo_b = echo(&inside, BACKENDS[1].0, BACKENDS[1].1).await?;
    let mut options = StartOptions::new(StoreKind::Embedded);
    options.netns = Some(netns.name().to_string());
    options.extra_args = vec!["--pod-network".into(), "bridge".into()];
    let mut skiff = Skiff::start_with(options).await?;

    skiff.apply(&service("echo", "", &["192.0.2.10", "192.0.2.11"])).await?;
    skiff.apply(&service("sticky", "  sessionAffinity: ClientIP\n", &["192.0.2.10", "192.0.2.11"])).await?;
    let echo_ip = cluster_ip(&skiff, "echo").await?;
    let sticky_ip = cluster_ip(&skiff, "sticky").await?;
    answering(&skiff, &inside, echo_ip).await?;
    answering(&skiff, &inside, sticky_ip).await?;

    // New clients rotate over both backends; each keeps its backend for all its datagrams.
    let mut clients = Vec::new();
    let mut seen = BTreeSet::new();
    for i in 0..6 {
        let socket = client(&inside, echo_ip).await?;
        let first = ask(&socket, &format!("c{i}-0")).await.with_context(|| format!("client {i}"))?;
        for j in 1..4 {
            let again = ask(&socket, &format!("c{i}-{j}")).await?;
            ensure!(again == first, "client {i} went to {again} after {first}: a flow keeps its backend");
        }
        seen.insert(first.clone());
        clients.push((socket, first));
    }
    ensure!(seen.len() == 2, "six new clients reached only {seen:?}");

    // ClientIP affinity: every socket of this client IP lands on one backend.
    let mut sticky = BTreeSet::new();
    for i in 0..6 {
        sticky.insert(ask(&client(&inside, sticky_ip).await?, &format!("s{i}")).await?);
    }
    ensure!(sticky.len() == 1, "with ClientIP affinity one client IP reached {sticky:?}");

    // Backend `a` leaves the Service: its clients' next datagrams go to `b`, nobody reaches `a`.
    skiff.apply(&service("echo", "", &["192.0.2.11"])).await?;
    wait_until("the removed backend to get no more datagrams", POD_TIMEOUT, POLL, || async {
        let mut names = BTreeSet::new();
        for i in 0..4 {
            // A fresh client each time: a new flow, so the balancer picks again.
            let fresh = client(&inside, echo_ip).await?;
            names.insert(ask(&fresh, &format!("probe{i}")).await.unwrap_or_else(|e| e.to_string()));
        }
        Ok((names.len() == 1 && names.contains("b")).then_some(()))
    })
    .await?;
    for (i, (socket, was)) in clients.iter().enumerate() {
        let now = ask(socket, &format!("c{i}-after")).await.with_context(|| format!("client {i} after the change"))?;
        ensure!(now == "b", "client {i} (on {was}) reached {now} after `a` left the Service");
    }

    // No endpoint left: the frontend stops listening and a datagram is refused.
    skiff.kubectl(&["delete", "endpoints", "echo"]).await?;
    wait_until("a datagram to be refused", POD_TIMEOUT, POLL, || async {
        let fresh = client(&inside, echo_ip).await?;
        // Until the proxy sees the deletion `b` may still answer.
        let answer = ask(&fresh, "gone").await;
        Ok(answer.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused).then_some(()))
    })
    .await?;
    skiff.stop().await?;
    Ok(())
}
