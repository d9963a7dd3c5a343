//! CPU time used by this process (all threads, user + system), from `/proc/self/stat` as the
//! `procfs` crate reads it.

/// User plus system CPU seconds this process has used so far; `None` off Linux.
pub fn process_cpu_secs() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_work_on_linux() {
        if cfg!(target_os = "linux") {
            let before = process_cpu_secs().unwrap();
            let started = std::time::Instant::now();
            let mut x = 0u64;
            // Spin for 50 ms of wall time: at least a tick (10 ms) of CPU.
            while started.elapsed() < std::time::Duration::from_millis(50) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
            }
            assert!(process_cpu_secs().unwrap() > before);
        }
    }
}
