//! What the process costs, read from Linux's `/proc/self`. `scale` and `soak` judge
//! wirelane by these figures, so they come from the kernel rather than estimates: a
//! thread or an allocation the library forgot shows up here whatever its own
//! counters say.

use std::fs;
use std::io;

use wirelane::PeerId;

/// Threads and resident memory of the whole process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// The entries of `/proc/self/task`.
    pub threads: usize,
    /// `VmRSS` in `/proc/self/status`.
    pub rss_kib: u64,
}

/// The process's threads and resident memory now.
///
/// # Errors
///
/// Fails if `/proc` is not mounted (not Linux) or has no readable `VmRSS` line.
pub fn usage() -> io::Result<Usage> {
    let status = fs::read_to_string("/proc/self/status")?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS line in /proc/self/status"))?;
    let threads = fs::read_dir("/proc/self/task")?.count();
    Ok(Usage { threads, rss_kib })
}

/// The names of this process's threads; a thread that ends meanwhile is skipped.
///
/// # Errors
///
/// Fails if `/proc/self/task` cannot be read.
pub fn thread_names() -> io::Result<Vec<String>> {
    let tasks = fs::read_dir("/proc/self/task")?.flatten();
    Ok(tasks
        .filter_map(|task| fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect())
}

/// How many of `names` are reader and writer threads of node `id`: wirelane names
/// them after the node and the connection (`wl1-r7` reads and `wl1-w7` writes
/// connection 7 of node 1), well within the 15 bytes of a name Linux keeps.
pub fn conn_threads(names: &[String], id: PeerId) -> (usize, usize) {
    let count = |what| {
        let prefix = format!("wl{}-{what}", id.0);
        names.iter().filter(|n| n.starts_with(&prefix)).count()
    };
    (count('r'), count('w'))
}

/// File descriptors this process has open now.
///
/// # Errors
///
/// Fails if `/proc/self/fd` cannot be read.
pub fn open_fds() -> io::Result<usize> {
    Ok(fs::read_dir("/proc/self/fd")?.count())
}

/// The soft limit on open file descriptors (`ulimit -n`), if it can be read and is
/// not "unlimited".
pub fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether `e` says the process (`EMFILE`, 24) or the system (`ENFILE`, 23) is out
/// of file descriptors; `std` has no `ErrorKind` for them.
pub fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_visible() {
        let usage = usage().unwrap();
        assert!(usage.threads >= 1 && usage.rss_kib > 0);
        assert!(open_fds().unwrap() >= 3);
        let names = vec![
            "wl1-r7".to_owned(),
            "wl1-w7".to_owned(),
            "wl12-r1".to_owned(),
        ];
        assert_eq!(conn_threads(&names, PeerId(1)), (1, 1));
        // The test harness names its threads after the test.
        let name = std::thread::current().name().map(str::to_owned);
        if let Some(name) = name {
            let prefix: String = name.chars().take(8).collect();
            assert!(thread_names()
                .unwrap()
                .iter()
                .any(|n| n.starts_with(&prefix)));
        }
    }
}
