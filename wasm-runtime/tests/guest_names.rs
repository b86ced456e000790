//! Cluster names in a real guest (`dns-probe`, built by `scripts/build-guests.sh`): with a
//! [`NameResolver`], the guest's `wasi:sockets` name lookups and outgoing `wasi:http` requests
//! reach cluster names; other names, and every name of a guest without one, still go to the
//! host's resolver through wasmtime-wasi's own implementation (`localhost`).
//!
//! The "cluster" is a fixture mapping `hello.default.svc.cluster.local` to `127.0.0.77`, where
//! an `http-probe` guest serves, so the fetch needs no network beyond loopback.

mod common;
use anyhow::Result;
use common::{StaticNames, guest_bytes};
use skiff_wasm_runtime::{
    DiscardOutput, GuestConfig, HttpOptions, HttpServer, NameResolver, RuntimeConfig, WasmRuntime,
};
use std::sync::Arc;
use std::time::Duration;

fn guest(resolver: Option<NameResolver>) -> GuestConfig {
    GuestConfig {
        args: Vec::new(),
        env: Vec::new(),
        preopens: Vec::new(),
        memory_limit: None,
        output: Arc::new(DiscardOutput),
        netns: None,
        resolver,
    }
}

async fn serve(rt: &WasmRuntime, name: &str, listen: &str, resolver: Option<NameResolver>) -> Result<HttpServer> {
    let artifact = rt.load(&format!("test:{name}"), &guest_bytes(name))?;
    let opts = HttpOptions { listen: listen.parse()?, max_concurrency: 16, request_timeout: Duration::from_secs(20) };
    Ok(rt.serve_http(&artifact, guest(resolver), opts).await?)
}

async fn get(server: &HttpServer, path: &str) -> Result<(u16, String)> {
    common::get(server.local_addr(), path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_resolve_and_fetch_cluster_names_and_keep_host_resolution() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rt = WasmRuntime::new(RuntimeConfig {
        cache_dir: dir.path().to_owned(),
        max_instances: 32,
        ..RuntimeConfig::default()
    })?;
    let hello = serve(&rt, "http-probe", "127.0.0.77:0", None).await?;
    let port = hello.local_addr().port();
    let resolver = NameResolver::cluster_first(
        Arc::new(StaticNames::new(&[("hello.default.svc.cluster.local", &["127.0.0.77"])])),
        "default",
    );
    let probe = serve(&rt, "dns-probe", "127.0.0.1:0", Some(resolver)).await?;

    for name in ["hello", "hello.default", "hello.default.svc.cluster.local"] {
        assert_eq!(get(&probe, &format!("/resolve?name={name}")).await?, (200, "127.0.0.77\n".to_owned()), "{name}");
    }
    let (status, body) = get(&probe, "/resolve?name=nothere.default.svc.cluster.local").await?;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("name-unresolvable"), "{body}");
    // Not a cluster name: wasmtime-wasi's host lookup, wrapped.
    let (status, body) = get(&probe, "/resolve?name=localhost").await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.lines().any(|l| l == "127.0.0.1" || l == "::1"), "localhost resolved to {body:?}");
    // Outgoing wasi:http to the short name, on the Service's (here: the fixture's) address.
    assert_eq!(get(&probe, &format!("/fetch?url=http://hello:{port}/")).await?, (200, "200\nok".to_owned()));
    let (status, body) = get(&probe, "/fetch?url=http://nothere.default.svc.cluster.local/").await?;
    assert_eq!(status, 502, "{body}");

    // Without a resolver the host's resolver answers, as before.
    let plain = serve(&rt, "dns-probe", "127.0.0.1:0", None).await?;
    let (status, body) = get(&plain, "/resolve?name=localhost").await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.lines().any(|l| l == "127.0.0.1" || l == "::1"), "localhost resolved to {body:?}");
    for server in [probe, plain, hello] {
        server.shutdown(Duration::from_secs(1)).await;
    }
    Ok(())
}
