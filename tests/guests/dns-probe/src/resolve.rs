//! A name's addresses through `wasi:sockets/ip-name-lookup`, waiting out `would-block`.

use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::ip_name_lookup::resolve_addresses;
use wasip2::sockets::network::{ErrorCode, IpAddress};

/// Every address of `name`, as text, or the lookup's error code.
pub fn addresses(name: &str) -> Result<Vec<String>, String> {
    let network = instance_network();
    let stream = resolve_addresses(&network, name).map_err(|e| format!("{e:?}"))?;
    let mut out = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(ip)) => out.push(text(ip)),
            Ok(None) => return Ok(out),
            Err(ErrorCode::WouldBlock) => stream.subscribe().block(),
            Err(e) => return Err(format!("{e:?}")),
        }
    }
}

fn text(ip: IpAddress) -> String {
    match ip {
        IpAddress::Ipv4((a, b, c, d)) => std::net::Ipv4Addr::new(a, b, c, d).to_string(),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => std::net::Ipv6Addr::new(a, b, c, d, e, f, g, h).to_string(),
    }
}
