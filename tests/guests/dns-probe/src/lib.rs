//! `dns-probe`: a `wasi:http` guest that resolves names and fetches URLs, to show what a guest
//! sees of the cluster's names.
//!
//! `/resolve?name=N` → the addresses of N from `wasi:sockets/ip-name-lookup`, one a line (500
//! with `lookup of N failed: <error-code>` if it fails); `/fetch?url=U` → an outgoing
//! `wasi:http` GET of U, answered as `<status>\n<body>` (502 with the error if it fails).

use skiff_sdk::{Request, Response};

mod fetch;
mod resolve;

fn handle(req: Request) -> Response {
    match req.path() {
        "/resolve" => match req.query("name") {
            Some(name) => match resolve::addresses(&name) {
                Ok(ips) => Response::text(ips.iter().map(|ip| format!("{ip}\n")).collect::<String>()),
                Err(e) => Response::status_text(500, format!("lookup of {name} failed: {e}\n")),
            },
            None => Response::status_text(400, "missing ?name=\n"),
        },
        "/fetch" => match req.query("url") {
            Some(url) => match fetch::get(&url) {
                Ok((status, body)) => Response::text(format!("{status}\n{body}")),
                Err(e) => Response::status_text(502, format!("fetch of {url} failed: {e}\n")),
            },
            None => Response::status_text(400, "missing ?url=\n"),
        },
        path => Response::status_text(404, format!("no route {path}\n")),
    }
}

skiff_sdk::http_handler!(handle);
