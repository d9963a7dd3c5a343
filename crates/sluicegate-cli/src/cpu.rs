//! CPU time used by this process (all threads, user + system), read from `/proc/self/stat`.

/// Clock ticks per second of `/proc` times: `USER_HZ`, which Linux fixes at 100 on every
/// architecture it exposes to user space.
const USER_HZ: f64 = 100.0;

/// User plus system CPU seconds this process has used so far; `None` off Linux.
pub fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat)
}

/// Reads utime and stime (fields 14 and 15) out of a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may contain spaces, so fields are counted after its
/// closing parenthesis.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_and_system_ticks_after_the_command_name() {
        let line = "4242 (my prog) S 1 4242 4242 0 -1 4194304 1000 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_stat(line), Some(3.0));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_this_process_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(process_cpu_secs().is_some());
        }
    }
}
