//! Watermark alignment across the splits of one event-time source (Flink's
//! `withWatermarkAlignment`): a split whose watermark runs more than the plan's
//! `maxWatermarkDrift` ahead of the slowest active split of its source waits until that one
//! catches up. Different sources are not aligned: they may hold different times altogether.
//!
//! Windows fire on the minimum watermark over all splits, so everything a fast split reads
//! ahead of the slowest one stays in window state. Without a bound, the split that shares its
//! thread with a sink fell further and further behind, and a 20 M-record keyed count at
//! parallelism 2 peaked at 470-670 MB instead of the 29 MB it takes at parallelism 1.

use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::Notify;

pub struct Drift {
    /// Each split's latest watermark; `i64::MAX` for one that is idle or finished (left out of
    /// the minimum, as downstream leaves it out).
    marks: Vec<AtomicI64>,
    max: i64,
    moved: Notify,
}

impl Drift {
    /// `splits` instances of one source, `max` ms of event time apart at most.
    pub fn new(splits: usize, max: i64) -> Drift {
        Drift {
            marks: (0..splits).map(|_| AtomicI64::new(i64::MIN)).collect(),
            max,
            moved: Notify::new(),
        }
    }

    /// Split `slot` is now at `wm` ([`crate::exchange::IDLE`] and `i64::MAX` leave it out).
    pub fn publish(&self, slot: usize, wm: i64) {
        let wm = if wm == crate::exchange::IDLE {
            i64::MAX
        } else {
            wm
        };
        if let Some(m) = self.marks.get(slot)
            && m.swap(wm, Ordering::AcqRel) != wm
        {
            self.moved.notify_waiters();
        }
    }

    /// Whether split `slot` is too far ahead of the slowest other active split to read on.
    pub fn ahead(&self, slot: usize) -> bool {
        let Some(mine) = self.marks.get(slot).map(|m| m.load(Ordering::Acquire)) else {
            return false;
        };
        if mine == i64::MAX {
            return false;
        }
        let slowest = self
            .marks
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != slot)
            .map(|(_, m)| m.load(Ordering::Acquire))
            .min()
            .unwrap_or(i64::MAX);
        slowest != i64::MAX && mine > slowest.saturating_add(self.max)
    }

    /// Waits until some split's watermark moves (or `limit` passes: a split may stall without
    /// publishing, and the caller has barriers to inject meanwhile).
    pub async fn moved(&self, slot: usize, limit: std::time::Duration) {
        let notified = self.moved.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.ahead(slot) {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_waits_only_while_ahead_of_the_slowest_active_one() {
        let d = Drift::new(3, 1000);
        // Nobody has said anything: the others may still be anywhere, so wait for them.
        d.publish(0, 5000);
        assert!(d.ahead(0));
        d.publish(1, 4500);
        d.publish(2, 3999);
        assert!(d.ahead(0), "5000 is more than 1000 past 3999");
        d.publish(2, 4000);
        assert!(!d.ahead(0), "exactly the drift is allowed");
        assert!(!d.ahead(2), "the slowest never waits");
        // An idle or finished split is left out; when all others are, nobody waits.
        d.publish(2, crate::exchange::IDLE);
        assert!(!d.ahead(0));
        d.publish(1, i64::MAX);
        assert!(!d.ahead(0));
        // A finished split itself never waits.
        d.publish(0, i64::MAX);
        d.publish(1, 0);
        assert!(!d.ahead(0));
    }

    #[tokio::test]
    async fn waiting_ends_when_the_slowest_split_moves() {
        let d = std::sync::Arc::new(Drift::new(2, 10));
        d.publish(0, 100);
        d.publish(1, 0);
        assert!(d.ahead(0));
        let waiter = {
            let d = d.clone();
            tokio::spawn(async move {
                d.moved(0, std::time::Duration::from_secs(30)).await;
                d.ahead(0)
            })
        };
        // Give the waiter its turn to register before moving (it also rechecks when it does).
        tokio::task::yield_now().await;
        d.publish(1, 95);
        let still_ahead = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken well before its 30 s limit")
            .expect("waiter");
        assert!(!still_ahead);
    }
}
