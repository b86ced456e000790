//! Guest stdout/stderr: the [`OutputSink`] the node agent provides (log files) and its
//! adapter to wasmtime-wasi's stream traits.
//!
//! Writes go straight to the sink, synchronously and without buffering: the sink decides
//! about buffering and rotation, and a guest that crashes loses nothing it already wrote.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream as P2OutputStream, Pollable, StreamResult};

/// Which stream a guest wrote to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives a guest's output. Called from the guest's thread while it runs: keep it quick.
pub trait OutputSink: Send + Sync + fmt::Debug + 'static {
    /// Appends `bytes` written by the guest to `stream`.
    fn write(&self, stream: OutputStream, bytes: &[u8]);
}

/// A sink that drops everything (for guests whose output nobody wants).
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscardOutput;

impl OutputSink for DiscardOutput {
    fn write(&self, _stream: OutputStream, _bytes: &[u8]) {}
}

/// One of a guest's two output streams, as wasmtime-wasi wants it.
#[derive(Clone, Debug)]
pub(crate) struct SinkStream {
    sink: Arc<dyn OutputSink>,
    stream: OutputStream,
}

impl SinkStream {
    pub fn new(sink: Arc<dyn OutputSink>, stream: OutputStream) -> Self {
        Self { sink, stream }
    }
}

impl IsTerminal for SinkStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SinkStream {
    fn p2_stream(&self) -> Box<dyn P2OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl P2OutputStream for SinkStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.sink.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for SinkStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for SinkStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.sink.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
