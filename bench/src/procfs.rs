//! Memory use of a process from `/proc/<pid>/status` (Linux only).

use anyhow::{Context, Result};

/// Resident set size now and its high-water mark, in MiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_mib: f64,
    /// `VmHWM` (peak RSS since start).
    pub hwm_mib: f64,
}

/// Reads `VmRSS` and `VmHWM` of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(Memory {
        rss_mib: kib_field(&status, "VmRSS").context("no VmRSS")? / 1024.0,
        hwm_mib: kib_field(&status, "VmHWM").context("no VmHWM")? / 1024.0,
    })
}

fn kib_field(status: &str, key: &str) -> Option<f64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory() {
        let m = memory(std::process::id()).expect("own status");
        assert!(m.rss_mib > 0.0 && m.hwm_mib >= m.rss_mib);
    }

    #[test]
    fn parses_kib() {
        assert_eq!(kib_field("VmRSS:\t  2048 kB\n", "VmRSS"), Some(2048.0));
    }
}
