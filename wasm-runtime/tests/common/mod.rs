//! Helpers shared by this crate's integration tests.
#![allow(dead_code, reason = "each test binary uses its part of the shared helpers")]

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};

use skiff_wasm_runtime::{ClusterAnswer, ClusterNames};

/// A fixed "cluster" of `cluster.local`: fully qualified names and their addresses (the
/// cluster cache's interface; the guests, servers and connections of the tests are real).
#[derive(Debug)]
pub struct StaticNames(pub HashMap<&'static str, Vec<IpAddr>>);

impl StaticNames {
    pub fn new(names: &[(&'static str, &[&str])]) -> StaticNames {
        let parse = |ips: &[&str]| ips.iter().map(|ip| ip.parse().expect("ip")).collect();
        StaticNames(names.iter().map(|(name, ips)| (*name, parse(ips))).collect())
    }
}

impl ClusterNames for StaticNames {
    fn zone(&self) -> &str {
        "cluster.local"
    }
    fn lookup(&self, fqdn: &str) -> ClusterAnswer {
        self.0.get(fqdn).map_or(ClusterAnswer::NoAddresses, |ips| ClusterAnswer::Addresses(ips.clone()))
    }
}

/// Where build-guests.sh puts the guests (same rule as `skiff_tests::guests::guest_path`,
/// repeated here so this crate's tests do not depend on the e2e harness).
pub fn guest_bytes(name: &str) -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"), PathBuf::from);
    let dir = target.join("guests/wasm32-wasip2/release");
    for candidate in [name.to_owned(), name.replace('-', "_")] {
        if let Ok(bytes) = std::fs::read(dir.join(format!("{candidate}.wasm"))) {
            return bytes;
        }
    }
    panic!("guest {name} not found in {}: run scripts/build-guests.sh first", dir.display());
}

/// GET `http://{addr}{path}` (30 s timeout): status and body.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    let url = format!("http://{addr}{path}");
    let resp = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    Ok((resp.status().as_u16(), resp.text().await?))
}
