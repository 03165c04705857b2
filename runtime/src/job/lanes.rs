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

use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

pub(super) struct Lanes {
    handles: Vec<Handle>,
    /// Dropped with the lanes, which lets each lane's thread shut its runtime down.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Lanes {
    /// Starts `n` lanes (at least one).
    pub(super) fn start(n: usize) -> std::io::Result<Lanes> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        let cpus = pin_cpus(n.max(1));
        for i in 0..n.max(1) {
            let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("eddy-lane-{i}"))
                .enable_all()
                .build()?;
            if let Some(cpu) = cpus.get(i).copied() {
                rt.spawn(async move { pin(cpu) });
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

fn pin_cpus(n: usize) -> Vec<usize> {
    if std::env::var_os("EDDY_NO_PIN").is_some() {
        return vec![];
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled in by the kernel.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            == 0;
    if !ok {
        return vec![];
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if cpus.len() < n {
        return vec![];
    }
    cpus.into_iter().take(n).collect()
}

fn pin(cpu: usize) {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let _ = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}
