//! Source positions for checkpoints: what a worker has read, in a form that survives a change
//! of parallelism.
//!
//! The generators split their index space into blocks (`block` indices each) dealt round-robin
//! to workers. A [`Frontier`] records, for every residue class of blocks modulo `stride`, the
//! first index not yet emitted; a fresh run has `stride = P`. Restoring with `P'` workers uses
//! `stride = lcm(stride, P')`, so each new residue class belongs to exactly one new worker and
//! maps to exactly one old class: nothing is emitted twice and nothing is skipped.

use super::ConnectorError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    pub block: u64,
    pub stride: u64,
    /// Residue class of blocks -> first index of that class not yet emitted.
    pub next: BTreeMap<u64, u64>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Above this many classes a frontier would be too big to keep in a checkpoint.
const MAX_STRIDE: u64 = 1 << 16;

impl Frontier {
    /// Worker `w` of `p` before it emitted anything.
    pub fn fresh(block: u64, w: u64, p: u64) -> Frontier {
        Frontier {
            block,
            stride: p,
            next: BTreeMap::from([(w, w * block)]),
        }
    }

    fn class(&self, i: u64) -> u64 {
        (i / self.block) % self.stride
    }

    /// Whether index `i` was emitted (`false` for classes this frontier does not cover).
    pub fn emitted(&self, i: u64) -> bool {
        self.next.get(&self.class(i)).is_some_and(|n| i < *n)
    }

    /// First index of class `c` (modulo `stride`) that is `>= x`.
    fn first_at_least(&self, c: u64, x: u64) -> u64 {
        let b0 = x / self.block;
        let mut b = b0 - b0 % self.stride + c;
        if b < b0 {
            b += self.stride;
        }
        if b == b0 { x } else { b * self.block }
    }

    /// Joins the frontiers of all workers of one run from their checkpoint positions.
    pub fn merge(parts: &[serde_json::Value]) -> Result<Frontier, ConnectorError> {
        let mut all: Option<Frontier> = None;
        for p in parts {
            let f: Frontier = serde_json::from_value(p.clone())
                .map_err(|e| ConnectorError::Config(format!("bad generator position: {e}")))?;
            match &mut all {
                None => all = Some(f),
                Some(a) if a.block == f.block && a.stride == f.stride => a.next.extend(f.next),
                Some(_) => {
                    return Err(ConnectorError::Config(
                        "generator positions of one checkpoint disagree on their layout".into(),
                    ));
                }
            }
        }
        let all = all.ok_or_else(|| ConnectorError::Config("no generator positions".into()))?;
        if all.next.len() as u64 != all.stride {
            return Err(ConnectorError::Config(format!(
                "generator positions cover {} of {} splits",
                all.next.len(),
                all.stride
            )));
        }
        Ok(all)
    }

    /// The part of this (complete) frontier that worker `w` of `p` resumes from, and the first
    /// index it should look at.
    pub fn for_worker(&self, w: u64, p: u64) -> Result<(Frontier, u64), ConnectorError> {
        let stride = self.stride / gcd(self.stride, p) * p;
        if stride > MAX_STRIDE {
            return Err(ConnectorError::Config(format!(
                "restoring at parallelism {p} would split the generator {stride} ways; restore at a divisor or multiple of the previous parallelism"
            )));
        }
        let mut mine = Frontier {
            block: self.block,
            stride,
            next: BTreeMap::new(),
        };
        for c in (w..stride).step_by(p as usize) {
            let old = self.next.get(&(c % self.stride)).copied().unwrap_or(0);
            mine.next.insert(c, mine.first_at_least(c, old));
        }
        let start = mine.next.values().copied().min().unwrap_or(0);
        Ok((mine, start))
    }

    /// This frontier after every index of this worker below `cursor` was emitted.
    pub fn advanced_to(&self, cursor: u64) -> Frontier {
        let mut f = self.clone();
        for (c, n) in f.next.iter_mut() {
            *n = (*n).max(self.first_at_least(*c, cursor));
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emits indices of worker w of p in increasing order, skipping what `skip` covers.
    fn run(f: &Frontier, w: u64, p: u64, upto: u64, block: u64) -> Vec<u64> {
        (0..upto)
            .filter(|i| (i / block) % p == w && !f.emitted(*i))
            .collect()
    }

    #[test]
    fn rescaling_emits_every_index_once() {
        for block in [1u64, 50] {
            for (p1, p2) in [(1u64, 3u64), (3, 2), (2, 4), (4, 2), (2, 2)] {
                let n = 40 * block;
                // Run 1: each worker stops at a different point.
                let mut emitted = Vec::new();
                let mut parts = Vec::new();
                for w in 0..p1 {
                    let fresh = Frontier::fresh(block, w, p1);
                    let mine = run(&fresh, w, p1, n, block);
                    let stop = mine.len() * (w as usize + 1) / (p1 as usize + 1);
                    emitted.extend_from_slice(&mine[..stop]);
                    let cursor = mine.get(stop).copied().unwrap_or(n);
                    parts.push(serde_json::to_value(fresh.advanced_to(cursor)).unwrap());
                }
                let all = Frontier::merge(&parts).unwrap();
                for w in 0..p2 {
                    let (mine, start) = all.for_worker(w, p2).unwrap();
                    for i in start..n {
                        if (i / block) % p2 == w && !mine.emitted(i) {
                            emitted.push(i);
                        }
                    }
                }
                emitted.sort_unstable();
                assert_eq!(
                    emitted,
                    (0..n).collect::<Vec<_>>(),
                    "block {block} {p1}->{p2}"
                );
            }
        }
    }
}
