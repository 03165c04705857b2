//! The exactly-once file sink: a two-phase commit over a single output file.
//!
//! Results of checkpoint epoch n go to a staging file `<dir>/.<name>.eddy/epoch-<n>.part`. At
//! barrier n the staging file is synced and recorded in the checkpoint (pre-commit); when
//! checkpoint n completes it is appended to the output and removed (commit). The checkpoint
//! records the output's committed length, so a restore truncates whatever a crashed run
//! appended later and re-applies the commits the checkpoint promised: the output holds each
//! result exactly once, and nothing uncommitted is ever visible in it.

use super::ConnectorError;
use super::sink::WRITE_BUFFER;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What a checkpoint records of the sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnState {
    /// Output length with every commit before the pending ones applied.
    pub committed: u64,
    /// Pre-committed epochs (id, bytes), to append in order.
    pub pending: Vec<(u64, u64)>,
}

pub struct TxnFileSink {
    path: PathBuf,
    staging: PathBuf,
    state: TxnState,
    /// Epoch being written and its staging file.
    epoch: u64,
    current: Option<(BufWriter<File>, u64)>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ConnectorError + '_ {
    move |source| ConnectorError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl TxnFileSink {
    /// Opens the sink. With `restored`, brings the output to exactly what that checkpoint
    /// committed; without, starts an empty output. `epoch` is the first epoch to write.
    pub fn open(
        path: &str,
        restored: Option<TxnState>,
        epoch: u64,
    ) -> Result<Self, ConnectorError> {
        let path = PathBuf::from(path);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let staging = dir.join(format!(".{name}.eddy"));
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let mut sink = TxnFileSink {
            path,
            staging,
            state: TxnState::default(),
            epoch,
            current: None,
        };
        let out = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&sink.path)
            .map_err(io(&sink.path))?;
        match restored {
            None => out.set_len(0).map_err(io(&sink.path))?,
            Some(st) => {
                let len = out.metadata().map_err(io(&sink.path))?.len();
                // Commits run in epoch order and delete their staging file after appending it,
                // so the epochs whose staging file is gone were appended already.
                let done = st
                    .pending
                    .iter()
                    .take_while(|(e, _)| !sink.part(*e).exists())
                    .count();
                let base = st.committed + st.pending[..done].iter().map(|p| p.1).sum::<u64>();
                let staged = st.pending[done..]
                    .iter()
                    .all(|(e, n)| std::fs::metadata(sink.part(*e)).is_ok_and(|m| m.len() == *n));
                if !staged || len < base {
                    return Err(ConnectorError::Config(format!(
                        "{}: the checkpoint's pending results are missing from {} or the output is shorter than the checkpoint says ({len} < {base} bytes); restore from an earlier checkpoint",
                        sink.path.display(),
                        sink.staging.display(),
                    )));
                }
                out.set_len(base).map_err(io(&sink.path))?;
                sink.state.committed = base;
                sink.state.pending = st.pending[done..].to_vec();
                sink.commit(u64::MAX)?;
            }
        }
        // Staging files of epochs no checkpoint completed: a crashed run's, never visible.
        for entry in std::fs::read_dir(&sink.staging).map_err(io(&sink.staging))? {
            let entry = entry.map_err(io(&sink.staging))?;
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
        Ok(sink)
    }

    fn part(&self, epoch: u64) -> PathBuf {
        self.staging.join(format!("epoch-{epoch:010}.part"))
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ConnectorError> {
        if self.current.is_none() {
            let p = self.part(self.epoch);
            let f = File::create(&p).map_err(io(&p))?;
            self.current = Some((BufWriter::with_capacity(WRITE_BUFFER, f), 0));
        }
        if let Some((w, n)) = self.current.as_mut() {
            w.write_all(bytes).map_err(io(&self.staging))?;
            *n += bytes.len() as u64;
        }
        Ok(())
    }

    /// Barrier `id`: seals the current epoch; returns the state to record in checkpoint `id`.
    pub fn pre_commit(&mut self, id: u64) -> Result<TxnState, ConnectorError> {
        if let Some((w, n)) = self.current.take() {
            let f = w
                .into_inner()
                .map_err(|e| io(&self.staging)(e.into_error()))?;
            f.sync_data().map_err(io(&self.staging))?;
            // Renamed to the id of the checkpoint that seals it.
            std::fs::rename(self.part(self.epoch), self.part(id)).map_err(io(&self.staging))?;
            self.state.pending.push((id, n));
        }
        self.epoch = id + 1;
        Ok(self.state.clone())
    }

    /// Checkpoint `id` completed: appends every sealed epoch up to it to the output.
    pub fn commit(&mut self, id: u64) -> Result<(), ConnectorError> {
        let ready: Vec<(u64, u64)> = self
            .state
            .pending
            .iter()
            .copied()
            .filter(|(e, _)| *e <= id)
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let mut out = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        for (e, n) in &ready {
            let p = self.part(*e);
            let mut f = File::open(&p).map_err(io(&p))?;
            std::io::copy(&mut f, &mut out).map_err(io(&self.path))?;
            self.state.committed += n;
        }
        out.sync_data().map_err(io(&self.path))?;
        for (e, _) in &ready {
            let _ = std::fs::remove_file(self.part(*e));
        }
        self.state.pending.retain(|(e, _)| *e > id);
        Ok(())
    }

    /// End of input: commits everything; returns the final state.
    pub fn finish(&mut self) -> Result<TxnState, ConnectorError> {
        let last = self.epoch;
        self.pre_commit(last)?;
        self.commit(u64::MAX)?;
        let _ = std::fs::remove_dir(&self.staging);
        Ok(self.state.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_rolls_back_uncommitted_and_reapplies_promised_commits() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let out_s = out.to_str().unwrap();
        let mut s = TxnFileSink::open(out_s, None, 1).unwrap();
        s.write(b"a\n").unwrap();
        let st1 = s.pre_commit(1).unwrap();
        s.commit(1).unwrap();
        s.write(b"b\n").unwrap();
        let st2 = s.pre_commit(2).unwrap();
        // Crash after checkpoint 2 completed but before its commit; epoch 3 half written.
        s.write(b"c\n").unwrap();
        drop(s);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\n");
        let mut s = TxnFileSink::open(out_s, Some(st2.clone()), 3).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\nb\n");
        s.write(b"c\n").unwrap();
        s.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\nb\nc\n");
        // Restoring checkpoint 2 after its commit happened (staging gone) keeps it once.
        let _ = TxnFileSink::open(out_s, Some(st2), 3).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\nb\n");
        // Restoring the older checkpoint 1 truncates what came after it.
        let _ = TxnFileSink::open(out_s, Some(st1), 2).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\n");
        // Two epochs pending, a crash after only the first was appended.
        let mut s = TxnFileSink::open(out_s, None, 1).unwrap();
        s.write(b"x\n").unwrap();
        s.pre_commit(1).unwrap();
        s.write(b"y\n").unwrap();
        let st = s.pre_commit(2).unwrap();
        s.commit(1).unwrap();
        drop(s);
        let mut s = TxnFileSink::open(out_s, Some(st), 3).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "x\ny\n");
        s.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "x\ny\n");
    }
}
