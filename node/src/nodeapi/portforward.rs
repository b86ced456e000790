//! `/portForward/{namespace}/{pod}`: the kubelet's port-forward endpoint. kubectl (1.31+) opens a
//! WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io` and runs SPDY inside its binary
//! messages; older clients (and kubectl's fallback) upgrade straight to `SPDY/3.1`. Either way,
//! each forwarded connection is a pair of SPDY streams sharing a `requestID` header: `error`
//! (the server writes a message there if it cannot connect) and `data` (the bytes both ways).
//!
//! What it owns: the upgrade, the stream pairs, and connecting to the pod's IP and port from the
//! node — WASM HTTP pods listen there too, so both kinds of pods forward the same way. What it
//! does not: SPDY framing (`spdy`) or WebSocket framing (`websocket`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::spdy::{self, Frame, HeaderDecoder, HeaderEncoder};
use super::websocket::{self, Message, Outgoing};
use super::{NodeApiState, status_response};

/// The WebSocket subprotocol of SPDY tunnelled in WebSocket messages.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The stream protocol of a plain SPDY upgrade.
pub const PROTOCOL: &str = "portforward.k8s.io";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the pod per DATA frame.
const CHUNK: usize = 32 * 1024;

/// `GET|POST /portForward/{namespace}/{pod}`.
pub async fn port_forward(
    State(state): State<NodeApiState>,
    Path((namespace, pod)): Path<(String, String)>,
    mut req: Request,
) -> Response {
    let bad = |msg: &str| status_response(StatusCode::BAD_REQUEST, "BadRequest", msg);
    let Some(pod_ip) = state.targets.pod_ip(&namespace, &pod) else {
        return bad(&format!("pod {namespace}/{pod} has no running container on this node"));
    };
    let tunnel = websocket::is_upgrade(req.headers());
    let response = if tunnel {
        if websocket::choose_protocol(req.headers(), &[TUNNEL_PROTOCOL]).is_none() {
            return bad(&format!("port-forward over WebSocket needs subprotocol {TUNNEL_PROTOCOL}"));
        }
        match websocket::handshake(req.headers(), TUNNEL_PROTOCOL) {
            Ok(r) => r,
            Err(msg) => return bad(&msg),
        }
    } else {
        let spdy = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()) == Some("SPDY/3.1");
        let offers = req
            .headers()
            .get_all("x-stream-protocol-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| p.trim() == PROTOCOL));
        if !spdy || !offers {
            return bad(&format!("port-forward needs an upgrade to WebSocket ({TUNNEL_PROTOCOL}) or SPDY/3.1"));
        }
        let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        r.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        r.headers_mut().insert("x-stream-protocol-version", HeaderValue::from_static(PROTOCOL));
        r
    };
    let Some(upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return bad("this connection cannot be upgraded (HTTP/1.1 is required)");
    };
    let cancel = state.shutdown.child_token();
    let span = tracing::info_span!("port-forward", %namespace, %pod, %pod_ip, tunnel);
    state.sessions.spawn(tracing::Instrument::instrument(
        async move {
            let io = match upgrade.await {
                Ok(io) => hyper_util::rt::TokioIo::new(io),
                Err(e) => return tracing::debug!(error = %e, "port-forward upgrade failed"),
            };
            if tunnel { serve_tunnel(io, pod_ip, cancel).await } else { serve_raw(io, pod_ip, cancel).await }
        },
        span,
    ));
    response
}

/// SPDY straight on the upgraded connection.
async fn serve_raw<IO>(io: IO, pod_ip: IpAddr, cancel: CancellationToken)
where
    IO: AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    serve_spdy(rd, tx, pod_ip, cancel).await;
    let _ = writer.await;
}

/// SPDY inside WebSocket binary messages: incoming payloads are joined into one byte stream,
/// each outgoing frame is one message.
pub async fn serve_tunnel<IO>(io: IO, pod_ip: IpAddr, cancel: CancellationToken)
where
    IO: AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let (ws_tx, ws_rx) = mpsc::channel::<Outgoing>(64);
    let ws_writer = tokio::spawn(websocket::write_loop(wr, ws_rx));
    let (mut joined_w, joined_r) = tokio::io::duplex(256 * 1024);
    let pong = ws_tx.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(Message::Binary(m))) = websocket::read_message(&mut rd, &pong).await {
            if joined_w.write_all(&m).await.is_err() {
                break;
            }
        }
    });
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let frames_out = ws_tx.clone();
    let relay = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if frames_out.send(Outgoing::Binary(frame)).await.is_err() {
                break;
            }
        }
    });
    serve_spdy(joined_r, tx, pod_ip, cancel).await;
    let _ = relay.await;
    let _ = ws_tx.send(Outgoing::Close).await;
    drop(ws_tx);
    let _ = ws_writer.await;
    reader.abort();
}

/// The client streams of one forwarded connection (by `requestID`).
#[derive(Debug, Default)]
struct Pair {
    error_stream: Option<u32>,
}

/// Serves port-forward streams until the client goes away, says GOAWAY, or shutdown.
pub async fn serve_spdy<R: AsyncRead + Unpin>(
    mut rd: R,
    out: mpsc::Sender<Vec<u8>>,
    pod_ip: IpAddr,
    cancel: CancellationToken,
) {
    let mut decoder = HeaderDecoder::default();
    let mut encoder = HeaderEncoder::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut data: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
            f = spdy::read_frame(&mut rd, &mut decoder) => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward connection ended");
                break;
            }
        };
        match frame {
            Frame::SynStream { stream_id, headers } => {
                let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
                let reply = spdy::syn_reply(stream_id, &encoder.encode(&[]));
                if out.send(reply).await.is_err() {
                    break;
                }
                let pair = pairs.entry(get("requestid")).or_default();
                match get("streamtype").as_str() {
                    "error" => pair.error_stream = Some(stream_id),
                    "data" => {
                        let (tx, rx) = mpsc::channel(16);
                        data.insert(stream_id, tx);
                        let target = Target {
                            pod_ip,
                            port: get("port"),
                            data_stream: stream_id,
                            error_stream: pair.error_stream,
                        };
                        forwards.spawn(forward(target, rx, out.clone()));
                    }
                    other => {
                        tracing::debug!(stream_type = other, "unknown port-forward stream type");
                        let _ = out.send(spdy::rst_cancel(stream_id)).await;
                    }
                }
            }
            Frame::Data { stream_id, fin, data: bytes } => {
                if let Some(tx) = data.get(&stream_id) {
                    let gone = (!bytes.is_empty() && tx.send(Some(bytes)).await.is_err())
                        || (fin && tx.send(None).await.is_err());
                    if gone || fin {
                        data.remove(&stream_id);
                    }
                }
            }
            // Dropping the sender tells the forward the client gave up on it.
            Frame::RstStream { stream_id } => drop(data.remove(&stream_id)),
            Frame::Ping { id } => {
                if out.send(spdy::ping(id)).await.is_err() {
                    break;
                }
            }
            Frame::GoAway => break,
            Frame::Ignored => {}
        }
    }
    drop(data);
    forwards.shutdown().await;
}

/// Where one forwarded connection goes and which client streams it answers on.
#[derive(Debug, Clone)]
struct Target {
    pod_ip: IpAddr,
    port: String,
    data_stream: u32,
    error_stream: Option<u32>,
}

/// One forwarded connection: the client's bytes (`None`: the client finished sending) to the
/// pod, the pod's back as DATA frames; ends both streams with FIN when the pod closes.
async fn forward(t: Target, mut from_client: mpsc::Receiver<Option<Vec<u8>>>, out: mpsc::Sender<Vec<u8>>) {
    let finish = |error: Option<String>| {
        let out = out.clone();
        let t = t.clone();
        async move {
            if let Some(e) = t.error_stream {
                let message = error.unwrap_or_default();
                let _ = out.send(spdy::data(e, true, message.as_bytes())).await;
            }
            let _ = out.send(spdy::data(t.data_stream, true, b"")).await;
        }
    };
    let port = match t.port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return finish(Some(format!("invalid port {:?}", t.port))).await,
    };
    let addr = SocketAddr::new(t.pod_ip, port);
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return finish(Some(format!("error forwarding port {port} to pod at {addr}: {e}"))).await,
        Err(_) => return finish(Some(format!("error forwarding port {port} to pod at {addr}: timed out"))).await,
    };
    let _ = tcp.set_nodelay(true);
    let (mut pod_rd, mut pod_wr) = tcp.into_split();
    let upstream = async {
        loop {
            match from_client.recv().await {
                Some(Some(bytes)) => {
                    if pod_wr.write_all(&bytes).await.is_err() {
                        return false;
                    }
                }
                // The client finished sending: half-close, keep reading the pod's answer.
                Some(None) => {
                    let _ = pod_wr.shutdown().await;
                    return true;
                }
                // Reset by the client, or the connection is gone.
                None => return false,
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match pod_rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out.send(spdy::data(t.data_stream, false, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::pin!(downstream);
    tokio::select! {
        () = &mut downstream => {}
        half_closed = upstream => if half_closed { downstream.await },
    }
    finish(None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_failure_is_reported_on_the_error_stream() {
        // A port nothing listens on: bind, note the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let (out, mut rx) = mpsc::channel(8);
        let (_client, from_client) = mpsc::channel(1);
        let t = Target {
            pod_ip: "127.0.0.1".parse().expect("ip"),
            port: port.to_string(),
            data_stream: 3,
            error_stream: Some(1),
        };
        tokio::time::timeout(Duration::from_secs(10), forward(t, from_client, out)).await.expect("ends");
        let err = rx.recv().await.expect("error frame");
        assert_eq!(&err[..5], &[0, 0, 0, 1, spdy::FLAG_FIN]);
        assert!(String::from_utf8_lossy(&err[8..]).contains(&format!("error forwarding port {port}")));
        assert_eq!(rx.recv().await.expect("data fin"), spdy::data(3, true, b""));
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_streams_end_with_fin() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let echo = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            s.write_all(&got).await.expect("echo");
        });
        let (out, mut rx) = mpsc::channel(8);
        let (client, from_client) = mpsc::channel(4);
        let t = Target {
            pod_ip: "127.0.0.1".parse().expect("ip"),
            port: port.to_string(),
            data_stream: 3,
            error_stream: Some(1),
        };
        let task = tokio::spawn(forward(t, from_client, out));
        client.send(Some(b"ping".to_vec())).await.expect("send");
        client.send(None).await.expect("fin");
        let frames: Vec<Vec<u8>> = tokio::time::timeout(Duration::from_secs(10), async {
            let mut v = Vec::new();
            while let Some(f) = rx.recv().await {
                v.push(f);
            }
            v
        })
        .await
        .expect("frames in time");
        task.await.expect("forward");
        echo.await.expect("echo");
        assert_eq!(frames, vec![spdy::data(3, false, b"ping"), spdy::data(1, true, b""), spdy::data(3, true, b"")]);
    }
}
