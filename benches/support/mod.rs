//! What the benches share.

/// A process's resident memory in KiB (`"self"` for this one), from `/proc/<pid>/status`.
pub fn rss_kib(pid: impl std::fmt::Display) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
