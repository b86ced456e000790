//! hello-job: a run-to-completion Skiff workload (a `wasi:cli` command). Prints a greeting and
//! its arguments, then exits 0 — a Pod with `restartPolicy: Never` ends `Succeeded`.

fn main() {
    let who = skiff_sdk::config("WHO").unwrap_or_else(|| "world".to_owned());
    println!("Hello, {who}, from a Skiff job");
    for (i, arg) in std::env::args().skip(1).enumerate() {
        println!("arg {i}: {arg}");
    }
}
