//! The process collector: CPU, memory, file descriptors and start time of this process, named
//! as Prometheus' own process collector names them, read from /proc at every scrape (Linux
//! only; elsewhere nothing is rendered). Parsing is kept apart from reading so it can be tested
//! on fixed text.

use std::fmt::Write;

/// One reading of the process.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// What `/proc/self/stat` holds, in the units the kernel gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub cpu_ticks: u64,
    pub start_ticks_after_boot: u64,
    pub virtual_bytes: u64,
    pub resident_pages: u64,
}

/// Parses `/proc/<pid>/stat`. Fields are counted after the command name, which is in
/// parentheses and may itself hold spaces or parentheses.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // proc(5) numbers fields from 1 with the pid; the first after the name is field 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks_after_boot: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// Boot time in seconds since the epoch, from `/proc/stat`'s `btime` line.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// The soft limit on open files, from `/proc/<pid>/limits`.
pub fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Combines the readings into a sample, given the kernel's tick rate and page size.
pub fn sample(
    stat: Stat,
    boot_time: u64,
    ticks_per_second: u64,
    page_size: u64,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
) -> Sample {
    let ticks = ticks_per_second.max(1) as f64;
    Sample {
        cpu_seconds: stat.cpu_ticks as f64 / ticks,
        resident_bytes: stat.resident_pages * page_size,
        virtual_bytes: stat.virtual_bytes,
        start_time_seconds: boot_time as f64 + stat.start_ticks_after_boot as f64 / ticks,
        open_fds,
        max_fds,
    }
}

/// Prometheus text for `sample`.
pub fn format(sample: &Sample) -> String {
    let mut out = String::with_capacity(768);
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        sample.cpu_seconds,
    );
    family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", sample.resident_bytes as f64);
    family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", sample.virtual_bytes as f64);
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        sample.start_time_seconds,
    );
    if let Some(open) = sample.open_fds {
        family("process_open_fds", "gauge", "Number of open file descriptors.", open as f64);
    }
    if let Some(max) = sample.max_fds {
        family("process_max_fds", "gauge", "Maximum number of open file descriptors.", max as f64);
    }
    out
}

/// Reads this process now; `None` where /proc is not there.
#[cfg(target_os = "linux")]
pub fn read() -> Option<Sample> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let boot_time = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|entries| entries.count() as u64);
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| parse_max_fds(&t));
    Some(sample(stat, boot_time, u64::try_from(ticks).ok()?, u64::try_from(page).ok()?, open_fds, max_fds))
}

#[cfg(not(target_os = "linux"))]
pub fn read() -> Option<Sample> {
    None
}

/// Prometheus text for this process now (empty where it cannot be read).
pub fn render() -> String {
    read().map(|s| format(&s)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (fab rikam (x)) S 1 4242 4242 0 -1 4194560 2500 0 0 0 \
        150 50 0 0 20 0 9 0 12345 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17638 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_stat_with_a_name_holding_spaces_and_parentheses() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(
            stat,
            Stat { cpu_ticks: 200, start_ticks_after_boot: 12345, virtual_bytes: 987654321, resident_pages: 2048 }
        );
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
    }

    #[test]
    fn parses_boot_time_and_fd_limit() {
        assert_eq!(parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
    }

    #[test]
    fn combines_units() {
        let stat = parse_stat(STAT).unwrap();
        let s = sample(stat, 1_700_000_000, 100, 4096, Some(12), Some(1024));
        assert_eq!(s.cpu_seconds, 2.0);
        assert_eq!(s.resident_bytes, 2048 * 4096);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 123.45);
        let text = format(&s);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 2\n"), "{text}");
        assert!(text.contains("process_open_fds 12\n"), "{text}");
        assert!(text.contains("process_max_fds 1024\n"), "{text}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let before = read().unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let after = read().unwrap();
        drop(file);
        assert!(before.resident_bytes > 1024 * 1024, "{before:?}");
        assert!(after.open_fds.unwrap() >= 1);
        assert!(before.max_fds.unwrap() >= 1);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        // Started within the last day, and not in the future (allowing for tick rounding).
        assert!(before.start_time_seconds <= now + 1.0 && before.start_time_seconds > now - 86_400.0, "{before:?}");
        assert!(after.cpu_seconds >= before.cpu_seconds);
    }
}
