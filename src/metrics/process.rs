//! The standard `process_*` metrics, read from `/proc/self` (Linux). Elsewhere, or if a file cannot
//! be read, the affected metrics are simply left out.

use std::fmt::Write;

/// What `/proc/self` says about this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    /// Unix time the process started.
    pub start_time_seconds: f64,
}

/// Reads `/proc/self/stat` (+ `/proc/stat` for the boot time). `None` if unavailable.
pub fn read_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat, clock_ticks()?, page_size()?, boot_time())
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may contain
/// spaces and ')' itself, so fields are counted from the LAST ')'.
pub fn parse_stat(stat: &str, ticks_per_s: f64, page: u64, btime: Option<u64>) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field k (1-based, man 5 proc) is f[k - 3].
    let field = |k: usize| -> Option<u64> { f.get(k - 3)?.parse().ok() };
    let utime = field(14)?;
    let stime = field(15)?;
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let vsize = field(23)?;
    let rss_pages = field(24)?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks_per_s,
        resident_bytes: rss_pages * page,
        virtual_bytes: vsize,
        threads,
        start_time_seconds: btime.map_or(0.0, |b| b as f64 + start_ticks as f64 / ticks_per_s),
    })
}

fn clock_ticks() -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (t > 0).then_some(t as f64)
}

fn page_size() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (p > 0).then_some(p as u64)
}

fn boot_time() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

fn open_fds() -> Option<u64> {
    // The directory handle itself is one of the entries while we read it; count it like other
    // exporters do (it is an open fd at that moment).
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
fn max_fds() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: r is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (rc == 0 && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur as u64)
}

/// Appends the process families in Prometheus text format.
pub fn render(out: &mut String) {
    fn family(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    if let Some(s) = read_stats() {
        family(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", s.cpu_seconds);
        family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", s.resident_bytes);
        family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", s.virtual_bytes);
        if s.start_time_seconds > 0.0 {
            family(out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", s.start_time_seconds);
        }
        family(out, "process_threads", "gauge", "Number of OS threads in the process.", s.threads);
    }
    if let Some(n) = open_fds() {
        family(out, "process_open_fds", "gauge", "Number of open file descriptors.", n);
    }
    if let Some(n) = max_fds() {
        family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.", n);
    }
}
