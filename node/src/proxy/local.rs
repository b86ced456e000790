//! The WASM HTTP servers this agent runs on the node's network, by the address they serve
//! (`podIP:containerPort`): where the service proxy hands a connection straight to a pod.
//!
//! What it owns: a map pod workers fill when an HTTP component starts and empty when it ends
//! ([`LocalHttp::started`], [`LocalHttp::ended`]), and the proxy's lookup. What it does not:
//! serve anything (`skiff-wasm-runtime`'s [`HttpHandoff`] does) or decide which backend a
//! connection goes to (`balance`). Why: a connection the proxy accepted for a backend that
//! lives in this very process need not cross the kernel a second time (issue 6: "traffic to a
//! WASM HTTP pod from a pod on the same node may skip the kernel entirely"); the guest still
//! sees the bytes the client sent, exactly as through the pod IP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use skiff_wasm_runtime::HttpHandoff;

/// The directory of this agent's HTTP components (share it through an `Arc`).
#[derive(Debug, Default)]
pub struct LocalHttp {
    servers: Mutex<HashMap<SocketAddr, HttpHandoff>>,
}

impl LocalHttp {
    /// Records that an HTTP component serves `addr` and takes connections through `handoff`.
    pub fn started(&self, addr: SocketAddr, handoff: HttpHandoff) {
        self.servers.lock().unwrap_or_else(PoisonError::into_inner).insert(addr, handoff);
    }

    /// Records that the component behind `handoff` ended (a newer one on `addr` stays).
    pub fn ended(&self, addr: SocketAddr, handoff: &HttpHandoff) {
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        if servers.get(&addr).is_some_and(|h| h.same_server(handoff)) {
            servers.remove(&addr);
        }
    }

    /// The component serving `addr`, while it takes connections.
    pub fn get(&self, addr: SocketAddr) -> Option<HttpHandoff> {
        let servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        servers.get(&addr).filter(|h| h.is_open()).cloned()
    }

    /// How many components are registered.
    pub fn len(&self) -> usize {
        self.servers.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
