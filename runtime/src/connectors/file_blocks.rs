//! Large files read by every worker at once, in blocks handed out on demand.
//!
//! A file of at least [`SPLIT_MIN`] bytes is cut into [`BLOCK`]-byte blocks; a line belongs to
//! the block its first byte is in. The workers share one [`Dispenser`] per big file (see
//! `splits`) and take its next block whenever they finish one, so a worker whose thread
//! also runs the sink reads fewer blocks instead of holding the others back at the watermark
//! drift bound. One big file read by one worker capped a P=2 file job at the speed of one
//! JSON decoder. Blocks are small and taken in order, so the workers stay close in event time
//! in a time-ordered file, and each worker's watermark follows its own blocks, as a Kafka
//! partition's does: at P > 1 a record may be on time that a single reader would have found
//! late, never the reverse.
//!
//! Positions are byte offsets of line starts ([`Splits`] per file: units are blocks, indices
//! offsets), so a checkpoint taken at one parallelism restores at another.

use super::ConnectorError;
use super::position::Frontier;
use super::splits::{Dispenser, Shared, Splits, Take};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes per block.
pub const BLOCK: u64 = 256 * 1024;
/// Files this big or bigger are read in blocks by every worker; smaller ones whole by one.
pub const SPLIT_MIN: u64 = 16 * 1024 * 1024;

/// The dispensers of the big files `path` names, resumed from a checkpoint's `parts`.
///
/// Positions of earlier versions are converted: `blocks` (blocks dealt round-robin, a
/// [`Frontier`] per file) and a big file's `files` entry (read whole by one worker).
pub(super) fn plan_splits(
    path: &str,
    block: u64,
    split_min: u64,
    parts: Option<&[serde_json::Value]>,
) -> Result<Shared, ConnectorError> {
    let parts = parts.unwrap_or(&[]);
    let mut old_blocks = BTreeMap::new();
    merge_frontiers(&mut old_blocks, parts)?;
    let mut whole = BTreeMap::new();
    super::file::merge_positions(&mut whole, parts)?;
    let mut out = Shared::new();
    for f in super::file::list_files(path)? {
        let name = f.display().to_string();
        let len = std::fs::metadata(&f)
            .map_err(|e| ConnectorError::Io {
                path: name.clone(),
                source: e,
            })?
            .len();
        if len < split_min {
            continue;
        }
        let mine: Vec<serde_json::Value> = parts
            .iter()
            .filter_map(|p| p.get("splits").and_then(|s| s.get(&name)).cloned())
            .collect();
        let d = if !mine.is_empty() {
            Dispenser::resume(block, Some(len), &mine).map_err(|e| named(&name, e))?
        } else if let Some(f) = old_blocks.get(&name) {
            from_frontier(f, &name, len, block)?
        } else if let Some(&(bytes, _)) = whole.get(&name) {
            from_frontier(&from_whole(&name, bytes, block), &name, len, block)?
        } else {
            Dispenser::new(block, Some(len))
        };
        out.insert(name, Arc::new(d));
    }
    Ok(out)
}

fn named(name: &str, e: ConnectorError) -> ConnectorError {
    match e {
        ConnectorError::Config(m) => ConnectorError::Config(format!("{name}: {m}")),
        other => other,
    }
}

/// The blocks of one big file this worker is reading.
pub(super) struct BlockFile {
    pub name: String,
    path: PathBuf,
    len: u64,
    block: u64,
    splits: Arc<Dispenser>,
    /// The block being read and where its lines stop (`u64::MAX` for the last block).
    cur: Option<(u64, u64)>,
    /// Offset of the next line to read.
    pos: u64,
    /// Line number of the line before `pos`, when known (read from the file's start on).
    pub lineno: Option<u64>,
    reader: Option<super::file::LineReader>,
    chunk: usize,
    pub done: bool,
}

impl BlockFile {
    /// `splits` are the file's blocks; their end is the length the file had when the job
    /// started, so the workers agree on its last block.
    pub fn new(name: String, path: PathBuf, splits: Arc<Dispenser>, chunk: usize) -> BlockFile {
        BlockFile {
            name,
            path,
            len: splits.end().unwrap_or(0),
            block: splits.unit(),
            splits,
            cur: None,
            pos: 0,
            lineno: None,
            reader: None,
            chunk,
            done: false,
        }
    }

    /// Where this worker stands in the file at barrier `epoch` (announced).
    pub fn position(&self, epoch: u64) -> Splits {
        if self.done {
            return self.splits.ended();
        }
        self.splits
            .position(epoch, self.cur.map(|(b, _)| (b, self.pos)))
    }

    fn blocks(&self) -> u64 {
        self.len.div_ceil(self.block).max(1)
    }

    /// Where block `b`'s lines stop.
    fn end_of(&self, b: u64) -> u64 {
        if b + 1 >= self.blocks() {
            u64::MAX
        } else {
            (b + 1) * self.block
        }
    }

    /// Starts block `b` at `from` (its first byte, or a line start a checkpoint recorded).
    fn open(&mut self, b: u64, from: u64) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let block_start = b * self.block;
        let end = self.end_of(b);
        // The block right after the one just read, from its start: the reader stands at the
        // first line starting in it already (the line crossing into it was read whole).
        if let Some((prev, prev_end)) = self.cur
            && prev + 1 == b
            && from == block_start
            && self.pos >= prev_end
            && self.reader.is_some()
        {
            self.cur = Some((b, end));
            if let Some(r) = self.reader.as_mut() {
                r.stop_at(end);
            }
            return Ok(());
        }
        // A line starts at the block's first byte only if the byte before it ends a line.
        let probe = if from == block_start && from > 0 {
            from - 1
        } else {
            from
        };
        // Each block reuses the reader: its buffer and the open file (a new buffer for each
        // 256 KiB block was zeroed and faulted in anew).
        let mut reader = match self.reader.take() {
            Some(mut r) => {
                r.seek(probe)?;
                r
            }
            None => {
                let mut file = File::open(&self.path)?;
                file.seek(SeekFrom::Start(probe))?;
                super::file::LineReader::new(file, self.chunk, probe)
            }
        };
        reader.stop_at(end);
        self.pos = probe;
        if probe < from {
            let mut ends = Vec::new();
            let partial = reader.run(1, &mut ends)?;
            self.pos += partial.len() as u64;
        }
        self.lineno = (self.pos == 0).then_some(0);
        self.reader = Some(reader);
        self.cur = Some((b, end));
        Ok(())
    }

    /// The next run of up to `max` whole lines of the blocks this worker takes (`ends` gets
    /// each line's end within it), for a worker that injected barriers up to `epoch`.
    pub fn run(
        &mut self,
        max: usize,
        ends: &mut Vec<usize>,
        epoch: u64,
    ) -> Result<Step<'_>, ConnectorError> {
        let io = |name: &str, e| ConnectorError::Io {
            path: name.to_string(),
            source: e,
        };
        loop {
            if self.done {
                return Ok(Step::Done);
            }
            let finished = self.cur.is_none_or(|(_, end)| self.pos >= end);
            if finished {
                match self.splits.take(epoch) {
                    Take::Unit { unit, from, .. } => {
                        self.open(unit, from).map_err(|e| io(&self.name, e))?;
                        continue;
                    }
                    Take::Barrier => return Ok(Step::Barrier),
                    Take::Exhausted => {
                        self.done = true;
                        self.cur = None;
                        return Ok(Step::Done);
                    }
                }
            }
            let (Some((_, end)), Some(reader)) = (self.cur, self.reader.as_mut()) else {
                self.cur = None;
                continue;
            };
            let first = self.pos;
            let run = reader.run(max, ends).map_err(|e| io(&self.name, e))?;
            if run.is_empty() {
                // The end of the file: this block is read.
                self.pos = end;
                continue;
            }
            // Lines starting past the block are the next block's: give them back to the
            // reader, which reads on from there if this worker takes that block next.
            let mut keep = ends.len();
            let mut line_start = 0usize;
            for (i, &e) in ends.iter().enumerate() {
                if first + line_start as u64 >= end {
                    keep = i;
                    break;
                }
                line_start = e;
            }
            let cut = if keep == 0 { 0 } else { ends[keep - 1] };
            let (run_len, ends_len) = (run.len(), ends.len());
            if keep < ends_len {
                reader.unread(run_len - cut);
                ends.truncate(keep);
            }
            self.pos = first + cut as u64;
            if keep < ends_len {
                // Past this block's last line: the next take decides where reading goes on.
                self.pos = self.pos.max(end);
                if keep == 0 {
                    continue;
                }
            }
            let before = self.lineno;
            if let Some(n) = &mut self.lineno {
                *n += keep as u64;
            }
            let text = &self.reader.as_ref().map_or(&[][..], |r| r.last_run())[..cut];
            return Ok(Step::Lines {
                text,
                offset: first,
                before,
                name: &self.name,
            });
        }
    }
}

/// What [`BlockFile::run`] found.
pub(super) enum Step<'a> {
    /// Lines of `name` starting at byte `offset`, after line `before` when known.
    Lines {
        text: &'a [u8],
        offset: u64,
        before: Option<u64>,
        name: &'a str,
    },
    /// Another worker injected a barrier this one has not: inject it before reading on.
    Barrier,
    Done,
}

/// The shift of an earlier version's round-robin layout, in blocks.
fn shift_of(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % 4096
}

/// Joins an earlier version's block positions (`blocks`: a [`Frontier`] per file, blocks
/// dealt round-robin) of every worker of a checkpoint.
fn merge_frontiers(
    into: &mut BTreeMap<String, Frontier>,
    parts: &[serde_json::Value],
) -> Result<(), ConnectorError> {
    let bad = |e: String| ConnectorError::Config(format!("bad file block position: {e}"));
    let mut all: BTreeMap<String, Frontier> = BTreeMap::new();
    for p in parts {
        let Some(blocks) = p.get("blocks") else {
            continue;
        };
        let blocks: BTreeMap<String, Frontier> =
            serde_json::from_value(blocks.clone()).map_err(|e| bad(e.to_string()))?;
        for (name, f) in blocks {
            match all.get_mut(&name) {
                None => {
                    all.insert(name, f);
                }
                Some(a) if a.block == f.block && a.stride == f.stride => {
                    for (c, n) in f.next {
                        let e = a.next.entry(c).or_insert(n);
                        *e = (*e).max(n);
                    }
                }
                Some(_) => return Err(bad(format!("{name}: workers disagree on the layout"))),
            }
        }
    }
    for (name, mut f) in all {
        for c in 0..f.stride {
            f.next.entry(c).or_insert(c * f.block);
        }
        into.insert(name, f);
    }
    Ok(())
}

/// A big file's position from before it was read in blocks (`[bytes, lines]`, read from its
/// start by one worker) as a frontier.
fn from_whole(name: &str, bytes: u64, block: u64) -> Frontier {
    Frontier {
        block,
        stride: 1,
        next: BTreeMap::from([(0, bytes + shift_of(name) * block)]),
    }
}

/// A dispenser resuming where an earlier version's frontier (offsets shifted by the file's
/// shift, classes of blocks dealt round-robin) left the file: blocks read to their end count
/// as emitted, the others go out from where they stopped.
fn from_frontier(
    f: &Frontier,
    name: &str,
    len: u64,
    block: u64,
) -> Result<Dispenser, ConnectorError> {
    if f.block != block {
        return Err(ConnectorError::Config(format!(
            "{name}: the checkpoint's file blocks are of another size; restore with the Eddy version that took it"
        )));
    }
    let shift = shift_of(name) * block;
    let blocks = len.div_ceil(block).max(1);
    // Resume offset of each block: its first line not yet emitted.
    let resume = |b: u64| -> u64 {
        let class = (b + shift / block) % f.stride.max(1);
        let next = f.next.get(&class).copied().unwrap_or(0);
        next.saturating_sub(shift).max(b * block)
    };
    let done = |b: u64| resume(b) >= ((b + 1) * block).min(len);
    // Every block up to the last one read to its end is handed out again unless done.
    let next = (0..blocks).rev().find(|&b| done(b)).map_or(0, |b| b + 1);
    let pending = (0..next)
        .filter(|&b| !done(b))
        .map(|b| (b, resume(b)))
        .collect();
    Ok(Dispenser::with_state(block, Some(len), next, pending))
}

#[cfg(test)]
#[path = "file_blocks_tests.rs"]
mod tests;
