//! The guest's `wasi:sockets/ip-name-lookup`, with cluster names first.
//!
//! wasmtime-wasi resolves every name with the host's `getaddrinfo` and offers no hook for it,
//! so this module shadows the interface in the component linker (`allow_shadowing`) with its
//! own `resolve-addresses` and `resolve-address-stream`: a name the pod's [`NameResolver`]
//! knows is answered from the cluster's records; a name of the cluster zone that does not
//! exist fails with `name-unresolvable` at once; everything else — and every name of a guest
//! without a resolver — is handed to wasmtime-wasi's own implementation, whose stream this
//! one wraps, so host resolution behaves exactly as before (IDNA, IP literals, errors).
//!
//! The runtime always grants name lookup to guests (`GuestConfig::wasi_builder`), so the
//! cluster path has no extra permission to check beyond the `network` capability handle.

use std::net::IpAddr;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    Host as WasiLookup, HostResolveAddressStream as WasiStreamMethods, ResolveAddressStream as WasiStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};
use wasmtime_wasi::p2::{DynPollable, Network, Pollable, subscribe};
use wasmtime_wasi::sockets::WasiSocketsView;

use crate::guest::Host;
use crate::names::Lookup;

/// The interface as wasmtime-wasi 48 defines it (guests importing any `0.2.x` link to it).
const INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// A `resolve-address-stream`: cluster addresses, or wasmtime-wasi's own host lookup.
pub(crate) enum ResolveStream {
    Cluster(std::vec::IntoIter<IpAddr>),
    Host(Resource<WasiStream>),
}

#[wasmtime_wasi::async_trait]
impl Pollable for ResolveStream {
    /// Cluster answers are ready at once; a host lookup's stream is subscribed to directly.
    async fn ready(&mut self) {}
}

type Answer<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;

/// Replaces `wasi:sockets/ip-name-lookup` in `linker` (after wasmtime-wasi added its own).
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut interface = linker.instance(INTERFACE)?;
    interface.resource("resolve-address-stream", ResourceType::host::<ResolveStream>(), |mut store, rep| {
        let host = store.data_mut();
        if let ResolveStream::Host(inner) = host.table.delete(Resource::<ResolveStream>::new_own(rep))? {
            WasiStreamMethods::drop(&mut host.sockets(), inner)?;
        }
        Ok(())
    })?;
    interface.func_wrap(
        "resolve-addresses",
        |mut store: StoreContextMut<'_, Host>, (network, name): (Resource<Network>, String)| {
            resolve_addresses(store.data_mut(), network, name)
        },
    )?;
    interface.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store: StoreContextMut<'_, Host>, (stream,): (Resource<ResolveStream>,)| {
            next_address(store.data_mut(), &stream)
        },
    )?;
    interface.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store: StoreContextMut<'_, Host>, (stream,): (Resource<ResolveStream>,)| {
            let host = store.data_mut();
            let inner = match host.table.get(&stream)? {
                ResolveStream::Cluster(_) => None,
                ResolveStream::Host(inner) => Some(inner.rep()),
            };
            let pollable: Resource<DynPollable> = match inner {
                None => subscribe(&mut host.table, stream)?,
                Some(rep) => WasiStreamMethods::subscribe(&mut host.sockets(), Resource::new_borrow(rep))?,
            };
            Ok((pollable,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn resolve_addresses(host: &mut Host, network: Resource<Network>, name: String) -> Answer<Resource<ResolveStream>> {
    // The network handle is the capability to look names up: it must be a live one.
    host.table.get(&network)?;
    let lookup = match &host.resolver {
        Some(resolver) => resolver.lookup(&name),
        None => Lookup::Host(name.clone()),
    };
    let stream = match lookup {
        Lookup::Cluster(ips) => {
            tracing::debug!(%name, ?ips, "guest name lookup answered from the cluster records");
            ResolveStream::Cluster(ips.into_iter())
        }
        Lookup::NotFound => {
            tracing::debug!(%name, "guest name lookup: no such cluster name");
            return Ok((Err(ErrorCode::NameUnresolvable),));
        }
        Lookup::Host(target) => match WasiLookup::resolve_addresses(&mut host.sockets(), network, target) {
            Ok(inner) => ResolveStream::Host(inner),
            Err(error) => return Ok((Err(error.downcast()?),)),
        },
    };
    Ok((Ok(host.table.push(stream)?),))
}

fn next_address(host: &mut Host, stream: &Resource<ResolveStream>) -> Answer<Option<IpAddress>> {
    let inner = match host.table.get_mut(stream)? {
        ResolveStream::Cluster(ips) => return Ok((Ok(ips.next().map(IpAddress::from)),)),
        ResolveStream::Host(inner) => Resource::<WasiStream>::new_borrow(inner.rep()),
    };
    match WasiStreamMethods::resolve_next_address(&mut host.sockets(), inner) {
        Ok(address) => Ok((Ok(address),)),
        Err(error) => Ok((Err(error.downcast()?),)),
    }
}
