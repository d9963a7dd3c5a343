//! Resident memory of this process, from `/proc/self/status` as the `procfs` crate reads it
//! (Linux only).

use procfs::process::{ClearRefs, Process};

/// Forgets the peak resident set size so far, so that the next [`peak_rss_mb`] covers only
/// what follows (Linux: `/proc/self/clear_refs`). `false` where unsupported.
pub fn reset_peak_rss() -> bool {
    Process::myself().is_ok_and(|p| p.clear_refs(ClearRefs::PeakRSS).is_ok())
}

/// The resident set size now, in MB (10^6 bytes).
pub fn rss_mb() -> Option<f64> {
    Some(kib_to_mb(Process::myself().ok()?.status().ok()?.vmrss?))
}

/// The peak resident set size since start or the last [`reset_peak_rss`], in MB.
pub fn peak_rss_mb() -> Option<f64> {
    Some(kib_to_mb(Process::myself().ok()?.status().ok()?.vmhwm?))
}

pub(crate) fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}
