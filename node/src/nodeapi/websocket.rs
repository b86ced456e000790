//! The WebSocket protocol (RFC 6455), server side, as much as kubectl's streaming needs: the
//! handshake, binary messages both ways, ping/pong and close.
//!
//! What it owns: framing over an upgraded connection and subprotocol choice. What it does not:
//! the meaning of messages (`channel` for exec/attach, `portforward` for the SPDY tunnel).
//! Why not a crate: the framing is small, and the node then needs no second WebSocket stack
//! next to hyper's upgrades.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The GUID RFC 6455 §1.3 appends to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// A message larger than this ends the connection (kubectl sends at most 32 KiB at once).
const MAX_MESSAGE: usize = 16 << 20;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{GUID}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn header_tokens<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Whether the request asks for a WebSocket.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    header_tokens(headers, &header::UPGRADE).any(|t| t.eq_ignore_ascii_case("websocket"))
}

/// The subprotocol to speak: the first of `supported` (the server's preference, as the
/// kubelet's) that the client offered.
pub fn choose_protocol<'a>(headers: &HeaderMap, supported: &[&'a str]) -> Option<&'a str> {
    let offered: Vec<String> = header_tokens(headers, &header::SEC_WEBSOCKET_PROTOCOL).collect();
    supported.iter().copied().find(|p| offered.iter().any(|o| o == p))
}

/// The `101 Switching Protocols` answer, or why the handshake cannot be accepted.
pub fn handshake(headers: &HeaderMap, protocol: &str) -> Result<Response, String> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .ok_or("missing Sec-WebSocket-Key header")?;
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept_key(key)).map_err(|e| e.to_string())?);
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(protocol).map_err(|e| e.to_string())?);
    Ok(response)
}

/// One frame: FIN set, `mask` for a client's frames (tests), none for the server's.
pub fn encode_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// What the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Binary(Vec<u8>),
    Text(String),
    Close,
}

/// Reads one whole message (joining fragments); `None` at end of stream. Pings (allowed even
/// between fragments) are answered through `pong`.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    pong: &mpsc::Sender<Outgoing>,
) -> std::io::Result<Option<Message>> {
    let mut data = Vec::new();
    let mut first_opcode = None;
    loop {
        let mut head = [0u8; 2];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && first_opcode.is_none() => return Ok(None),
            Err(e) => return Err(e),
        }
        let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0F);
        let len = match head[1] & 0x7F {
            126 => u64::from(r.read_u16().await?),
            127 => r.read_u64().await?,
            n => u64::from(n),
        };
        let mask = if head[1] & 0x80 != 0 {
            let mut m = [0u8; 4];
            r.read_exact(&mut m).await?;
            Some(m)
        } else {
            None
        };
        let len = usize::try_from(len).ok().filter(|n| data.len() + n <= MAX_MESSAGE).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "WebSocket message larger than 16 MiB")
        })?;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        if let Some(m) = mask {
            payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
        }
        match opcode {
            OP_CLOSE => return Ok(Some(Message::Close)),
            OP_PING => {
                // A full queue means the peer does not read: skipping a pong is harmless then.
                let _ = pong.try_send(Outgoing::Pong(payload));
                continue;
            }
            OP_PONG => continue,
            OP_CONTINUATION if first_opcode.is_some() => data.extend_from_slice(&payload),
            OP_TEXT | OP_BINARY if first_opcode.is_none() => {
                first_opcode = Some(opcode);
                data = payload;
            }
            other => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unexpected WebSocket opcode {other:#x}"),
                ));
            }
        }
        if fin {
            return Ok(Some(match first_opcode {
                Some(OP_TEXT) => Message::Text(String::from_utf8_lossy(&data).into_owned()),
                _ => Message::Binary(data),
            }));
        }
    }
}

/// What the writer task sends.
#[derive(Debug)]
pub enum Outgoing {
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame, then the writer ends.
    Close,
}

/// Writes frames from `rx` until it closes or a close frame went out; then shuts `w` down.
pub async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(out) = rx.recv().await {
        let frame = match &out {
            Outgoing::Binary(b) => encode_frame(OP_BINARY, b, None),
            Outgoing::Pong(b) => encode_frame(OP_PONG, b, None),
            // Status 1000: normal closure.
            Outgoing::Close => encode_frame(OP_CLOSE, &1000u16.to_be_bytes(), None),
        };
        if w.write_all(&frame).await.is_err() || w.flush().await.is_err() {
            return;
        }
        if matches!(out, Outgoing::Close) {
            break;
        }
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn protocol_choice_follows_server_preference() {
        let mut h = HeaderMap::new();
        h.append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"));
        h.append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("channel.k8s.io"));
        assert_eq!(choose_protocol(&h, &["v5.channel.k8s.io", "v4.channel.k8s.io"]), Some("v5.channel.k8s.io"));
        assert_eq!(choose_protocol(&h, &["base64.channel.k8s.io"]), None);
    }

    #[tokio::test]
    async fn frames_round_trip_masked_and_fragmented() {
        let big = vec![7u8; 70_000];
        let mut wire = encode_frame(OP_BINARY, &big, Some([1, 2, 3, 4]));
        // A text message in two fragments, with a ping between them.
        wire.extend_from_slice(&[0x01, 0x82, 0, 0, 0, 0, b'h', b'i']);
        wire.extend(encode_frame(OP_PING, b"p", Some([9, 9, 9, 9])));
        wire.extend_from_slice(&[0x80, 0x81, 0, 0, 0, 0, b'!']);
        let mut r = &wire[..];
        let (tx, mut rx) = mpsc::channel(4);
        assert_eq!(read_message(&mut r, &tx).await.expect("binary"), Some(Message::Binary(big)));
        assert_eq!(read_message(&mut r, &tx).await.expect("text"), Some(Message::Text("hi!".into())));
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Pong(p)) if p == b"p"));
        assert_eq!(read_message(&mut r, &tx).await.expect("eof"), None);
    }
}
