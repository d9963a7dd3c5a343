//! Resident memory of this process, read from `/proc/self/status` (Linux only).

/// Forgets the peak resident set size so far, so that the next [`peak_rss_mb`] covers only
/// what follows (Linux: writing `5` to `/proc/self/clear_refs`). `false` where unsupported.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The resident set size now, in MB (10^6 bytes).
pub fn rss_mb() -> Option<f64> {
    status_kib("VmRSS:").map(kib_to_mb)
}

/// The peak resident set size since start or the last [`reset_peak_rss`], in MB.
pub fn peak_rss_mb() -> Option<f64> {
    status_kib("VmHWM:").map(kib_to_mb)
}

fn status_kib(field: &str) -> Option<u64> {
    parse_status_kib(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields_of_proc_status() {
        let status = "Name:\tx\nVmHWM:\t  20480 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
        assert!((kib_to_mb(1000) - 1.024).abs() < 1e-9);
    }

    #[test]
    fn peak_is_at_least_current_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_mb().unwrap() >= rss_mb().unwrap() * 0.5);
        }
    }
}
