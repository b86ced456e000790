//! `cli-probe`: a `wasi:cli` command whose arguments choose what it does.
//!
//! `exit N` · `print TEXT` (stdout) · `eprint TEXT` (stderr) · `alloc MB` (allocate and touch)
//! · `cat PATH` · `write PATH` (writes `written`) · `env NAME` · `sleep MS` · `serve PORT`
//! (answers every HTTP request with `cli-probe`, forever) · `get ADDR PATH` (an HTTP GET over
//! `wasi:sockets`, retried for 30 s until something listens; prints the body) · `spin` (burns CPU forever) ·
//! `trap` (panics → wasm trap).
//! Several commands may follow each other: `print a sleep 10 exit 3`.

use std::io::{Read as _, Write as _};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter().map(String::as_str);
    while let Some(cmd) = it.next() {
        let mut arg = || it.next().unwrap_or_else(|| fail(&format!("{cmd}: missing argument")));
        match cmd {
            "exit" => std::process::exit(arg().parse().unwrap_or_else(|_| fail("exit: not a number"))),
            "print" => println!("{}", arg()),
            "eprint" => eprintln!("{}", arg()),
            "alloc" => {
                let mb: usize = arg().parse().unwrap_or_else(|_| fail("alloc: not a number"));
                let mut block = vec![0u8; mb << 20];
                for i in (0..block.len()).step_by(4096) {
                    block[i] = 1;
                }
                println!("allocated {} MiB", std::hint::black_box(&block).len() >> 20);
            }
            "cat" => match std::fs::read_to_string(arg()) {
                Ok(text) => print!("{text}"),
                Err(e) => fail(&format!("cat: {e}")),
            },
            "write" => match std::fs::write(arg(), b"written") {
                Ok(()) => println!("written"),
                Err(e) => fail(&format!("write: {e}")),
            },
            "env" => match std::env::var(arg()) {
                Ok(v) => println!("{v}"),
                Err(e) => fail(&format!("env: {e}")),
            },
            "sleep" => {
                let ms: u64 = arg().parse().unwrap_or_else(|_| fail("sleep: not a number"));
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            "serve" => serve(arg()),
            "get" => {
                let addr = arg().to_owned();
                print!("{}", get(&addr, arg()));
                let _ = std::io::stdout().flush();
            }
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "trap" => panic!("cli-probe: trap requested"),
            other => fail(&format!("unknown command {other}")),
        }
    }
    let _ = std::io::stdout().flush();
}

fn serve(port: &str) -> ! {
    let listener =
        std::net::TcpListener::bind(format!("0.0.0.0:{port}")).unwrap_or_else(|e| fail(&format!("serve: bind: {e}")));
    println!("listening on {port}");
    let _ = std::io::stdout().flush();
    loop {
        let Ok((mut conn, _)) = listener.accept() else { continue };
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let body = "cli-probe";
        let _ = write!(conn, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    }
}

/// `GET path` from `addr` (`IP:PORT`) with HTTP/1.0, so the body ends where the connection does.
fn get(addr: &str, path: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut conn = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(conn) => break conn,
            Err(e) if std::time::Instant::now() > deadline => fail(&format!("get: connect {addr}: {e}")),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    };
    let _ = write!(conn, "GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n");
    let mut response = String::new();
    if let Err(e) = conn.read_to_string(&mut response) {
        fail(&format!("get: reading from {addr}: {e}"));
    }
    match response.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_owned(),
        None => fail(&format!("get: no HTTP response from {addr}: {response:?}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("cli-probe: {message}");
    std::process::exit(2)
}
