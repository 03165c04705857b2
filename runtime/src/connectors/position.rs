//! The source positions of earlier versions, kept to read their checkpoints.
//!
//! Before sources handed out their splits on demand (`splits`), a big file's 256 KiB blocks
//! were dealt round-robin to workers, and a [`Frontier`] recorded, for every residue class of
//! blocks modulo `stride`, the first offset of that class not yet emitted (offsets shifted by
//! the file's shift). `file_blocks` converts one into a dispenser's state.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    pub block: u64,
    pub stride: u64,
    /// Residue class of blocks -> first index of that class not yet emitted.
    pub next: BTreeMap<u64, u64>,
}

impl Frontier {
    fn class(&self, i: u64) -> u64 {
        (i / self.block.max(1)) % self.stride.max(1)
    }

    /// Whether index `i` was emitted (`false` for classes this frontier does not cover).
    pub fn emitted(&self, i: u64) -> bool {
        self.next.get(&self.class(i)).is_some_and(|n| i < *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_was_emitted_when_below_its_class_frontier() {
        let f = Frontier {
            block: 10,
            stride: 2,
            next: BTreeMap::from([(0, 25), (1, 12)]),
        };
        // Blocks 0, 2, ... are class 0 (read below 25); blocks 1, 3, ... class 1 (below 12).
        assert!(f.emitted(9) && f.emitted(24) && !f.emitted(25) && !f.emitted(40));
        assert!(f.emitted(11) && !f.emitted(12) && !f.emitted(19));
    }
}
