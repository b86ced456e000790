//! The [`LogSink`] a runtime writes one container run's output to: splits the byte stream
//! into CRI log entries per stream, appends them to `<restart>.log`, and rotates the file by
//! size (`<restart>.log.<UTC time>`, oldest removed beyond the kept count).
//!
//! Runtimes call [`LogSink::write`] from the guest's own thread, so a write is one encode and
//! one `write(2)` under a short mutex; errors are logged (once) rather than surfaced, because
//! a full disk must not stop the container, only its logs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;

use super::format::encode;
use crate::runtime::{LogSink, LogStream};

/// A line longer than this is written as partial (`P`) entries, as CRI runtimes do, so one
/// endless line cannot grow memory without bound.
pub const MAX_LINE: usize = 16 * 1024;

/// When to rotate a container's log file and how many rotated files to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Rotate once the current file reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub max_files: usize,
}

impl Default for RotationPolicy {
    /// The kubelet's defaults: 10 MiB, five files in all.
    fn default() -> Self {
        RotationPolicy { max_bytes: 10 * 1024 * 1024, max_files: 4 }
    }
}

/// Writes one container run's log file.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    policy: RotationPolicy,
    state: Mutex<SinkState>,
}

#[derive(Debug)]
struct SinkState {
    file: Option<File>,
    size: u64,
    /// Bytes after the last newline, per stream (stdout, stderr).
    pending: [Vec<u8>; 2],
    failed: bool,
}

impl FileSink {
    /// Opens (appending to) `path`; its directory must exist.
    pub fn open(path: PathBuf, policy: RotationPolicy) -> std::io::Result<FileSink> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(FileSink {
            path,
            policy,
            state: Mutex::new(SinkState { file: Some(file), size, pending: [Vec::new(), Vec::new()], failed: false }),
        })
    }

    fn append(&self, state: &mut SinkState, out: &[u8]) {
        if out.is_empty() {
            return;
        }
        let result = match state.file.as_mut() {
            Some(file) => file.write_all(out),
            None => Err(std::io::Error::other("log file is not open")),
        };
        match result {
            Ok(()) => state.size += out.len() as u64,
            Err(e) => {
                if !std::mem::replace(&mut state.failed, true) {
                    tracing::warn!(path = %self.path.display(), error = %e, "writing container log failed; dropping output");
                }
                return;
            }
        }
        if state.size >= self.policy.max_bytes
            && let Err(e) = self.rotate(state)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "rotating container log failed");
        }
    }

    fn rotate(&self, state: &mut SinkState) -> std::io::Result<()> {
        let stamp = Timestamp::now().strftime("%Y%m%d-%H%M%S%.9f").to_string();
        let rotated = rotated_path(&self.path, &stamp);
        state.file = None;
        std::fs::rename(&self.path, &rotated)?;
        state.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        state.size = 0;
        let mut old = rotated_files(&self.path)?;
        while old.len() > self.policy.max_files {
            let oldest = old.remove(0);
            std::fs::remove_file(&oldest)?;
        }
        Ok(())
    }
}

/// `<restart>.log.<stamp>`.
fn rotated_path(current: &Path, stamp: &str) -> PathBuf {
    let mut name = current.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(stamp);
    current.with_file_name(name)
}

/// The rotated files of `current`, oldest first (the stamps sort as text).
pub fn rotated_files(current: &Path) -> std::io::Result<Vec<PathBuf>> {
    let Some(dir) = current.parent() else { return Ok(Vec::new()) };
    let prefix = format!("{}.", current.file_name().unwrap_or_default().to_string_lossy());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Splits `pending` into entries: every complete line as `F`, and while more than
/// [`MAX_LINE`] bytes remain without a newline, a `P` chunk.
fn drain_lines(out: &mut Vec<u8>, pending: &mut Vec<u8>, stream: LogStream, now: Timestamp) {
    let mut start = 0;
    while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
        let line = &pending[start..start + pos];
        encode(out, now, stream, true, line.strip_suffix(b"\r").unwrap_or(line));
        start += pos + 1;
    }
    while pending.len() - start > MAX_LINE {
        encode(out, now, stream, false, &pending[start..start + MAX_LINE]);
        start += MAX_LINE;
    }
    pending.drain(..start);
}

impl LogSink for FileSink {
    fn path(&self) -> Option<PathBuf> {
        Some(self.path.clone())
    }

    fn write(&self, stream: LogStream, bytes: &[u8]) {
        let Ok(mut state) = self.state.lock() else { return };
        let idx = usize::from(stream == LogStream::Stderr);
        state.pending[idx].extend_from_slice(bytes);
        let mut out = Vec::with_capacity(bytes.len() + 64);
        let mut pending = std::mem::take(&mut state.pending[idx]);
        drain_lines(&mut out, &mut pending, stream, Timestamp::now());
        state.pending[idx] = pending;
        self.append(&mut state, &out);
    }
}

impl Drop for FileSink {
    /// The run is over: text after the last newline is written as a final partial entry.
    fn drop(&mut self) {
        let Ok(mut state) = self.state.lock() else { return };
        let mut out = Vec::new();
        for (idx, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            let rest = std::mem::take(&mut state.pending[idx]);
            if !rest.is_empty() {
                encode(&mut out, Timestamp::now(), stream, false, &rest);
            }
        }
        self.append(&mut state, &out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::format::parse;

    fn entries(path: &Path) -> Vec<(bool, String)> {
        let text = std::fs::read(path).expect("read log");
        text.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse(l).expect("valid line"))
            .map(|e| (e.full, String::from_utf8(e.text).expect("utf8")))
            .collect()
    }

    #[test]
    fn splits_lines_and_keeps_partial_until_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let sink = FileSink::open(path.clone(), RotationPolicy::default()).expect("open");
        sink.write(LogStream::Stdout, b"one\ntw");
        sink.write(LogStream::Stderr, b"err\r\n");
        sink.write(LogStream::Stdout, b"o\nthree");
        assert_eq!(entries(&path), vec![(true, "one".into()), (true, "err".into()), (true, "two".into())]);
        drop(sink);
        assert_eq!(entries(&path).last(), Some(&(false, "three".to_string())));
    }

    #[test]
    fn long_lines_become_partial_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let sink = FileSink::open(path.clone(), RotationPolicy::default()).expect("open");
        sink.write(LogStream::Stdout, &vec![b'a'; MAX_LINE + 10]);
        sink.write(LogStream::Stdout, b"\n");
        let got = entries(&path);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, got[0].1.len()), (false, MAX_LINE));
        assert_eq!((got[1].0, got[1].1.len()), (true, 10));
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let sink = FileSink::open(path.clone(), RotationPolicy { max_bytes: 200, max_files: 2 }).expect("open");
        for i in 0..40 {
            sink.write(LogStream::Stdout, format!("line number {i}\n").as_bytes());
        }
        let rotated = rotated_files(&path).expect("list");
        assert_eq!(rotated.len(), 2, "only max_files rotated files are kept: {rotated:?}");
        // The last line is in the current file, or in the newest rotated one if it filled it.
        let newest = if entries(&path).is_empty() { rotated[1].clone() } else { path.clone() };
        assert_eq!(entries(&newest).last().map(|e| e.1.as_str()), Some("line number 39"));
        assert!(std::fs::metadata(&path).expect("current").len() < 200);
    }
}
