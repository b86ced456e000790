//! Reading one container run's log the way `kubectl logs` asks: since a time, the last N
//! lines, with timestamps, at most N bytes, and following new output.
//!
//! A follow ends when the run is over for good — a newer run's file appears (the container
//! restarted) or the pod's logs are removed (the pod is gone) — or when the client goes away
//! (the stream is dropped). Rotation while following is handled by draining the open file
//! before switching to the new one, so no line is lost or repeated.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use jiff::Timestamp;

use super::format::{LogEntry, parse, render};
use super::writer::rotated_files;
use super::{LogError, RunLog, run_numbers};

/// How often a follow looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// A log as a stream of byte chunks (what an HTTP body is built from).
pub type LogBody = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The options of `GET /containerLogs` (and of the `pods/log` subresource).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    /// Only the last N lines (of those after `since`).
    pub tail_lines: Option<u64>,
    /// Only entries at or after this time.
    pub since: Option<Timestamp>,
    /// Prefix each line with its RFC3339Nano time.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// Parses complete lines of `bytes`, leaving an unterminated tail in `carry`.
fn parse_chunk(carry: &mut Vec<u8>, bytes: &[u8]) -> Vec<LogEntry> {
    carry.extend_from_slice(bytes);
    let Some(last_nl) = carry.iter().rposition(|b| *b == b'\n') else { return Vec::new() };
    let complete: Vec<u8> = carry.drain(..=last_nl).collect();
    complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()).filter_map(parse).collect()
}

/// Selects and renders entries: `since` first, then the last `tail_lines`, then the limit.
pub fn select(entries: Vec<LogEntry>, opts: &LogOptions) -> Vec<u8> {
    let mut kept: Vec<LogEntry> = entries.into_iter().filter(|e| opts.since.is_none_or(|s| e.time >= s)).collect();
    if let Some(n) = opts.tail_lines {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let skip = kept.len().saturating_sub(n);
        kept.drain(..skip);
    }
    let mut out = Vec::new();
    for entry in &kept {
        render(&mut out, entry, opts.timestamps);
    }
    if let Some(limit) = opts.limit_bytes {
        out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    out
}

/// Follow state: the open current file, where we are in it, and what was sent.
struct Follower {
    run: RunLog,
    file: File,
    ino: u64,
    /// Files still to read before the current one, after a rotation.
    queue: std::collections::VecDeque<std::path::PathBuf>,
    carry: Vec<u8>,
    opts: LogOptions,
    sent: u64,
}

impl Follower {
    fn read_new(&mut self) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.file.read_to_end(&mut bytes)?;
        let entries = parse_chunk(&mut self.carry, &bytes);
        let mut out = Vec::new();
        for e in entries.iter().filter(|e| self.opts.since.is_none_or(|s| e.time >= s)) {
            render(&mut out, e, self.opts.timestamps);
        }
        if let Some(limit) = self.opts.limit_bytes {
            out.truncate(usize::try_from(limit.saturating_sub(self.sent)).unwrap_or(usize::MAX));
        }
        self.sent += out.len() as u64;
        Ok(out)
    }

    fn limit_reached(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.sent >= l)
    }

    /// At the end of the open file: continue with the next file of the run, if the one we
    /// read was rotated away. Every file rotated after ours is read in order before the new
    /// current one, so bursts that rotate several times between polls lose nothing.
    fn advance(&mut self) -> std::io::Result<bool> {
        let current = self.run.path();
        if self.queue.is_empty() {
            match std::fs::metadata(&current) {
                Ok(meta) if meta.ino() != self.ino => {}
                _ => return Ok(false),
            }
            let rotated = rotated_files(&current)?;
            let inos: Vec<u64> = rotated.iter().map(|p| std::fs::metadata(p).map(|m| m.ino()).unwrap_or(0)).collect();
            // Ours not among them: it was pruned, and pruning removes the oldest, so every
            // remaining rotated file is newer.
            let start = inos.iter().position(|i| *i == self.ino).map_or(0, |p| p + 1);
            self.queue.extend(rotated.into_iter().skip(start));
            self.queue.push_back(current);
        }
        while let Some(path) = self.queue.pop_front() {
            match File::open(&path) {
                Ok(file) => {
                    self.ino = file.metadata()?.ino();
                    self.file = file;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// A newer run exists or the pod's logs are gone: nothing more will be written here.
    fn run_is_over(&self) -> bool {
        !self.run.container_dir.exists() || run_numbers(&self.run.container_dir).iter().any(|r| *r > self.run.restart)
    }

    /// The next chunk of followed output, or `None` at the end.
    async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            if self.limit_reached() {
                return None;
            }
            // Checked before reading so the last lines of a finished run are still sent.
            let over = self.run_is_over();
            match self.read_new() {
                Ok(out) if !out.is_empty() => return Some(Ok(Bytes::from(out))),
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            match self.advance() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Some(Err(e)),
            }
            if over {
                return None;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// Reads what exists now (blocking file I/O) and opens the current file for following.
fn read_initial(run: RunLog, opts: LogOptions) -> Result<(Vec<u8>, Follower), LogError> {
    let current = run.path();
    let io = |path: &std::path::Path, e| LogError::Io { path: path.to_path_buf(), source: e };
    let mut entries = Vec::new();
    let mut carry = Vec::new();
    for path in rotated_files(&current).map_err(|e| io(&current, e))? {
        // A rotated file may vanish under us (pruned); that only loses the oldest lines.
        if let Ok(bytes) = std::fs::read(&path) {
            let mut own_carry = Vec::new();
            entries.extend(parse_chunk(&mut own_carry, &bytes));
        }
    }
    let mut file = File::open(&current).map_err(|e| io(&current, e))?;
    let ino = file.metadata().map_err(|e| io(&current, e))?.ino();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| io(&current, e))?;
    entries.extend(parse_chunk(&mut carry, &bytes));
    let initial = select(entries, &opts);
    let sent = initial.len() as u64;
    Ok((initial, Follower { run, file, ino, queue: Default::default(), carry, opts, sent }))
}

/// The log of `run` as a stream; see [`LogOptions`].
pub async fn read(run: RunLog, opts: LogOptions) -> Result<LogBody, LogError> {
    let follow = opts.follow && !opts.previous;
    let (initial, follower) = tokio::task::spawn_blocking(move || read_initial(run, opts))
        .await
        .map_err(|e| LogError::Io { path: Default::default(), source: std::io::Error::other(e) })??;
    let first = futures::stream::iter((!initial.is_empty()).then(|| Ok(Bytes::from(initial))));
    if !follow {
        return Ok(first.boxed());
    }
    let rest = futures::stream::unfold(follower, |mut f| async move { f.next_chunk().await.map(|chunk| (chunk, f)) });
    Ok(first.chain(rest).boxed())
}
