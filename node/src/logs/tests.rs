use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;

use super::*;
use crate::runtime::{LogSink, LogStream};

fn pod() -> PodRef {
    PodRef { namespace: "ns1".into(), name: "web".into(), uid: "uid-1".into() }
}

async fn collect(store: &LogStore, container: &str, opts: LogOptions) -> Result<String, LogError> {
    let mut body = store.read("ns1", "web", container, opts).await?;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    Ok(String::from_utf8(out).expect("utf8"))
}

#[tokio::test]
async fn tail_timestamps_and_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LogStore::new(dir.path());
    let sink = store.open(&pod(), "app", 0).expect("open");
    sink.write(LogStream::Stdout, b"a\nb\nc\n");
    sink.write(LogStream::Stderr, b"d\n");
    assert_eq!(collect(&store, "app", LogOptions::default()).await.expect("all"), "a\nb\nc\nd\n");
    let tail = LogOptions { tail_lines: Some(2), ..Default::default() };
    assert_eq!(collect(&store, "app", tail).await.expect("tail"), "c\nd\n");
    let limited = LogOptions { limit_bytes: Some(3), ..Default::default() };
    assert_eq!(collect(&store, "app", limited).await.expect("limit"), "a\nb");
    let stamped = collect(&store, "app", LogOptions { timestamps: true, tail_lines: Some(1), ..Default::default() })
        .await
        .expect("ts");
    let (time, text) = stamped.split_once(' ').expect("timestamp prefix");
    assert!(time.parse::<Timestamp>().is_ok(), "{stamped}");
    assert_eq!(text, "d\n");
}

#[tokio::test]
async fn since_filters_by_entry_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LogStore::new(dir.path());
    let sink = store.open(&pod(), "app", 0).expect("open");
    sink.write(LogStream::Stdout, b"old\n");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let cut = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    sink.write(LogStream::Stdout, b"new\n");
    let since = LogOptions { since: Some(cut), ..Default::default() };
    assert_eq!(collect(&store, "app", since).await.expect("since"), "new\n");
}

#[tokio::test]
async fn previous_run_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LogStore::new(dir.path());
    let err = collect(&store, "app", LogOptions::default()).await.expect_err("no pod yet");
    assert_eq!(err.to_string(), "container \"app\" in pod \"web\" is waiting to start: ContainerCreating");
    store.open(&pod(), "app", 0).expect("open run 0").write(LogStream::Stdout, b"run zero\n");
    let err =
        collect(&store, "app", LogOptions { previous: true, ..Default::default() }).await.expect_err("no previous");
    assert_eq!(err.to_string(), "previous terminated container \"app\" in pod \"web\" not found");
    let err = collect(&store, "other", LogOptions::default()).await.expect_err("not started");
    assert_eq!(err.to_string(), "container \"other\" in pod \"web\" is waiting to start: ContainerCreating");
    store.open(&pod(), "app", 1).expect("open run 1").write(LogStream::Stdout, b"run one\n");
    assert_eq!(collect(&store, "app", LogOptions::default()).await.expect("latest"), "run one\n");
    let previous = LogOptions { previous: true, ..Default::default() };
    assert_eq!(collect(&store, "app", previous).await.expect("previous"), "run zero\n");
}

#[tokio::test]
async fn rotated_files_are_read_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LogStore::new(dir.path()).with_policy(RotationPolicy { max_bytes: 150, max_files: 10 });
    let sink = store.open(&pod(), "app", 0).expect("open");
    let mut expected = String::new();
    for i in 0..20 {
        sink.write(LogStream::Stdout, format!("line {i}\n").as_bytes());
        expected.push_str(&format!("line {i}\n"));
    }
    let run = store.find_run("ns1", "web", "app", false).expect("run");
    assert!(!writer::rotated_files(&run.path()).expect("list").is_empty(), "rotation happened");
    assert_eq!(collect(&store, "app", LogOptions::default()).await.expect("all"), expected);
}

async fn next(body: &mut LogBody) -> Option<std::io::Result<bytes::Bytes>> {
    tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("chunk in time")
}

#[tokio::test]
async fn follow_sees_new_lines_and_ends_with_a_newer_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LogStore::new(dir.path()).with_policy(RotationPolicy { max_bytes: 100, max_files: 10 });
    let sink = store.open(&pod(), "app", 0).expect("open");
    sink.write(LogStream::Stdout, b"first\n");
    let opts = LogOptions { follow: true, ..Default::default() };
    let mut body = store.read("ns1", "web", "app", opts).await.expect("follow");
    assert_eq!(next(&mut body).await.expect("some").expect("ok"), "first\n");
    // Enough lines to rotate underneath the follower.
    let mut expected = String::new();
    for i in 0..10 {
        sink.write(LogStream::Stdout, format!("later {i}\n").as_bytes());
        expected.push_str(&format!("later {i}\n"));
    }
    let mut got = String::new();
    while got.len() < expected.len() {
        let chunk = next(&mut body).await.expect("more").expect("ok");
        got.push_str(std::str::from_utf8(&chunk).expect("utf8"));
    }
    assert_eq!(got, expected);
    drop(sink);
    store.open(&pod(), "app", 1).expect("next run");
    assert!(next(&mut body).await.is_none(), "follow ends once a newer run exists");
}
