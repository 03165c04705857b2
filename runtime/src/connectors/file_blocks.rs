//! Large files read by every worker at once, in blocks dealt round-robin.
//!
//! A file of at least [`SPLIT_MIN`] bytes is cut into [`BLOCK`]-byte blocks; a line belongs to
//! the block its first byte is in, and worker `w` of `P` reads the blocks `b` with
//! `(b + shift) mod P = w` (`shift` from the file's name, so many big files do not all start on
//! worker 0). One big file was read by one worker, which capped a P=2 file job at the speed of
//! one JSON decoder. Blocks are small so that neighbouring workers stay close in event time in
//! a time-ordered file (watermark alignment holds a worker that runs ahead), and each worker's
//! watermark follows its own blocks, as a Kafka partition's does: at P > 1 a record may be on
//! time that a single reader would have found late, never the reverse.
//!
//! Positions are byte offsets of line starts in a [`Frontier`] per file (the generators'
//! layout: blocks are its residue classes, offsets its indices), so a checkpoint taken at one
//! parallelism restores at another.

use super::ConnectorError;
use super::position::Frontier;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

/// Bytes per block.
pub const BLOCK: u64 = 256 * 1024;
/// Files this big or bigger are read in blocks by every worker; smaller ones whole by one.
pub const SPLIT_MIN: u64 = 16 * 1024 * 1024;

/// The blocks of one big file this worker reads.
pub(super) struct BlockFile {
    pub name: String,
    path: PathBuf,
    len: u64,
    block: u64,
    /// In blocks: block `b` is `b + shift` in the frontier's index space.
    shift: u64,
    frontier: Frontier,
    /// The block being read and where its lines stop (`u64::MAX` for the last block).
    cur: Option<(u64, u64)>,
    /// Offset of the next line to read.
    pos: u64,
    /// Line number of the line before `pos`, when known (read from the file's start on).
    pub lineno: Option<u64>,
    reader: Option<super::file::LineReader>,
    /// The reader ran past the block: find the next one before reading on.
    moved: bool,
    chunk: usize,
    pub done: bool,
}

/// The file's shift, in blocks.
fn shift_of(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % 4096
}

impl BlockFile {
    /// Worker `worker` of `workers`' share of the file, resuming from `restored` (the whole
    /// job's merged frontier for it) if any.
    pub fn new(
        name: String,
        path: PathBuf,
        len: u64,
        block: u64,
        (worker, workers): (u64, u64),
        restored: Option<&Frontier>,
        chunk: usize,
    ) -> Result<BlockFile, ConnectorError> {
        let shift = shift_of(&name);
        let frontier = match restored {
            Some(all) if all.block == block => all.for_worker(worker, workers)?.0,
            Some(_) => {
                return Err(ConnectorError::Config(format!(
                    "{name}: the checkpoint's file blocks are of another size; restore with the Eddy version that took it"
                )));
            }
            None => Frontier::fresh(block, worker, workers),
        };
        Ok(BlockFile {
            name,
            path,
            len,
            block,
            shift,
            frontier,
            cur: None,
            pos: 0,
            lineno: None,
            reader: None,
            moved: true,
            chunk,
            done: false,
        })
    }

    /// Everything this worker read of the file, for a checkpoint.
    pub fn position(&self) -> Frontier {
        let cursor = if self.done {
            // Past every block of the file.
            (self.len / self.block + self.shift + 1) * self.block
        } else {
            self.pos + self.shift * self.block
        };
        self.frontier.advanced_to(cursor)
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

    /// Where this worker starts reading block `b`: `None` if it is another worker's or read
    /// already.
    fn start_of(&self, b: u64) -> Option<u64> {
        let first = (b + self.shift) * self.block;
        let class = (b + self.shift) % self.frontier.stride;
        let next = *self.frontier.next.get(&class)?;
        (next < first + self.block).then(|| next.max(first) - self.shift * self.block)
    }

    /// Moves to the next block of this worker with lines left to read; `false` when none.
    fn next_block(&mut self) -> std::io::Result<bool> {
        let from = self.cur.map_or(0, |(b, _)| b + 1);
        for b in from..self.blocks() {
            if let Some(start) = self.start_of(b) {
                self.cur = Some((b, self.end_of(b)));
                self.open_at(start, b)?;
                return Ok(true);
            }
        }
        self.done = true;
        Ok(false)
    }

    /// Positions the reader at the first line starting at or after `start` in block `b`.
    fn open_at(&mut self, start: u64, b: u64) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        // Line numbers stay known while reading goes on from where the last line ended.
        let counted_to = self.reader.is_some().then_some(self.pos);
        let block_start = b * self.block;
        // A line starts at the block's first byte only if the byte before it ends a line.
        let probe = if start == block_start && start > 0 {
            start - 1
        } else {
            start
        };
        // The next block reuses the reader: its buffer and the open file (a new buffer for
        // each 256 KiB block was zeroed and faulted in anew).
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
        reader.stop_at(self.end_of(b));
        self.pos = probe;
        if probe < start {
            let mut ends = Vec::new();
            let partial = reader.run(1, &mut ends)?;
            self.pos += partial.len() as u64;
        }
        if self.pos == 0 {
            self.lineno = Some(0);
        } else if counted_to != Some(self.pos) {
            self.lineno = None;
        }
        self.reader = Some(reader);
        self.moved = false;
        Ok(())
    }

    /// The next run of up to `max` whole lines of this worker's blocks (`ends` gets each
    /// line's end within it); `Again` when a step found none (call again), `Done` once all
    /// are read.
    pub fn run(&mut self, max: usize, ends: &mut Vec<usize>) -> Result<Step<'_>, ConnectorError> {
        if self.done {
            return Ok(Step::Done);
        }
        if self.moved {
            match self.next_block() {
                Ok(true) => {}
                Ok(false) => return Ok(Step::Done),
                Err(e) => {
                    return Err(ConnectorError::Io {
                        path: self.name.clone(),
                        source: e,
                    });
                }
            }
        }
        let Some((mut b, mut end)) = self.cur else {
            self.moved = true;
            return Ok(Step::Again);
        };
        let first = self.pos;
        if first >= end {
            self.moved = true;
            return Ok(Step::Again);
        }
        // The blocks right after `b` that are this worker's and unread (all of them at P=1):
        // a run reads on into them instead of reopening the file.
        let mut following = Vec::new();
        let mut bb = b;
        while following.len() < 4
            && bb + 1 < self.blocks()
            && self.start_of(bb + 1) == Some((bb + 1) * self.block)
        {
            following.push(self.end_of(bb + 1));
            bb += 1;
        }
        let Some(reader) = self.reader.as_mut() else {
            self.moved = true;
            return Ok(Step::Again);
        };
        // Big reads up to the end of this worker's blocks in a row, then only the line
        // crossing it.
        reader.stop_at(following.last().copied().unwrap_or(end));
        let run = match reader.run(max, ends) {
            Ok(r) => r,
            Err(e) => {
                return Err(ConnectorError::Io {
                    path: self.name.clone(),
                    source: e,
                });
            }
        };
        if run.is_empty() {
            self.done = true;
            return Ok(Step::Done);
        }
        // Lines starting past the block are the next block's: read on if that one follows,
        // else stop there.
        let mut keep = ends.len();
        let mut line_start = 0usize;
        let mut i = 0;
        let mut following = following.into_iter();
        while i < ends.len() {
            if first + line_start as u64 >= end {
                match following.next() {
                    Some(next_end) => {
                        (b, end) = (b + 1, next_end);
                        continue;
                    }
                    None => {
                        keep = i;
                        break;
                    }
                }
            }
            line_start = ends[i];
            i += 1;
        }
        let cut_short = keep < ends.len();
        let cut = if keep == 0 { 0 } else { ends[keep - 1] };
        ends.truncate(keep);
        self.cur = Some((b, end));
        self.pos = first + cut as u64;
        if cut_short {
            self.moved = true;
        }
        if keep == 0 {
            return Ok(Step::Again);
        }
        let before = self.lineno;
        if let Some(n) = &mut self.lineno {
            *n += keep as u64;
        }
        Ok(Step::Lines {
            text: &run[..cut],
            offset: first,
            before,
            name: &self.name,
        })
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
    Again,
    Done,
}

/// Joins the block positions of every worker of a checkpoint, per file. A worker reports
/// only files it reached; the blocks of those it did not are unread.
pub(super) fn merge(
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
pub(super) fn from_whole(name: &str, bytes: u64, block: u64) -> Frontier {
    Frontier {
        block,
        stride: 1,
        next: BTreeMap::from([(0, bytes + shift_of(name) * block)]),
    }
}
