//! The CRI log line format, as containerd and CRI-O write it and the kubelet reads it:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>\n`, where `P` marks a partial line
//! (the text continues in the next entry) and `F` a full one.
//!
//! Pure encoding and parsing only; files, rotation and following live beside this.

use jiff::Timestamp;

use crate::runtime::LogStream;

/// One parsed log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub time: Timestamp,
    pub stream: LogStream,
    /// False for a `P` (partial) entry: its text has no line end of its own.
    pub full: bool,
    /// The text without the trailing newline.
    pub text: Vec<u8>,
}

fn stream_name(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    }
}

/// RFC3339 with nanoseconds in UTC, the form the kubelet prints with `--timestamps`.
pub fn format_time(time: Timestamp) -> String {
    // `%.9f` always writes nine digits, so lines sort and compare as text too.
    time.strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// Appends one entry (`text` must not contain `\n`) to `out`.
pub fn encode(out: &mut Vec<u8>, time: Timestamp, stream: LogStream, full: bool, text: &[u8]) {
    out.extend_from_slice(format_time(time).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream_name(stream).as_bytes());
    out.extend_from_slice(if full { b" F " } else { b" P " });
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Parses one line (without its `\n`). Lines that are not in the format give `None` and are
/// skipped by readers rather than failing a whole `kubectl logs`.
pub fn parse(line: &[u8]) -> Option<LogEntry> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse::<Timestamp>().ok()?;
    let stream = match parts.next()? {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let text = parts.next().unwrap_or_default().to_vec();
    Some(LogEntry { time, stream, full, text })
}

/// What a reader prints for one entry: the text, a newline unless partial, and with
/// `timestamps` the entry's time in front (as the kubelet does).
pub fn render(out: &mut Vec<u8>, entry: &LogEntry, timestamps: bool) {
    if timestamps {
        out.extend_from_slice(format_time(entry.time).as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&entry.text);
    if entry.full {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_parses_full_and_partial_lines() {
        let t: Timestamp = "2024-05-01T10:20:30.000000123Z".parse().expect("time");
        let mut out = Vec::new();
        encode(&mut out, t, LogStream::Stdout, true, b"hello world");
        encode(&mut out, t, LogStream::Stderr, false, b"part");
        let text = String::from_utf8(out.clone()).expect("utf8");
        assert_eq!(
            text,
            "2024-05-01T10:20:30.000000123Z stdout F hello world\n2024-05-01T10:20:30.000000123Z stderr P part\n"
        );
        let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        let first = parse(lines[0]).expect("first");
        assert_eq!(
            (first.time, first.stream, first.full, first.text.as_slice()),
            (t, LogStream::Stdout, true, &b"hello world"[..])
        );
        let second = parse(lines[1]).expect("second");
        assert_eq!((second.stream, second.full, second.text.as_slice()), (LogStream::Stderr, false, &b"part"[..]));
    }

    #[test]
    fn empty_text_and_garbage() {
        let entry = parse(b"2024-05-01T10:20:30.5Z stdout F").expect("no text is an empty line");
        assert!(entry.text.is_empty());
        assert_eq!(parse(b"not a log line"), None);
        assert_eq!(parse(b"2024-05-01T10:20:30Z stdin F x"), None);
    }

    #[test]
    fn renders_with_and_without_timestamps() {
        let entry = LogEntry {
            time: "2024-05-01T10:20:30Z".parse().expect("time"),
            stream: LogStream::Stdout,
            full: true,
            text: b"x".to_vec(),
        };
        let mut out = Vec::new();
        render(&mut out, &entry, false);
        render(&mut out, &entry, true);
        assert_eq!(String::from_utf8(out).expect("utf8"), "x\n2024-05-01T10:20:30.000000000Z x\n");
    }
}
