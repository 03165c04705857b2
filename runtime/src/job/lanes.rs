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
        for i in 0..n.max(1) {
            let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("eddy-lane-{i}"))
                .enable_all()
                .build()?;
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
