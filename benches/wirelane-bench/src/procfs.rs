//! What the process costs, read from Linux's `/proc/self`. `scale` and `soak` judge
//! wirelane by these figures, so they come from the kernel rather than estimates: a
//! thread or an allocation the library forgot shows up here whatever its own
//! counters say.

use std::fs;
use std::io::{self, BufRead};
use std::time::Duration;

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

/// The CPU time a process has used so far, user and system, all its threads
/// together (those that have ended included): `utime + stime` of
/// `/proc/PID/stat`, in the kernel's clock ticks of 1/100 s (`USER_HZ`, fixed at
/// 100 for user space on Linux). `None` for this process.
///
/// # Errors
///
/// Fails if the process is gone or its `stat` does not parse.
pub fn cpu_time(pid: Option<u32>) -> io::Result<Duration> {
    let path = pid.map_or("/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let stat = fs::read_to_string(path)?;
    // The command name, in parentheses, may hold spaces: count fields after it.
    // After the name come the state (field 3), then utime (14) and stime (15).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok(Duration::from_millis((user + system) * 10)),
        _ => Err(io::Error::other("unreadable /proc/PID/stat")),
    }
}

/// Resident memory of this process in thread stacks and elsewhere, in KiB, from
/// `/proc/self/smaps`: a stack is a writable anonymous mapping of exactly
/// `stack_size` bytes (the guard page below it is a mapping of its own). Reading it
/// walks every mapping of the process: call it once, not in a loop. It is read a
/// line at a time, because the text (about a kilobyte per mapping, four mappings
/// per thread) held whole would be counted in the figure it is read for.
///
/// # Errors
///
/// Fails if `/proc/self/smaps` cannot be read.
pub fn stack_split(stack_size: usize) -> io::Result<MemorySplit> {
    let smaps = io::BufReader::new(fs::File::open("/proc/self/smaps")?);
    let mut split = MemorySplit::default();
    let mut is_stack = false;
    for line in smaps.lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-') {
            let range = u64::from_str_radix(start, 16)
                .ok()
                .zip(u64::from_str_radix(end, 16).ok());
            let perms = words.next().unwrap_or_default();
            // address perms offset dev inode [name]
            let named = words.nth(3).is_some();
            is_stack = !named
                && perms.starts_with("rw")
                && range.is_some_and(|(a, b)| b - a == stack_size as u64);
            if is_stack {
                split.stacks += 1;
            }
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            if is_stack {
                split.stack_kib += kib;
            } else {
                split.other_kib += kib;
            }
        }
    }
    Ok(split)
}

/// Resident memory by kind, from [`stack_split`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MemorySplit {
    /// Mappings taken for thread stacks.
    pub stacks: usize,
    pub stack_kib: u64,
    /// Everything else: the heap, the binary, the libraries.
    pub other_kib: u64,
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
