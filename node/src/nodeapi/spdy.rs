//! SPDY/3.1 framing, server side, as much as `kubectl port-forward` needs: the frames client-go's
//! `spdystream` sends (SYN_STREAM, DATA, RST_STREAM, PING, GOAWAY; SETTINGS and WINDOW_UPDATE are
//! read and ignored, as spdystream does not enforce flow control) and the ones a server answers
//! with (SYN_REPLY, DATA, PING).
//!
//! What it owns: frame encoding/decoding and the header blocks' zlib streams — the client
//! compresses against the SPDY/3 dictionary, one stream per connection; the server's own blocks
//! need no dictionary, since a zlib reader only uses one when the stream's header asks for it.
//! What it does not: what streams mean (`portforward`).

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A frame larger than this ends the connection (spdystream writes at most 64 KiB + header).
const MAX_FRAME: usize = 1 << 20;
/// A header block may not inflate beyond this.
const MAX_HEADERS: usize = 256 * 1024;
/// The sliding window of the header decompressor (also the deflate maximum distance).
const WINDOW: usize = 32 * 1024;

pub const FLAG_FIN: u8 = 0x01;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

/// What went wrong on a SPDY connection.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("reading a SPDY frame: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    #[error("SPDY header block: {0}")]
    Headers(String),
}

/// A frame as the server acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        headers: Vec<(String, String)>,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    RstStream {
        stream_id: u32,
    },
    Ping {
        id: u32,
    },
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY, unknown types: nothing to do.
    Ignored,
}

fn be32(b: &[u8]) -> Result<u32, SpdyError> {
    b.get(..4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
        .ok_or(SpdyError::Malformed("frame too short"))
}

/// Reads the next frame; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    headers: &mut HeaderDecoder,
) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let flags = head[4];
    let len = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
    if len > MAX_FRAME {
        return Err(SpdyError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if head[0] & 0x80 == 0 {
        let stream_id = be32(&head)? & 0x7FFF_FFFF;
        return Ok(Some(Frame::Data { stream_id, fin: flags & FLAG_FIN != 0, data: payload }));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    Ok(Some(match kind {
        SYN_STREAM => {
            let stream_id = be32(&payload)? & 0x7FFF_FFFF;
            // Stream id, associated stream id, priority and slot precede the header block.
            let block = payload.get(10..).ok_or(SpdyError::Malformed("SYN_STREAM too short"))?;
            Frame::SynStream { stream_id, headers: headers.decode(block)? }
        }
        SYN_REPLY => {
            // Keep the shared zlib stream in step even though replies mean nothing here.
            headers.decode(payload.get(4..).ok_or(SpdyError::Malformed("SYN_REPLY too short"))?)?;
            Frame::Ignored
        }
        RST_STREAM => Frame::RstStream { stream_id: be32(&payload)? & 0x7FFF_FFFF },
        PING => Frame::Ping { id: be32(&payload)? },
        GOAWAY => Frame::GoAway,
        _ => Frame::Ignored,
    }))
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&[0x80, 0x03]);
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// A SYN_REPLY carrying `block` (from [`HeaderEncoder::encode`]).
pub fn syn_reply(stream_id: u32, block: &[u8]) -> Vec<u8> {
    let mut payload = stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(block);
    control(SYN_REPLY, 0, &payload)
}

/// A DATA frame (at most 16 MiB of `data`; callers send far smaller chunks).
pub fn data(stream_id: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u32).to_be_bytes();
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(&(stream_id & 0x7FFF_FFFF).to_be_bytes());
    out.push(if fin { FLAG_FIN } else { 0 });
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(data);
    out
}

/// The answer to a PING: the same id back.
pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// RST_STREAM with status `CANCEL` (5).
pub fn rst_cancel(stream_id: u32) -> Vec<u8> {
    let mut payload = stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&5u32.to_be_bytes());
    control(RST_STREAM, 0, &payload)
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    b << 16 | a
}

/// Inflates the client's header blocks: one zlib stream for the whole connection, primed with
/// the SPDY/3 dictionary (placed in the decompressor's window, where back-references reach it).
pub struct HeaderDecoder {
    state: Box<DecompressorOxide>,
    window: Vec<u8>,
    pos: usize,
    header_seen: bool,
}

impl std::fmt::Debug for HeaderDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecoder").field("header_seen", &self.header_seen).finish_non_exhaustive()
    }
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        let mut window = vec![0u8; WINDOW];
        window[..DICTIONARY.len()].copy_from_slice(DICTIONARY);
        HeaderDecoder { state: Box::default(), window, pos: DICTIONARY.len(), header_seen: false }
    }
}

impl HeaderDecoder {
    /// The name/value pairs of one header block (names lower case; the first of several values).
    pub fn decode(&mut self, mut block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let err = |m: &str| SpdyError::Headers(m.to_string());
        if !self.header_seen {
            let (&[cmf, flg], rest) = block.split_first_chunk::<2>().ok_or_else(|| err("no zlib header"))?;
            if cmf & 0x0F != 8 || (u16::from(cmf) << 8 | u16::from(flg)) % 31 != 0 {
                return Err(err("not a zlib stream"));
            }
            block = rest;
            if flg & 0x20 != 0 {
                let id = be32(block).map_err(|_| err("short dictionary id"))?;
                if id != adler32(DICTIONARY) {
                    return Err(SpdyError::Headers(format!("unknown header dictionary {id:#010x}")));
                }
                block = &block[4..];
            }
            self.header_seen = true;
        }
        let mut raw = Vec::new();
        loop {
            let (status, used, written) = decompress(
                &mut self.state,
                block,
                &mut self.window,
                self.pos,
                inflate_flags::TINFL_FLAG_HAS_MORE_INPUT,
            );
            raw.extend_from_slice(&self.window[self.pos..self.pos + written]);
            self.pos = (self.pos + written) & (WINDOW - 1);
            block = &block[used..];
            if raw.len() > MAX_HEADERS {
                return Err(err("header block too large"));
            }
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput if block.is_empty() => break,
                TINFLStatus::NeedsMoreInput => continue,
                TINFLStatus::Done => break,
                other => return Err(SpdyError::Headers(format!("inflate failed: {other:?}"))),
            }
        }
        parse_block(&raw)
    }
}

fn parse_block(raw: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let mut rest = raw;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        if rest.len() < n {
            return Err(SpdyError::Headers("truncated header block".into()));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = be32(take(4)?)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let n = be32(take(4)?)? as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?)? as usize;
        let value = String::from_utf8_lossy(take(n)?);
        let first = value.split('\0').next().unwrap_or_default().to_string();
        out.push((name, first));
    }
    Ok(out)
}

/// Deflates the server's header blocks (one zlib stream, sync-flushed per block).
#[derive(Debug)]
pub struct HeaderEncoder {
    z: flate2::Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        HeaderEncoder { z: flate2::Compress::new(flate2::Compression::default(), true) }
    }
}

impl HeaderEncoder {
    /// The compressed block of `headers`.
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k, v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            let before = self.z.total_in();
            // Only fails on a misused stream, which this type does not allow.
            let _ = self.z.compress_vec(input, &mut out, flate2::FlushCompress::Sync);
            input = &input[(self.z.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(256);
        }
    }
}

/// The SPDY/3 header compression dictionary (a constant of the protocol specification).
pub const DICTIONARY: &[u8] = b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\rcache-control\x00\x00\x00\nconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\rcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\rif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\rlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\nuser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\nset-cookie\x00\x00\x00\nkeep-alive\x00\x00\x00\x06origin100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

#[cfg(test)]
#[path = "spdy_tests.rs"]
mod tests;
