//! What the process costs, read from Linux's `/proc/self`: threads, resident memory,
//! file descriptors.
//!
//! The `scale` and `soak` jobs judge wirelane by these figures (threads and memory
//! per connection, and whether either grows during a long run), so they are read
//! from the kernel rather than estimated: a thread or an allocation the library
//! forgot shows up here whatever the library's own counters say.

use std::fs;
use std::io;

/// Threads of this process now: the entries of `/proc/self/task`.
///
/// # Errors
///
/// Fails if `/proc` is not mounted (not Linux).
pub fn threads() -> io::Result<usize> {
    Ok(fs::read_dir("/proc/self/task")?.count())
}

/// The names of this process's threads.
///
/// wirelane names its threads after the node and the connection (`wl1-r7` reads and
/// `wl1-w7` writes connection 7 of node 1), so counting names counts one node's
/// readers or writers. Linux keeps the first 15 bytes of a name, which is enough for
/// these. A thread that ends while the directory is read is skipped.
///
/// # Errors
///
/// Fails if `/proc/self/task` cannot be read.
pub fn thread_names() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir("/proc/self/task")? {
        let Ok(entry) = entry else { continue };
        if let Ok(name) = fs::read_to_string(entry.path().join("comm")) {
            names.push(name.trim_end().to_owned());
        }
    }
    Ok(names)
}

/// How many of `names` start with `prefix`.
pub fn count_prefixed(names: &[String], prefix: &str) -> usize {
    names.iter().filter(|n| n.starts_with(prefix)).count()
}

/// Resident memory of this process now, in KiB: `VmRSS` in `/proc/self/status`.
///
/// # Errors
///
/// Fails if the file cannot be read or has no readable `VmRSS` line.
pub fn rss_kib() -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS line in /proc/self/status"))
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

/// Whether `e` says the process (`EMFILE`) or the system (`ENFILE`) is out of file
/// descriptors.
pub fn is_out_of_fds(e: &io::Error) -> bool {
    /// Linux's `ENFILE` and `EMFILE`; `std` has no `ErrorKind` for them.
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(ENFILE | EMFILE))
}

/// Whether this process has (nearly) used up its file descriptors, given its
/// `limit` (read beforehand: at the limit, `/proc/self/limits` cannot be opened).
/// This is the explanation when a peer in this process stops answering, because
/// its `accept` is what fails.
pub fn fds_nearly_exhausted(limit: Option<u64>) -> bool {
    /// Descriptors `accept`, `connect` and a few library calls may need at once.
    const MARGIN: u64 = 8;
    match open_fds() {
        Ok(open) => limit.is_some_and(|limit| open as u64 + MARGIN >= limit),
        // Even listing them takes a descriptor.
        Err(e) => is_out_of_fds(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_visible() {
        assert!(threads().unwrap() >= 1);
        assert!(rss_kib().unwrap() > 0);
        assert!(open_fds().unwrap() >= 3);
        let name = std::thread::current().name().map(str::to_owned);
        // The test harness names its threads after the test; the name is cut to 15
        // bytes by the kernel.
        if let Some(name) = name {
            let prefix: String = name.chars().take(8).collect();
            assert!(count_prefixed(&thread_names().unwrap(), &prefix) >= 1);
        }
    }
}
