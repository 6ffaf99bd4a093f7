//! The kernel's limits a run with thousands of threads and sockets must fit in,
//! checked before it starts, so that a run that cannot fit says which limit and
//! what to set, instead of failing half-way with "Resource temporarily
//! unavailable" from a thread that could not start.
//!
//! Four limits matter for `scale`: open files per process (`ulimit -n`), threads
//! in the system (`kernel.threads-max`, and `kernel.pid_max`, since every thread
//! takes a pid), and memory mappings per process (`vm.max_map_count`). The last is
//! the one that surprises: each thread costs about four mappings (its stack, the
//! stack's guard page, and the alternate signal stack Rust gives every thread, with
//! its own guard), so 20,000 threads need about 80,000, above the 65,530 that many
//! kernels still default to. When it is too low and this process may raise it
//! (root), it does, says so, and puts the old value back when the run ends.

use std::fs;

use anyhow::bail;

const MAP_COUNT: &str = "/proc/sys/vm/max_map_count";
/// Mappings each thread takes, measured with `/proc/self/maps` on Linux 6.18 with
/// glibc 2.36: the stack and its guard, the alternate signal stack and its guard.
const MAPS_PER_THREAD: u64 = 4;
/// Room for everything else: the binary, libraries, the heap's arenas.
const MAPS_SLACK: u64 = 4096;

/// A raised `vm.max_map_count`, put back when dropped (if nobody changed it since).
#[derive(Debug)]
pub struct Raised {
    old: u64,
    new: u64,
}

impl Drop for Raised {
    fn drop(&mut self) {
        if read(MAP_COUNT) == Some(self.new) {
            let _ = fs::write(MAP_COUNT, self.old.to_string());
        }
    }
}

/// What the check found: notes to print, and a raised limit to keep until the end.
#[derive(Debug, Default)]
pub struct Checked {
    pub notes: Vec<String>,
    pub raised: Option<Raised>,
}

/// Checks that this process can open `fds` more files and start `threads` more
/// threads, raising `vm.max_map_count` if it must and may.
///
/// # Errors
///
/// Names the first limit that is too low, with what to set it to.
pub fn check(fds: u64, threads: u64) -> anyhow::Result<Checked> {
    let mut checked = Checked::default();
    if let Some(limit) = crate::procfs::open_files_limit() {
        let open = crate::procfs::open_fds().unwrap_or(0) as u64;
        if open + fds > limit {
            bail!(
                "this run needs about {} open files per process and the limit is {limit}: \
                 raise it with `ulimit -n {}` or use fewer --conns",
                open + fds,
                open + fds
            );
        }
    }
    let tasks = running_tasks().unwrap_or(0);
    for (path, name) in [
        ("/proc/sys/kernel/threads-max", "kernel.threads-max"),
        ("/proc/sys/kernel/pid_max", "kernel.pid_max"),
    ] {
        if let Some(max) = read(path) {
            if tasks + threads > max {
                bail!(
                    "this run starts {threads} threads and {tasks} are running, but {name} is \
                     {max}: raise it with `sysctl -w {name}={}` or use fewer --conns",
                    (tasks + threads).next_power_of_two()
                );
            }
        }
    }
    let maps = fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count() as u64);
    let need = maps + threads * MAPS_PER_THREAD + MAPS_SLACK;
    if let Some(max) = read(MAP_COUNT).filter(|&max| max < need) {
        // Round up, so that a little growth does not need another raise.
        let new = need.next_multiple_of(65_536);
        if fs::write(MAP_COUNT, new.to_string()).is_err() || read(MAP_COUNT) != Some(new) {
            bail!(
                "this run needs about {need} memory mappings in one process (about \
                 {MAPS_PER_THREAD} per thread) and vm.max_map_count is {max}: raise it with \
                 `sysctl -w vm.max_map_count={new}` (as root) or use fewer --conns"
            );
        }
        checked.notes.push(format!(
            "vm.max_map_count raised from {max} to {new} for this run ({threads} threads take \
             about {MAPS_PER_THREAD} mappings each); restored at the end"
        ));
        checked.raised = Some(Raised { old: max, new });
    }
    Ok(checked)
}

fn read(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Threads in the whole system now: the fourth field of `/proc/loadavg` is
/// "running/total".
fn running_tasks() -> Option<u64> {
    let loadavg = fs::read_to_string("/proc/loadavg").ok()?;
    let field = loadavg.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}
