//! The part-file sink: exactly-once JSON lines under a prefix (`s3://bucket/prefix/` or a local
//! `dir/`), one part object per checkpoint epoch, through object_store (so S3, and a local
//! directory by the same code).
//!
//! Results of an epoch are uploaded (in parts when large) to a staging object
//! `<prefix>/_staging/<run>-<seq>.jsonl`. At barrier n the upload is completed and recorded in
//! checkpoint n (pre-commit); when checkpoint n completes the staging object is renamed to
//! `<prefix>/part-<n:010>.jsonl` (commit: a rename on a file system, a copy then a delete on
//! S3, which has no rename). A reader listing `part-*` therefore only ever sees whole,
//! committed epochs. A restore publishes the epochs its checkpoint promised that are not
//! published yet (renaming again to the same name is harmless), then removes what no
//! checkpoint it continues from promised: leftover staging objects, and parts of epochs after
//! the checkpoint (a restore of an older checkpoint rolls the output back, as the single-file
//! sink truncates). The prefix therefore belongs to the sink: a fresh run starts it empty.
//!
//! No key is both an object and a "directory" of others (`_staging/...` and `part-...` sit
//! side by side), as S3 gateways that store objects as files require.

use super::ConnectorError;
use super::object_files::{ObjectDir, store_err};
use object_store::ObjectStoreExt as _;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

const STAGING: &str = "_staging";

/// An epoch sealed at a barrier and waiting for its checkpoint to complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPart {
    pub epoch: u64,
    /// The staging object, relative to the prefix.
    pub staging: String,
    pub bytes: u64,
}

/// What a checkpoint records of the sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartsState {
    pub pending: Vec<PendingPart>,
}

/// The final name of epoch `epoch`'s part, relative to the prefix (zero-padded: names sort by
/// epoch).
pub fn part_name(epoch: u64) -> String {
    format!("part-{epoch:010}.jsonl")
}

/// The epoch of a final part's name, `None` for other names.
fn epoch_of(rel: &str) -> Option<u64> {
    rel.strip_prefix("part-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// Staging objects are uploaded in parts of this size once they outgrow it.
const PART_BYTES: usize = 8 << 20;

pub struct PartSink {
    dir: ObjectDir,
    /// Distinguishes this run's staging objects from a crashed run's.
    run: String,
    seq: u64,
    state: PartsState,
    /// The epoch the results being written belong to, if no barrier comes before the end.
    epoch: u64,
    current: Option<(Staging, String, u64)>,
}

/// An epoch's staging object being written.
enum Staging {
    /// Uploaded through object_store (S3).
    Store(BufWriter),
    /// A local directory's staging file, written straight to the file: object_store's
    /// `BufWriter` copied each chunk into a buffer of its own first, which was most of what a
    /// checkpoint every second cost a keyed count beyond the `fsync`.
    Local(std::fs::File, std::path::PathBuf),
}

impl PartSink {
    /// Opens the sink at `path`. With `restored` (the state checkpoint `epoch - 1` recorded),
    /// publishes what it promised and rolls back the rest; without, clears the prefix.
    /// `epoch` is the first epoch to write.
    pub async fn open(
        path: &str,
        run: &str,
        restored: Option<PartsState>,
        epoch: u64,
    ) -> Result<PartSink, ConnectorError> {
        let dir = ObjectDir::open(path, true)?;
        let mut sink = PartSink {
            dir,
            run: run.to_string(),
            seq: 0,
            state: PartsState::default(),
            epoch,
            current: None,
        };
        // Refuses a wrong bucket or credentials at start, naming what to check.
        let existing = list(&sink.dir, "").await?;
        if let Some(st) = restored {
            sink.state = st;
            sink.commit(u64::MAX).await?;
        }
        let staging = list(&sink.dir, STAGING).await?;
        for rel in staging.iter().map(|r| format!("{STAGING}/{r}")).chain(
            existing
                .into_iter()
                .filter(|r| epoch_of(r).is_some_and(|e| e >= epoch)),
        ) {
            let key = sink.dir.key(&rel);
            match sink.dir.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(sink.dir.name(&key))(e)),
            }
        }
        Ok(sink)
    }
}

/// Names of the objects directly under `rel` of `dir` (relative to it). (A function of the
/// directory, not the sink: the sink's upload is not `Sync`, so no `&PartSink` may be held
/// across an await.)
async fn list(dir: &ObjectDir, rel: &str) -> Result<Vec<String>, ConnectorError> {
    let under = if rel.is_empty() {
        (!dir.prefix.is_empty()).then(|| ObjPath::from(dir.prefix.as_str()))
    } else {
        Some(dir.key(rel))
    };
    let listing = dir
        .store
        .list_with_delimiter(under.as_ref())
        .await
        .map_err(|e| ConnectorError::Store {
            path: dir.display(),
            msg: format!(
                "the sink's store refused a listing ({}); {}",
                crate::objstore::short(&e),
                crate::objstore::CHECK_SETTINGS
            ),
        })?;
    Ok(listing
        .objects
        .into_iter()
        .filter_map(|m| m.location.filename().map(str::to_string))
        .collect())
}

impl PartSink {
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ConnectorError> {
        if self.current.is_none() {
            self.seq += 1;
            let rel = format!("{STAGING}/{}-{:06}.jsonl", self.run, self.seq);
            let key = self.dir.key(&rel);
            let w = match &self.dir.local_root {
                Some(root) => {
                    let path = root.join(key.as_ref());
                    let opened = path
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::File::create(&path));
                    let file = opened.map_err(|source| ConnectorError::Io {
                        path: path.display().to_string(),
                        source,
                    })?;
                    Staging::Local(file, path)
                }
                None => Staging::Store(
                    BufWriter::with_capacity(self.dir.store.clone(), key, PART_BYTES)
                        .with_max_concurrency(2),
                ),
            };
            self.current = Some((w, rel, 0));
        }
        if let Some((w, rel, n)) = self.current.as_mut() {
            let written = match w {
                Staging::Store(w) => w.write_all(bytes).await,
                Staging::Local(f, _) => std::io::Write::write_all(f, bytes),
            };
            written.map_err(|source| ConnectorError::Io {
                path: self.dir.name(&self.dir.key(rel)),
                source,
            })?;
            *n += bytes.len() as u64;
        }
        Ok(())
    }

    /// Barrier `id`: completes the current epoch's upload; returns the state to record in
    /// checkpoint `id`.
    pub async fn pre_commit(&mut self, id: u64) -> Result<PartsState, ConnectorError> {
        if let Some((mut w, rel, bytes)) = self.current.take() {
            // Fault injection for the crash tests: a slow store, so a kill can land mid-upload.
            if let Some(ms) = std::env::var("EDDY_TEST_UPLOAD_DELAY_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let sealed = match &mut w {
                Staging::Store(w) => w.shutdown().await,
                // Durable before the checkpoint records it, as the store's uploads are
                // (`with_fsync`): the data, then the file's name in its directory.
                Staging::Local(f, path) => f.sync_all().and_then(|()| {
                    path.parent().map_or(Ok(()), |d| {
                        std::fs::File::open(d).and_then(|d| d.sync_all())
                    })
                }),
            };
            sealed.map_err(|source| ConnectorError::Io {
                path: self.dir.name(&self.dir.key(&rel)),
                source,
            })?;
            self.state.pending.push(PendingPart {
                epoch: id,
                staging: rel,
                bytes,
            });
        }
        self.epoch = id + 1;
        Ok(self.state.clone())
    }

    /// Checkpoint `id` completed: publishes every sealed epoch up to it, in order.
    pub async fn commit(&mut self, id: u64) -> Result<(), ConnectorError> {
        while let Some(p) = self.state.pending.first().filter(|p| p.epoch <= id) {
            let from = self.dir.key(&p.staging);
            let to = self.dir.key(&part_name(p.epoch));
            match self.dir.store.rename(&from, &to).await {
                Ok(()) => {}
                // Published before a crash (the rename completed, the staging object is gone).
                Err(object_store::Error::NotFound { .. })
                    if self.dir.store.head(&to).await.is_ok() => {}
                Err(e) => {
                    return Err(ConnectorError::Store {
                        path: self.dir.name(&from),
                        msg: format!(
                            "publishing epoch {} as {} failed ({}); if the staging object is gone and the part was never published, restore from an earlier checkpoint",
                            p.epoch,
                            self.dir.name(&to),
                            crate::objstore::short(&e)
                        ),
                    });
                }
            }
            self.state.pending.remove(0);
        }
        Ok(())
    }

    /// End of input: seals the last epoch (published by [`commit`](Self::commit) once the final
    /// checkpoint completes, or at once without checkpoints).
    pub async fn finish(&mut self) -> Result<PartsState, ConnectorError> {
        let last = self.epoch;
        self.pre_commit(last).await
    }

    /// Every published part, in epoch order (for tests and tools).
    pub async fn published(dir: &ObjectDir) -> Result<Vec<ObjPath>, ConnectorError> {
        let root = (!dir.prefix.is_empty()).then(|| ObjPath::from(dir.prefix.as_str()));
        let listing = dir
            .store
            .list_with_delimiter(root.as_ref())
            .await
            .map_err(store_err(dir.display()))?;
        let mut parts: Vec<ObjPath> = listing
            .objects
            .into_iter()
            .map(|m| m.location)
            .filter(|p| p.filename().and_then(epoch_of).is_some())
            .collect();
        parts.sort();
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn contents(dir: &ObjectDir) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in PartSink::published(dir).await.unwrap() {
            let b = dir.store.get(&p).await.unwrap().bytes().await.unwrap();
            out.push((
                p.filename().unwrap().to_string(),
                String::from_utf8(b.to_vec()).unwrap(),
            ));
        }
        out
    }

    fn staged(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join(STAGING)).map_or(0, |d| d.count())
    }

    #[tokio::test]
    async fn publishes_at_commit_and_restores_exactly_what_was_promised() {
        let tmp = tempfile::tempdir().unwrap();
        let path = format!("{}/", tmp.path().display());
        let dir = ObjectDir::local(tmp.path()).unwrap();
        let mut s = PartSink::open(&path, "r1", None, 1).await.unwrap();
        s.write(b"a\n").await.unwrap();
        let st1 = s.pre_commit(1).await.unwrap();
        assert!(
            contents(&dir).await.is_empty(),
            "nothing visible before commit"
        );
        s.commit(1).await.unwrap();
        assert_eq!(contents(&dir).await, vec![(part_name(1), "a\n".into())]);
        s.write(b"b\n").await.unwrap();
        let st2 = s.pre_commit(2).await.unwrap();
        // Crash after checkpoint 2 completed but before its commit; epoch 3 half written.
        s.write(b"c\n").await.unwrap();
        drop(s);
        assert_eq!(contents(&dir).await.len(), 1);
        let mut s = PartSink::open(&path, "r2", Some(st2.clone()), 3)
            .await
            .unwrap();
        assert_eq!(
            contents(&dir).await,
            vec![(part_name(1), "a\n".into()), (part_name(2), "b\n".into())]
        );
        assert_eq!(
            staged(tmp.path()),
            0,
            "a crashed run's staging objects are removed"
        );
        s.write(b"c\n").await.unwrap();
        s.finish().await.unwrap();
        s.commit(u64::MAX).await.unwrap();
        assert_eq!(contents(&dir).await.len(), 3);
        // Restoring checkpoint 2 again (its parts already published) keeps them once and
        // rolls back the part published after it.
        PartSink::open(&path, "r3", Some(st2), 3).await.unwrap();
        assert_eq!(contents(&dir).await.len(), 2);
        // Restoring the older checkpoint 1 rolls back to what it had committed.
        PartSink::open(&path, "r4", Some(st1), 2).await.unwrap();
        assert_eq!(contents(&dir).await, vec![(part_name(1), "a\n".into())]);
        // A fresh start clears the prefix.
        PartSink::open(&path, "r5", None, 1).await.unwrap();
        assert!(contents(&dir).await.is_empty());
    }

    #[tokio::test]
    async fn missing_staging_object_of_a_promised_epoch_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = format!("{}/", tmp.path().display());
        let st = PartsState {
            pending: vec![PendingPart {
                epoch: 4,
                staging: format!("{STAGING}/gone-000001.jsonl"),
                bytes: 2,
            }],
        };
        let err = PartSink::open(&path, "r", Some(st), 5)
            .await
            .err()
            .expect("error");
        assert!(
            err.to_string()
                .contains("restore from an earlier checkpoint"),
            "{err}"
        );
    }

    #[test]
    fn part_names_sort_by_epoch() {
        assert_eq!(epoch_of(&part_name(42)), Some(42));
        assert!(part_name(9) < part_name(10));
        assert_eq!(epoch_of("_staging"), None);
    }
}
