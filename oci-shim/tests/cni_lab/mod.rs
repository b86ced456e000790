//! A throw-away "node" for the CNI tests: an outer network namespace standing in for the host
//! (the bridge, veths and iptables rules live there, never in the machine's root namespace),
//! pod namespaces, and helpers to run commands or Rust code inside them. Everything is
//! unmounted when the lab is dropped — also when a test fails — and the kernel then destroys
//! the namespaces with every interface and rule in them.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::mount::{UnmountFlags, unmount};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use skiff_oci_shim::network::{Cni, CniConfig, Netns};

/// The node's address in the outer namespace (on its `lo`): what hostPorts are reached on.
pub const NODE_IP: &str = "192.168.77.2";
/// The pod subnet of the tests.
pub const SUBNET: &str = "10.244.77.0/24";

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub outer: Netns,
    pods: Vec<Netns>,
}

impl Lab {
    /// A fresh outer namespace with `lo` up and [`NODE_IP`] on it.
    pub async fn new(tag: &str) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!("skiff-node-{}-{tag}", std::process::id());
        let outer = Netns::create(&dir.path().join("netns"), &name).await.expect("outer netns (needs root)");
        let lab = Lab { dir, outer, pods: Vec::new() };
        lab.sh(lab.outer.path(), &["ip", "link", "set", "lo", "up"]).await;
        lab.sh(lab.outer.path(), &["ip", "addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]).await;
        lab
    }

    /// CNI configured to run the plugins inside the outer namespace.
    pub fn cni(&self) -> Cni {
        let mut config = CniConfig::new(SUBNET.parse().expect("subnet"), self.dir.path().join("cni-cache"));
        config.host_netns = Some(self.outer.path().to_path_buf());
        config.timeout = Duration::from_secs(30);
        Cni::new(config)
    }

    /// A new pod namespace, removed with the lab.
    pub async fn pod_netns(&mut self, name: &str) -> Netns {
        let ns = Netns::create(&self.dir.path().join("netns"), name).await.expect("pod netns");
        self.pods.push(ns.clone());
        ns
    }

    /// Runs `args` inside `netns`; its stdout; panics (with stderr) on failure.
    pub async fn sh(&self, netns: &Path, args: &[&str]) -> String {
        let out = self.try_sh(netns, args).await;
        match out {
            Ok(stdout) => stdout,
            Err(e) => panic!("`{}` in {}: {e}", args.join(" "), netns.display()),
        }
    }

    /// Runs `args` inside `netns`; stdout, or stderr as the error.
    pub async fn try_sh(&self, netns: &Path, args: &[&str]) -> Result<String, String> {
        let run = tokio::process::Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .args(args)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .map_err(|_| "timed out after 20s".to_string())?
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain([&self.outer]) {
            // DETACH: nothing must keep the namespaces (and the veths, bridge and iptables
            // rules inside) alive after the test.
            let _ = unmount(ns.path(), UnmountFlags::DETACH);
        }
    }
}

/// Runs `f` on a new thread that has joined `netns` (only that thread moves).
pub async fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = netns.to_path_buf();
    let thread = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).expect("setns");
        f()
    });
    tokio::task::spawn_blocking(move || thread.join().expect("netns thread panicked")).await.expect("join")
}

/// A TCP server inside `netns` on `0.0.0.0:port` that answers `reply` to each of `count`
/// connections, then stops (or gives up after 30 s). Returns once it listens.
pub async fn serve(netns: &Path, port: u16, reply: &'static str, count: usize) -> std::thread::JoinHandle<usize> {
    let path: PathBuf = netns.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).expect("setns");
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind in pod");
        listener.set_nonblocking(true).expect("nonblocking");
        ready_tx.send(()).expect("ready");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < count && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.write_all(reply.as_bytes());
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        served
    });
    tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("server listening");
    handle
}

/// Connects from inside `netns` to `addr` and reads what the server says.
pub async fn fetch(netns: &Path, addr: SocketAddr) -> std::io::Result<String> {
    in_netns(netns, move || {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = String::new();
        conn.read_to_string(&mut out)?;
        Ok(out)
    })
    .await
}
