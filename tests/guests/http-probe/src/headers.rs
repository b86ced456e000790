//! `/headers`: the request's headers, one `name: value` line each in arrival order (names
//! lower case) — for tests of what a proxy in front of the guest (the ingress) adds or drops.

use skiff_sdk::{Request, Response};

/// The `/headers` answer.
pub fn echo(req: &Request) -> Response {
    let mut body = String::new();
    for (name, value) in &req.headers {
        body.push_str(name);
        body.push_str(": ");
        body.push_str(&String::from_utf8_lossy(value));
        body.push('\n');
    }
    Response::text(body)
}
