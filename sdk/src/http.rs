//! HTTP handler helpers: plain request/response values and the `wasi:http` glue.
//!
//! A handler is `fn(Request) -> Response`; [`crate::http_handler!`] exports it as the
//! component's `wasi:http/incoming-handler`. The request body is read fully before the
//! handler runs and the response body is written in one go: functions answer small requests,
//! and buffering keeps the author's API synchronous and simple. The types and their helpers
//! build on any target (they are unit-tested on the host); only the glue is wasm-only.

/// An incoming HTTP request, body already read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Method, upper case (`GET`, `POST`, …).
    pub method: String,
    /// Path and query as sent (`/a/b?x=1`); `/` if the request had none.
    pub path_with_query: String,
    /// Headers in arrival order; names lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Request {
    /// The path without the query (`/a/b`).
    pub fn path(&self) -> &str {
        self.path_with_query.split_once('?').map_or(self.path_with_query.as_str(), |(p, _)| p)
    }

    /// The raw query string after `?`, if any.
    pub fn query_string(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, q)| q)
    }

    /// The first query parameter `key`, percent-decoded (`+` is a space).
    pub fn query(&self, key: &str) -> Option<String> {
        self.query_string()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
    }

    /// The first header `name` (case-insensitive) as UTF-8, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// An outgoing HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers to send.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status` and `body` and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: Vec::new(), body: body.into() }
    }

    /// `200 OK` with a `text/plain; charset=utf-8` body.
    pub fn text(body: impl Into<String>) -> Self {
        Self::new(200, body.into()).with_header("content-type", "text/plain; charset=utf-8")
    }

    /// A plain-text response with another status (errors, `404`, …).
    pub fn status_text(status: u16, body: impl Into<String>) -> Self {
        Self { status, ..Self::text(body) }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept literally.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(target_arch = "wasm32")]
mod glue;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use glue::dispatch as __dispatch;

/// Exports `fn(Request) -> Response` as this component's `wasi:http/incoming-handler`.
///
/// ```ignore
/// fn handle(req: skiff_sdk::Request) -> skiff_sdk::Response {
///     skiff_sdk::Response::text(format!("Hello from Skiff {}\n", req.path()))
/// }
/// skiff_sdk::http_handler!(handle);
/// ```
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! http_handler {
    ($handler:path) => {
        struct __SkiffHttpHandler;
        impl $crate::__wasi::exports::http::incoming_handler::Guest for __SkiffHttpHandler {
            fn handle(
                request: $crate::__wasi::http::types::IncomingRequest,
                out: $crate::__wasi::http::types::ResponseOutparam,
            ) {
                $crate::http::__dispatch(request, out, $handler)
            }
        }
        $crate::__wasi::http::proxy::export!(__SkiffHttpHandler);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pq: &str) -> Request {
        Request { method: "GET".into(), path_with_query: pq.into(), ..Request::default() }
    }

    #[test]
    fn path_and_query_are_split_and_decoded() {
        let r = req("/file?path=%2Fdata%2Fa+b.txt&x");
        assert_eq!(r.path(), "/file");
        assert_eq!(r.query("path").as_deref(), Some("/data/a b.txt"));
        assert_eq!(r.query("x").as_deref(), Some(""));
        assert_eq!(r.query("y"), None);
        assert_eq!(req("/plain").query("path"), None);
        assert_eq!(req("/plain").path(), "/plain");
    }

    #[test]
    fn percent_decode_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn headers_are_case_insensitive() {
        let mut r = req("/");
        r.headers.push(("content-type".into(), b"text/plain".to_vec()));
        assert_eq!(r.header("Content-Type"), Some("text/plain"));
        let resp = Response::status_text(404, "nope").with_header("x-a", "b");
        assert_eq!(resp.status, 404);
        assert_eq!(resp.headers.len(), 2);
    }
}
