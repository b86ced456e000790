//! `http-probe`: a `wasi:http` guest whose routes exercise what the runtime must enforce.
//!
//! `/` → `ok`; `/env/NAME` → the env value (404 if unset); `/file?path=P` → file contents;
//! `/write?path=P` → writes `written` to P (200, or 500 with the error); `/alloc?mb=N` →
//! allocates and touches N MiB; `/loop` → never returns; `/sleep?ms=N` → sleeps, then `slept`;
//! `/headers` → the request's headers (`headers.rs`).

use skiff_sdk::{Request, Response};

mod headers;

fn handle(req: Request) -> Response {
    let path = req.path().to_owned();
    match path.as_str() {
        "/" => Response::text("ok"),
        "/headers" => headers::echo(&req),
        "/file" => match req.query("path").map(std::fs::read) {
            Some(Ok(bytes)) => Response::new(200, bytes),
            Some(Err(e)) => Response::status_text(500, format!("read failed: {e}")),
            None => Response::status_text(400, "missing ?path="),
        },
        "/write" => match req.query("path").map(|p| std::fs::write(p, b"written")) {
            Some(Ok(())) => Response::text("written"),
            Some(Err(e)) => Response::status_text(500, format!("write failed: {e}")),
            None => Response::status_text(400, "missing ?path="),
        },
        "/alloc" => {
            let mb: usize = req.query("mb").and_then(|v| v.parse().ok()).unwrap_or(1);
            let mut block = vec![0u8; mb << 20];
            // Touch every page so the memory is really used, whatever the allocator did.
            for i in (0..block.len()).step_by(4096) {
                block[i] = 1;
            }
            let sum: usize = std::hint::black_box(&block).iter().step_by(4096).map(|b| *b as usize).sum();
            Response::text(format!("allocated {mb} MiB ({sum} pages)"))
        }
        "/loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/sleep" => {
            let ms: u64 = req.query("ms").and_then(|v| v.parse().ok()).unwrap_or(100);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Response::text("slept")
        }
        _ => match path.strip_prefix("/env/") {
            Some(name) => match std::env::var(name) {
                Ok(v) => Response::text(v),
                Err(_) => Response::status_text(404, format!("{name} is not set")),
            },
            None => Response::status_text(404, format!("no route {path}")),
        },
    }
}

skiff_sdk::http_handler!(handle);
