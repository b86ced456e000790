//! The `wasi:http` side of [`crate::http_handler!`]: turns an `incoming-request` into a
//! [`Request`], calls the handler, and writes the [`Response`] to the `response-outparam`.

use super::{Request, Response};
use std::io::{Read as _, Write as _};
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// Runs `handler` for one request. Failures to read the request answer 400; failures to
/// build the response are reported to the host as an error, which it turns into a 5xx.
pub fn dispatch(incoming: IncomingRequest, out: ResponseOutparam, handler: fn(Request) -> Response) {
    let response = match read_request(&incoming) {
        Ok(request) => handler(request),
        Err(message) => Response::status_text(400, message),
    };
    drop(incoming);
    write_response(out, response);
}

fn read_request(incoming: &IncomingRequest) -> Result<Request, String> {
    let method = match incoming.method() {
        Method::Get => "GET".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Connect => "CONNECT".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Trace => "TRACE".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Other(m) => m,
    };
    let path_with_query = incoming.path_with_query().unwrap_or_else(|| "/".to_owned());
    let headers = incoming.headers().entries();
    let mut body = Vec::new();
    let incoming_body = incoming.consume().map_err(|()| "request body already taken".to_owned())?;
    {
        let mut stream = incoming_body.stream().map_err(|()| "request body stream already taken".to_owned())?;
        stream.read_to_end(&mut body).map_err(|e| format!("reading request body: {e}"))?;
    }
    drop(incoming_body);
    Ok(Request { method, path_with_query, headers, body })
}

fn write_response(out: ResponseOutparam, response: Response) {
    let headers = Fields::new();
    for (name, value) in &response.headers {
        // A header the host refuses (forbidden or malformed) is dropped, not fatal.
        let _ = headers.append(name, value);
    }
    let outgoing = OutgoingResponse::new(headers);
    if outgoing.set_status_code(response.status).is_err() {
        ResponseOutparam::set(out, Err(ErrorCode::InternalError(Some(format!("invalid status {}", response.status)))));
        return;
    }
    let Ok(body) = outgoing.body() else {
        ResponseOutparam::set(out, Err(ErrorCode::InternalError(Some("no body".to_owned()))));
        return;
    };
    ResponseOutparam::set(out, Ok(outgoing));
    if let Ok(mut stream) = body.write() {
        // The client may have gone away; nothing useful to do with a write error then.
        let _ = stream.write_all(&response.body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}
