//! End-to-end test harness: real `skiff` processes driven by real clients.
//!
//! What it owns: finding the `skiff` binary ([`binary`]), starting `skiff up` on a free
//! loopback port with a temporary data dir and waiting for `/readyz` ([`Skiff`]), a private
//! etcd for the etcd store ([`Etcd`]), kubectl and HTTP/kube-rs clients built from the
//! kubeconfig skiff writes ([`kubectl`], [`kubeconfig`]), extra node agents ([`Agent`]), bounded waits ([`net`]), and
//! test-owned network namespaces for real pod networking ([`netns`]).
//! What it does not: build the binary (run `cargo build -p skiff` first — `scripts/test.sh`
//! does) or assert anything; the tests in `tests/tests/` do that.

pub mod agent;
pub mod binary;
pub mod etcd;
pub mod guests;
pub mod kubeconfig;
pub mod kubectl;
pub mod net;
pub mod netns;
pub mod oci_image;
pub mod oci_node;
pub mod registry;
pub mod skiff;

pub use agent::{Agent, AgentOptions};
pub use etcd::Etcd;
pub use kubeconfig::KubeconfigInfo;
pub use kubectl::{KubectlOutput, KubectlStream};
pub use net::{Fatal, wait_until, with_timeout};
pub use netns::{Forward, Inside, NetNs};
pub use registry::DockerRegistry;
pub use skiff::{Skiff, StartOptions, StoreKind};

/// Declares `mod $name { embedded, etcd }`: two `#[tokio::test]`s running the async function
/// `$name(StoreKind) -> anyhow::Result<()>` (defined beside the macro call) against each store.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() -> ::anyhow::Result<()> {
                    super::$name($crate::StoreKind::Embedded).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn etcd() -> ::anyhow::Result<()> {
                    super::$name($crate::StoreKind::Etcd).await
                }
            }
        )+
    };
}
