//! hello-http: the smallest useful Skiff function. Answers every request with a greeting and
//! the path it was asked for. `GREETING` (env or a `/config/GREETING` file) overrides the
//! greeting, to show config access.

use skiff_sdk::{Request, Response};

fn hello(req: Request) -> Response {
    let greeting = skiff_sdk::config("GREETING").unwrap_or_else(|| "Hello from Skiff".to_owned());
    Response::text(format!("{greeting}: {}\n", req.path()))
}

skiff_sdk::http_handler!(hello);
