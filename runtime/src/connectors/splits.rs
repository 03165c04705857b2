//! Splits handed out on demand, as Flink's split enumerator hands them to readers that ask.
//!
//! A generator's index space is cut into units of consecutive indices. The instances of one
//! source share a [`Dispenser`] and take the next unit whenever they finish one, so an
//! instance that shares its thread with more work (the sink, a single top-N) reads less,
//! instead of every instance reading a fixed share and the others waiting for the slowest at
//! the watermark drift bound. Units are taken in index order, so the instances stay close in
//! event time.
//!
//! **Positions.** A checkpoint must say exactly what was emitted before each instance's
//! barrier. The rule that makes it cheap: an instance may take a unit only once it has
//! injected every barrier any instance of its source injected (its epoch is the dispenser's).
//! Units handed out before the first instance injected barrier `n` then went to instances
//! before their own barrier `n`: each is emitted in full or is the unit its instance was
//! reading at the barrier. Units handed out after went to instances past barrier `n`. So a
//! checkpoint's position is the dispenser's state when the first instance injected its
//! barrier (the *boundary*: the first unit never handed out, and the restored units not
//! yet handed out again) plus each instance's own unit and where it was in it ([`Splits`]).
//! It takes the same room at any parallelism and restores at any other.

use super::ConnectorError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// One instance's position at a barrier (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splits {
    /// Indices per unit.
    pub unit: u64,
    /// The barrier this stands for; `u64::MAX` when the instance ended (nothing was left).
    pub epoch: u64,
    /// First unit never handed out (at the boundary).
    pub next: u64,
    /// Units to hand out again before new ones: unit -> first index not yet emitted.
    pub pending: BTreeMap<u64, u64>,
    /// The unit this instance was reading and the first index of it not yet emitted.
    pub reading: Option<(u64, u64)>,
}

/// What [`Dispenser::take`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Indices `from..to` of unit `unit`.
    Unit { unit: u64, from: u64, to: u64 },
    /// Another instance injected a barrier this one has not: inject it first.
    Barrier,
    /// Every unit is handed out.
    Exhausted,
}

#[derive(Debug)]
struct State {
    next: u64,
    pending: BTreeMap<u64, u64>,
    /// The highest barrier any instance injected.
    epoch: u64,
    /// `(epoch, next, pending)` when the first instance injected each recent barrier.
    boundaries: VecDeque<(u64, u64, BTreeMap<u64, u64>)>,
}

/// Shared by the instances of one source.
#[derive(Debug)]
pub struct Dispenser {
    unit: u64,
    /// Indices in all (`None`: unbounded).
    end: Option<u64>,
    state: Mutex<State>,
}

/// The dispensers of one source, one per input it reads in units: a generator's index space
/// (named `""`), or each big file (by its name).
pub type Shared = BTreeMap<String, Arc<Dispenser>>;

/// Barriers of one source are at most one apart across its instances (the coordinator
/// triggers the next checkpoint once every instance acknowledged the last): a few suffice.
const BOUNDARIES: usize = 8;

impl Dispenser {
    /// Units of `unit` indices over `0..end` (unbounded for `None`).
    pub fn new(unit: u64, end: Option<u64>) -> Dispenser {
        Dispenser {
            unit: unit.max(1),
            end,
            state: Mutex::new(State {
                next: 0,
                pending: BTreeMap::new(),
                epoch: 0,
                boundaries: VecDeque::new(),
            }),
        }
    }

    /// A dispenser resuming from the positions every instance of a checkpoint recorded.
    pub fn resume(
        unit: u64,
        end: Option<u64>,
        parts: &[serde_json::Value],
    ) -> Result<Dispenser, ConnectorError> {
        let (next, pending) = merge(unit.max(1), parts)?;
        Ok(Dispenser::with_state(unit, end, next, pending))
    }

    /// A dispenser that hands out `pending` (unit -> first index not yet emitted), then the
    /// units from `next` on; units below `next` not in `pending` count as emitted.
    pub fn with_state(
        unit: u64,
        end: Option<u64>,
        next: u64,
        pending: BTreeMap<u64, u64>,
    ) -> Dispenser {
        let d = Dispenser::new(unit, end);
        {
            let mut st = d.lock();
            st.next = next;
            st.pending = pending;
        }
        d
    }

    pub fn unit(&self) -> u64 {
        self.unit
    }

    /// Indices in all (`None`: unbounded).
    pub fn end(&self) -> Option<u64> {
        self.end
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is consistent after every statement that changes it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bounds(&self, unit: u64) -> (u64, u64) {
        let from = unit.saturating_mul(self.unit);
        let to = from.saturating_add(self.unit);
        (from, self.end.map_or(to, |e| to.min(e)))
    }

    /// The next unit for an instance that injected barriers up to `epoch`.
    pub fn take(&self, epoch: u64) -> Take {
        let mut st = self.lock();
        if epoch < st.epoch {
            return Take::Barrier;
        }
        while let Some((unit, resume)) = st.pending.pop_first() {
            let (from, to) = self.bounds(unit);
            let from = from.max(resume);
            if from < to {
                return Take::Unit { unit, from, to };
            }
        }
        loop {
            let unit = st.next;
            let (from, to) = self.bounds(unit);
            if self.end.is_some_and(|e| from >= e) || from == u64::MAX {
                return Take::Exhausted;
            }
            st.next += 1;
            if from < to {
                return Take::Unit { unit, from, to };
            }
        }
    }

    /// An instance injects barrier `epoch`: the first to do so fixes the boundary.
    pub fn announce(&self, epoch: u64) {
        let mut st = self.lock();
        if epoch > st.epoch {
            st.epoch = epoch;
            let b = (epoch, st.next, st.pending.clone());
            st.boundaries.push_back(b);
            if st.boundaries.len() > BOUNDARIES {
                st.boundaries.pop_front();
            }
        }
    }

    /// The position of an instance at barrier `epoch` (announced) reading `reading`.
    pub fn position(&self, epoch: u64, reading: Option<(u64, u64)>) -> Splits {
        let st = self.lock();
        let (next, pending) = match st.boundaries.iter().rev().find(|b| b.0 == epoch) {
            Some((_, next, pending)) => (*next, pending.clone()),
            // Before any barrier: the state the run started from (only a restore's first
            // checkpoint can ask, and it announces first; kept total for safety).
            None => (st.next, st.pending.clone()),
        };
        Splits {
            unit: self.unit,
            epoch,
            next,
            pending,
            reading,
        }
    }

    /// The position of an instance that ended because nothing was left to take.
    pub fn ended(&self) -> Splits {
        let st = self.lock();
        Splits {
            unit: self.unit,
            epoch: u64::MAX,
            next: st.next,
            pending: BTreeMap::new(),
            reading: None,
        }
    }
}

/// One instance's place in the units it takes: the unit being read and its next index. The
/// generators read through one.
pub struct Cursor {
    splits: Arc<Dispenser>,
    unit: Option<u64>,
    /// The next index, and the end of the unit being read.
    pub next: u64,
    pub to: u64,
    /// The last barrier this instance injected.
    epoch: u64,
    ended: bool,
}

impl Cursor {
    pub fn new(splits: Arc<Dispenser>) -> Cursor {
        Cursor {
            splits,
            unit: None,
            next: 0,
            to: 0,
            epoch: 0,
            ended: false,
        }
    }

    /// Takes the next unit once this one is read. `None`: read on (from `next`); `Some(more)`:
    /// return `more` from `poll`, `true` to inject a barrier first (the task does, before
    /// polling again), `false` when nothing is left.
    pub fn refill(&mut self) -> Option<bool> {
        if self.next < self.to {
            return None;
        }
        match self.splits.take(self.epoch) {
            Take::Unit { unit, from, to } => {
                (self.unit, self.next, self.to) = (Some(unit), from, to);
                None
            }
            Take::Barrier => Some(true),
            Take::Exhausted => {
                self.ended = true;
                self.unit = None;
                Some(false)
            }
        }
    }

    /// The instance injects barrier `id` (`Source::barrier`).
    pub fn barrier(&mut self, id: u64) {
        self.epoch = id;
        self.splits.announce(id);
    }

    /// The instance's checkpoint position (`Source::position`).
    pub fn position(&self) -> serde_json::Value {
        let splits = if self.ended {
            self.splits.ended()
        } else {
            self.splits
                .position(self.epoch, self.unit.map(|u| (u, self.next)))
        };
        serde_json::to_value(splits).unwrap_or_default()
    }
}

/// Joins the instances' positions of one checkpoint: the boundary of the latest barrier among
/// them (an ended instance stands for every later one) and every instance's own unit.
fn merge(
    unit: u64,
    parts: &[serde_json::Value],
) -> Result<(u64, BTreeMap<u64, u64>), ConnectorError> {
    let mut all: Vec<Splits> = Vec::with_capacity(parts.len());
    for p in parts {
        let s: Splits = serde_json::from_value(p.clone()).map_err(|e| {
            ConnectorError::Config(format!(
                "source position: {e} (a checkpoint taken by an older Eddy, whose generators dealt fixed shares: restore it with that version)"
            ))
        })?;
        if s.unit != unit {
            return Err(ConnectorError::Config(format!(
                "source position: units of {} indices, this version uses {unit}: restore with the Eddy version that took the checkpoint",
                s.unit
            )));
        }
        all.push(s);
    }
    let latest = all
        .iter()
        .max_by_key(|s| s.epoch)
        .ok_or_else(|| ConnectorError::Config("no source positions".into()))?;
    let (next, mut pending) = (latest.next, latest.pending.clone());
    for s in &all {
        if let Some((u, at)) = s.reading {
            pending.insert(u, at);
        }
    }
    Ok((next, pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instances taking units and emitting their indices one at a time, with checkpoints.
    struct Reader {
        epoch: u64,
        cur: Option<(u64, u64, u64)>,
        ended: bool,
    }

    impl Reader {
        fn new() -> Reader {
            Reader {
                epoch: 0,
                cur: None,
                ended: false,
            }
        }

        /// Emits one index, or returns `None` (needs a barrier, or ended).
        fn step(&mut self, d: &Dispenser) -> Option<u64> {
            loop {
                if let Some((u, i, to)) = &mut self.cur
                    && *i < *to
                {
                    let _ = u;
                    *i += 1;
                    return Some(*i - 1);
                }
                match d.take(self.epoch) {
                    Take::Unit { unit, from, to } => self.cur = Some((unit, from, to)),
                    Take::Barrier => return None,
                    Take::Exhausted => {
                        self.ended = true;
                        return None;
                    }
                }
            }
        }

        fn barrier(&mut self, d: &Dispenser, epoch: u64) -> serde_json::Value {
            self.epoch = epoch;
            d.announce(epoch);
            let reading = self.cur.map(|(u, i, _)| (u, i));
            serde_json::to_value(d.position(epoch, reading)).expect("json")
        }
    }

    /// Runs `p` readers over `n` indices in a pseudo-random interleaving, checkpointing at
    /// random moments; "crashes" after checkpoint `crash_after`, restores at `p2` from it and
    /// finishes. Every index must be emitted exactly once counting only what the checkpoint
    /// covered before the crash.
    fn run(n: u64, unit: u64, p: usize, p2: usize, seed: u64, crash_after: u64) {
        let mut rng = seed;
        let mut rand = move |m: u64| {
            rng = crate::connectors::generator::mix64(rng);
            rng % m.max(1)
        };
        let d = Dispenser::new(unit, Some(n));
        let mut readers: Vec<Reader> = (0..p).map(|_| Reader::new()).collect();
        // Indices each reader emitted since its last barrier, and those covered per checkpoint.
        let mut since: Vec<Vec<u64>> = vec![Vec::new(); p];
        let mut covered: Vec<u64> = Vec::new();
        // One checkpoint in flight at a time, as the coordinator runs them.
        let (mut trigger, mut completed) = (0u64, 0u64);
        let mut acks: BTreeMap<usize, serde_json::Value> = BTreeMap::new();
        let mut kept: Option<(Vec<serde_json::Value>, Vec<u64>)> = None;
        let mut finished: BTreeMap<usize, serde_json::Value> = BTreeMap::new();
        for _ in 0..100_000 {
            if readers.iter().all(|r| r.ended) {
                break;
            }
            if trigger == completed && trigger < crash_after && rand(50) == 0 {
                trigger += 1;
            }
            let w = rand(p as u64) as usize;
            let r = &mut readers[w];
            if r.ended {
                continue;
            }
            // A reader behind on barriers may still read on before it notices (a source
            // task looks at the trigger between polls), until the dispenser stops it.
            if r.epoch < trigger && rand(2) == 0 {
                let pos = r.barrier(&d, r.epoch + 1);
                covered.append(&mut since[w]);
                acks.insert(w, pos);
            } else {
                match r.step(&d) {
                    Some(i) => since[w].push(i),
                    None if r.ended => {
                        covered.append(&mut since[w]);
                        finished.insert(w, serde_json::to_value(d.ended()).expect("json"));
                    }
                    None => {}
                }
            }
            // Checkpoint `trigger` completes when every reader acked it or ended.
            if trigger > completed
                && (0..p).all(|w| acks.contains_key(&w) || finished.contains_key(&w))
            {
                let parts: Vec<_> = (0..p)
                    .map(|w| acks.get(&w).or(finished.get(&w)).cloned().expect("part"))
                    .collect();
                acks.clear();
                completed = trigger;
                if completed == crash_after {
                    kept = Some((parts, covered.clone()));
                }
            }
        }
        let (parts, mut emitted) = match kept {
            Some(k) => k,
            None => {
                // The run finished before the crash point: everything was emitted once.
                let mut all = covered.clone();
                all.sort_unstable();
                assert_eq!(all, (0..n).collect::<Vec<_>>());
                return;
            }
        };
        let d2 = Dispenser::resume(unit, Some(n), &parts).expect("resume");
        let mut readers: Vec<Reader> = (0..p2).map(|_| Reader::new()).collect();
        while !readers.iter().all(|r| r.ended) {
            let w = rand(p2 as u64) as usize;
            if let Some(i) = readers[w].step(&d2) {
                emitted.push(i);
            }
        }
        emitted.sort_unstable();
        let want: Vec<u64> = (0..n).collect();
        assert_eq!(
            emitted, want,
            "n={n} unit={unit} p={p}->{p2} seed={seed} crash after {crash_after}"
        );
    }

    #[test]
    fn restoring_any_checkpoint_at_any_parallelism_emits_every_index_once() {
        for seed in 0..40 {
            for (p, p2) in [(1, 1), (2, 2), (2, 1), (1, 3), (3, 2), (4, 2)] {
                for crash_after in [1, 2, 4] {
                    run(1000, 7, p, p2, seed, crash_after);
                }
            }
        }
    }

    #[test]
    fn an_instance_behind_on_barriers_takes_nothing_until_it_injects_them() {
        let d = Dispenser::new(10, Some(100));
        assert_eq!(
            d.take(0),
            Take::Unit {
                unit: 0,
                from: 0,
                to: 10
            }
        );
        d.announce(1);
        assert_eq!(d.take(0), Take::Barrier);
        assert_eq!(
            d.take(1),
            Take::Unit {
                unit: 1,
                from: 10,
                to: 20
            }
        );
        // The boundary of barrier 1 is where the dispenser stood when it was first announced.
        let p = d.position(1, Some((0, 4)));
        assert_eq!((p.next, p.reading), (1, Some((0, 4))));
    }

    #[test]
    fn restored_units_go_out_first_from_where_they_stopped_and_the_last_unit_is_short() {
        let parts = [
            serde_json::to_value(Splits {
                unit: 10,
                epoch: 3,
                next: 5,
                pending: BTreeMap::from([(2, 25)]),
                reading: Some((4, 47)),
            })
            .expect("json"),
            serde_json::to_value(Splits {
                unit: 10,
                epoch: 3,
                next: 5,
                pending: BTreeMap::from([(2, 25)]),
                reading: Some((3, 40)),
            })
            .expect("json"),
        ];
        let d = Dispenser::resume(10, Some(55), &parts).expect("resume");
        let mut got = Vec::new();
        while let Take::Unit { from, to, .. } = d.take(0) {
            got.push((from, to));
        }
        // Unit 3 was read to its end exactly: nothing of it is left.
        assert_eq!(got, vec![(25, 30), (47, 50), (50, 55)]);
        assert_eq!(d.take(0), Take::Exhausted);
    }

    #[test]
    fn positions_of_another_layout_are_refused_with_the_fix() {
        let old = serde_json::json!({"block": 1, "stride": 2, "next": {"0": 10, "1": 11}});
        let e = Dispenser::resume(10, None, &[old]).expect_err("old layout");
        assert!(e.to_string().contains("older Eddy"), "{e}");
        let other = serde_json::to_value(Splits {
            unit: 20,
            epoch: 1,
            next: 0,
            pending: BTreeMap::new(),
            reading: None,
        })
        .expect("json");
        let e = Dispenser::resume(10, None, &[other]).expect_err("unit size");
        assert!(e.to_string().contains("units of 20"), "{e}");
    }
}
