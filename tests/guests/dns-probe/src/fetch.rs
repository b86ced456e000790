//! An outgoing `wasi:http` GET: status and body text, or the error.

use std::io::Read as _;
use wasip2::http::outgoing_handler::handle;
use wasip2::http::types::{Fields, OutgoingRequest, Scheme};

/// GETs `url` (`http://host[:port]/path`), returns the status and the body as text.
pub fn get(url: &str) -> Result<(u16, String), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(format!("{url} is not an http(s) URL")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&scheme)).map_err(|()| "invalid scheme".to_owned())?;
    request.set_authority(Some(authority)).map_err(|()| format!("invalid authority {authority}"))?;
    request.set_path_with_query(Some(path)).map_err(|()| format!("invalid path {path}"))?;
    let future = handle(request, None).map_err(|e| format!("{e:?}"))?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response.map_err(|()| "response already taken".to_owned())?.map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|()| "body already taken".to_owned())?;
    let mut text = Vec::new();
    {
        let mut stream = body.stream().map_err(|()| "body stream already taken".to_owned())?;
        stream.read_to_end(&mut text).map_err(|e| format!("reading the body: {e}"))?;
    }
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}
