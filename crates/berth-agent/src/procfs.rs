//! Reads from `/proc`: process identity (to tell a live instance from a recycled pid),
//! machine resources and load.

use std::path::Path;

/// What identifies one process across agent restarts: a pid alone can be reused by the
/// kernel, but a pid with the same start time (in clock ticks since boot) on the same boot
/// is the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// One-letter state: R, S, D, Z (zombie), X (dead), T, ...
    pub state: char,
    pub start_ticks: u64,
}

impl ProcStat {
    /// Whether the process still runs (a zombie has exited and only waits to be reaped).
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `/proc/<pid>/stat`; `None` when the process does not exist (any more).
pub fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the stat line. The command name (field 2) sits in parentheses and may itself
/// contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, field 22 (starttime) is index 19.
    let state = fields.first()?.chars().next()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// Whether `pid` still runs and is the very process that was started with `start_ticks`.
pub fn is_same_live_process(pid: u32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|stat| stat.start_ticks == start_ticks && stat.is_alive())
}

/// Identifies the current boot; start ticks only compare within one boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|text| text.trim().to_string())
        .unwrap_or_default()
}

/// Total memory in MiB from `/proc/meminfo`.
pub fn mem_total_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total_mib(&text)
}

fn parse_meminfo_total_mib(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// CPUs this process may use (honours affinity masks and cgroup quotas via std).
pub fn cpus() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0)
}

/// Free space in MiB of the file system holding `path`.
pub fn disk_free_mib(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64 / (1024 * 1024))
}

/// One-minute load average from `/proc/loadavg`.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_name_has_spaces_and_parens() {
        let line = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.start_ticks, 987654);
        assert!(stat.is_alive());
    }

    #[test]
    fn a_zombie_is_not_alive_and_garbage_is_rejected() {
        let line = "7 (sh) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0 0";
        assert!(!parse_stat(line).unwrap().is_alive());
        assert_eq!(parse_stat("no parens here"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn reads_this_process_and_rejects_a_wrong_start_time() {
        let me = std::process::id();
        let stat = stat(me).expect("own stat");
        assert!(is_same_live_process(me, stat.start_ticks));
        assert!(!is_same_live_process(me, stat.start_ticks + 1));
        assert!(!boot_id().is_empty());
    }

    #[test]
    fn parses_meminfo() {
        assert_eq!(
            parse_meminfo_total_mib("MemTotal:       2048000 kB\nMemFree: 1 kB\n"),
            Some(2000)
        );
        assert!(mem_total_mib().unwrap() > 0);
    }
}
