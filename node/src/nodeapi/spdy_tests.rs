//! SPDY framing against header blocks a real zlib produced with the SPDY/3 dictionary (zlib's
//! `compressobj(zdict=…)` plus a sync flush per block, as Go's framer writes them).

use super::*;

/// `streamtype: error, port: 8080, requestid: 0` then the same with `data`, one zlib stream.
const BLOCK1: &str =
    "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff";
const BLOCK2: &str = "c2aa19540e2512d60b000000ffff";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn syn_stream(stream_id: u32, block: &[u8]) -> Vec<u8> {
    let mut payload = stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    payload.extend_from_slice(block);
    control(SYN_STREAM, 0, &payload)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn dictionary_is_the_spdy3_one() {
    assert_eq!(DICTIONARY.len(), 1423);
    assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
}

#[tokio::test]
async fn reads_what_a_spdy_client_sends() {
    let mut wire = syn_stream(1, &unhex(BLOCK1));
    wire.extend(ping(7));
    wire.extend(syn_stream(3, &unhex(BLOCK2)));
    wire.extend(data(3, false, b"GET / HTTP/1.1\r\n"));
    wire.extend(data(3, true, b""));
    wire.extend(control(9, 0, &[0, 0, 0, 3, 0, 1, 0, 0])); // WINDOW_UPDATE
    wire.extend(rst_cancel(3));
    let mut r = &wire[..];
    let mut dec = HeaderDecoder::default();
    let mut frames = Vec::new();
    while let Some(f) = read_frame(&mut r, &mut dec).await.expect("valid frames") {
        frames.push(f);
    }
    assert_eq!(
        frames,
        vec![
            Frame::SynStream {
                stream_id: 1,
                headers: pairs(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")])
            },
            Frame::Ping { id: 7 },
            Frame::SynStream {
                stream_id: 3,
                headers: pairs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
            },
            Frame::Data { stream_id: 3, fin: false, data: b"GET / HTTP/1.1\r\n".to_vec() },
            Frame::Data { stream_id: 3, fin: true, data: vec![] },
            Frame::Ignored,
            Frame::RstStream { stream_id: 3 },
        ]
    );
}

#[test]
fn server_header_blocks_inflate_as_one_stream() {
    let mut enc = HeaderEncoder::default();
    let (a, b) = (enc.encode(&[]), enc.encode(&[("status", "200")]));
    let mut z = flate2::Decompress::new(true);
    let mut out = Vec::with_capacity(1024);
    for block in [&a, &b] {
        z.decompress_vec(block, &mut out, flate2::FlushDecompress::Sync).expect("inflate");
    }
    assert_eq!(parse_block(&out[..4]).expect("empty block"), vec![]);
    assert_eq!(parse_block(&out[4..]).expect("block"), pairs(&[("status", "200")]));
}

#[test]
fn frame_layout() {
    assert_eq!(data(5, true, b"x"), vec![0, 0, 0, 5, 1, 0, 0, 1, b'x']);
    assert_eq!(ping(9), vec![0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 9]);
    assert_eq!(&syn_reply(1, b"zz")[..12], &[0x80, 3, 0, 2, 0, 0, 0, 6, 0, 0, 0, 1]);
}
