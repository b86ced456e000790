//! Handing freed heap memory back to the OS.
//!
//! glibc malloc keeps what a thread frees in that thread's arena, at its high-water mark. This
//! process's memory peaks are one-off — compiling a component (cranelift, on blocking threads),
//! building the OpenAPI documents, serving a large list — so without trimming an idle node kept
//! tens of MiB it no longer used (the first pod of an artifact added ~30 MiB that stayed), and
//! the footprint targets count resident memory. `malloc_trim` walks every arena and returns
//! their free pages; on a heap this size it takes well under a millisecond, so doing it every few
//! seconds costs nothing measurable. (mimalloc was tried instead and kept more resident: pages it
//! releases with `MADV_FREE` and segments of exited threads still count in RSS.)

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often freed memory is handed back.
const PERIOD: Duration = Duration::from_secs(3);

/// Trims the heap every [`PERIOD`] until `shutdown`.
pub async fn trimmer(shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PERIOD) => trim(),
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one foreign call of the binary; see the SAFETY note
fn trim() {
    // SAFETY: `malloc_trim` takes no pointers and is thread-safe (it locks each arena while it
    // works); its only effect is releasing free pages, and it cannot fail in a way we must handle.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl) have no arenas to trim.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
