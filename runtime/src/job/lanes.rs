//! Lanes: each worker's tasks run on a thread of their own, as a Flink task slot runs its
//! chain on one thread.
//!
//! On one runtime shared by all workers, the scheduler places and steals tasks as it likes:
//! from run to run a source and the window reading it landed on the same thread or on two, so
//! the same job at parallelism 2 took 1.1 CPU-seconds on one run and 2.0 on the next (every
//! batch written on one core and read on the other, and the window's map bouncing between
//! the two caches). A lane is a runtime with one worker thread, so its tasks stay put; it is
//! a multi-thread runtime of one thread rather than a current-thread one so that a task may
//! still hand a blocking call off with `block_in_place` (Kafka metadata lookups).
//!
//! On request each lane's thread is also pinned to a CPU of its own, as thread-per-core
//! engines do (Seastar, Redpanda). [`Pinning::Auto`] pins when the lanes are as many as the
//! CPUs the process may use, at least two, and no CPU quota holds it to fewer: the job then has
//! the machine, or its container the CPUs it was given exclusively (Kubernetes' static CPU
//! manager). With fewer lanes than CPUs, several jobs would all pin to the first ones; under a
//! quota (a CPU limit) the CPUs are shared with other containers, and a pinned lane could not
//! move off a busy one. Unpinned, the kernel put both lanes of a P=2 job on one CPU for 10 ms
//! at a time while the other idled (a lane waking the other placed it beside itself), but
//! pinned runs were no faster on the shared 2-vCPU host measured (`docs/benchmarks.md`,
//! session 14), and a node's own daemons share its CPUs, so pinning is off by default.

use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

/// Whether lanes are pinned to CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Pinning {
    /// Pinned when there are as many lanes as CPUs (two or more) and no CPU quota.
    Auto,
    /// Pinned whenever there is a CPU for each lane.
    On,
    #[default]
    Off,
}

pub(super) struct Lanes {
    handles: Vec<Handle>,
    /// Dropped with the lanes, which lets each lane's thread shut its runtime down.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Lanes {
    /// Starts `n` lanes (at least one).
    pub(super) fn start(n: usize, pinning: Pinning) -> std::io::Result<Lanes> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        let cpus = cpus_for(n.max(1), pinning);
        for i in 0..n.max(1) {
            let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("eddy-lane-{i}"))
                .enable_all()
                .build()?;
            if let Some(&cpu) = cpus.get(i) {
                // On the lane's worker thread. (Should a blocking call later hand the worker's
                // role to a new thread, that one runs unpinned.)
                rt.spawn(async move { pin_current_thread(cpu) });
            }
            handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            // The runtime lives on a thread of its own: dropping one inside another runtime's
            // task is refused. Its tasks are all joined before the lanes are dropped.
            std::thread::Builder::new()
                .name(format!("eddy-lane-{i}-owner"))
                .spawn(move || {
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                    rt.shutdown_background();
                })?;
        }
        Ok(Lanes {
            handles,
            _stops: stops,
        })
    }

    /// The lane that runs worker `worker`'s tasks.
    pub(super) fn of(&self, worker: usize) -> &Handle {
        &self.handles[worker % self.handles.len()]
    }
}

/// The CPUs to pin `n` lanes to, in order; empty for none.
fn cpus_for(n: usize, pinning: Pinning) -> Vec<usize> {
    if pinning == Pinning::Off {
        return Vec::new();
    }
    let allowed = allowed_cpus();
    // `available_parallelism` counts a cgroup CPU quota too: fewer than the CPUs allowed
    // means the CPUs are shared by quota.
    let quota = std::thread::available_parallelism().map_or(0, |c| c.get()) < allowed.len();
    let whole = n >= 2 && n == allowed.len() && !quota;
    if allowed.len() < n || (pinning == Pinning::Auto && !whole) {
        return Vec::new();
    }
    allowed.into_iter().take(n).collect()
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero `cpu_set_t` is an empty set; the kernel writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid, writable `cpu_set_t` of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below `CPU_SETSIZE`, within the set.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

fn pin_current_thread(cpu: usize) {
    // SAFETY: as in `allowed_cpus`; `cpu` came from the allowed set, below `CPU_SETSIZE`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid `cpu_set_t`; thread 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        tracing::debug!(cpu, error = %std::io::Error::last_os_error(), "lane left unpinned");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_pinned_only_with_a_cpu_each() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty(), "this process runs on some CPU");
        assert!(cpus_for(1, Pinning::Off).is_empty());
        assert!(cpus_for(allowed.len() + 1, Pinning::On).is_empty());
        assert!(cpus_for(allowed.len() + 1, Pinning::Auto).is_empty());
        assert_eq!(cpus_for(allowed.len(), Pinning::On), allowed);
        assert_eq!(cpus_for(1, Pinning::On), allowed[..1]);
        // One lane has no other to be put beside, and fewer lanes than CPUs may share the
        // machine with other jobs.
        assert!(cpus_for(1, Pinning::Auto).is_empty());
        if allowed.len() > 2 {
            assert!(cpus_for(2, Pinning::Auto).is_empty());
        }
    }

    #[test]
    fn a_pinned_lane_runs_on_its_cpu() {
        let allowed = allowed_cpus();
        let cpu = *allowed.last().expect("some CPU");
        let got = std::thread::spawn(move || {
            pin_current_thread(cpu);
            // SAFETY: plain libc call with no arguments.
            unsafe { libc::sched_getcpu() }
        })
        .join()
        .expect("thread");
        assert_eq!(got, cpu as i32);
    }
}
