//! Checkpoint storage through `object_store`: uploads of state files (shared between
//! checkpoints, so each is uploaded once), manifests and metadata; listing, validation,
//! downloads for restore, retention and savepoint copies. Local paths now, S3 by the same code.

use super::{Base, CheckpointError, FileRef, Metadata, WorkerManifest};
use bytes::Bytes;
use futures::StreamExt as _;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Files above this size are uploaded in parts.
const MULTIPART_ABOVE: u64 = 16 << 20;

/// A stored shared file: object path (relative to the job root), size, checksum.
type Stored = (String, u64, u64);

pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    /// `<namespace>/<job>` inside the store.
    root: String,
    /// Shown in messages.
    pub display: String,
    /// Uploaded shared files: (instance, local file name) -> object path (relative to root).
    uploaded: Mutex<HashMap<(String, String), Stored>>,
}

fn store_err(path: &str) -> impl Fn(object_store::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Store {
        path: path.to_string(),
        source,
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A remote store and the path prefix inside it.
type Remote = crate::objstore::Remote;

fn remote(url: &str) -> Result<Option<Remote>, CheckpointError> {
    crate::objstore::remote(url).map_err(|e| CheckpointError::Invalid {
        path: e.url,
        msg: e.msg,
    })
}

use crate::objstore::short;

/// The checkpoint directory name of checkpoint `id` (zero-padded so names sort by id).
pub fn chk_dir(id: u64) -> String {
    format!("checkpoints/chk-{id:010}")
}

impl CheckpointStorage {
    /// Storage under a local directory (`file://` URLs or plain paths).
    pub fn local(dir: &str, namespace: &str, job: &str) -> Result<Self, CheckpointError> {
        let path = dir.strip_prefix("file://").unwrap_or(dir);
        std::fs::create_dir_all(path).map_err(io_err(Path::new(path)))?;
        let store =
            object_store::local::LocalFileSystem::new_with_prefix(path).map_err(store_err(path))?;
        Ok(CheckpointStorage {
            store: Arc::new(store),
            root: format!("{namespace}/{job}"),
            display: format!("{path}/{namespace}/{job}"),
            uploaded: Mutex::new(HashMap::new()),
        })
    }

    /// Storage at a URL: `s3://bucket/prefix` (credentials, region and endpoint from the
    /// standard `AWS_*` environment variables), else a local directory or `file://` URL.
    /// Checks that the store answers, so bad credentials or a missing bucket fail at start.
    pub async fn open(url: &str, namespace: &str, job: &str) -> Result<Self, CheckpointError> {
        let Some((store, prefix)) = remote(url)? else {
            return Self::local(url, namespace, job);
        };
        let root = [prefix.as_str(), namespace, job]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let storage = CheckpointStorage {
            store,
            root,
            display: format!("{}/{namespace}/{job}", url.trim_end_matches('/')),
            uploaded: Mutex::new(HashMap::new()),
        };
        storage.check(url).await?;
        Ok(storage)
    }

    /// One listing, so a store that cannot be used says why at start rather than at the first
    /// checkpoint.
    async fn check(&self, url: &str) -> Result<(), CheckpointError> {
        let prefix = self.obj("checkpoints");
        match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(CheckpointError::Invalid {
                path: url.to_string(),
                msg: format!(
                    "the checkpoint store refused a listing ({}); check the bucket name in --checkpoint-dir, the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), AWS_REGION and, for S3-compatible servers, AWS_ENDPOINT_URL",
                    short(&e)
                ),
            }),
        }
    }

    /// Storage rooted at a job directory itself, for `--restore <path>` of a checkpoint or
    /// savepoint directory (`<job root>/checkpoints/chk-<n>` or `<job root>/savepoints/sp-..`).
    /// Returns the storage and the checkpoint's path relative to it.
    pub fn for_restore_path(path: &str) -> Result<(Self, String), CheckpointError> {
        if let Some((store, prefix)) = remote(path)? {
            let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
            let [root @ .., kind, name] = parts.as_slice() else {
                return Err(CheckpointError::Invalid {
                    path: path.to_string(),
                    msg: "expected …/<namespace>/<job>/savepoints/sp-… or …/checkpoints/chk-…"
                        .into(),
                });
            };
            return Ok((
                CheckpointStorage {
                    store,
                    root: root.join("/"),
                    display: path.to_string(),
                    uploaded: Mutex::new(HashMap::new()),
                },
                format!("{kind}/{name}"),
            ));
        }
        let p = Path::new(path.strip_prefix("file://").unwrap_or(path));
        let bad = |msg: &str| CheckpointError::Invalid {
            path: path.to_string(),
            msg: msg.to_string(),
        };
        let (Some(name), Some(kind), Some(root)) = (
            p.file_name().and_then(|n| n.to_str()),
            p.parent()
                .and_then(|k| k.file_name())
                .and_then(|n| n.to_str()),
            p.parent().and_then(Path::parent),
        ) else {
            return Err(bad(
                "expected a checkpoint or savepoint directory like <dir>/<namespace>/<job>/savepoints/sp-...",
            ));
        };
        if !p.join("_metadata.json").is_file() {
            return Err(bad(
                "no _metadata.json here: not a complete checkpoint or savepoint",
            ));
        }
        let root = if root.as_os_str().is_empty() {
            Path::new(".")
        } else {
            root
        };
        let store =
            object_store::local::LocalFileSystem::new_with_prefix(root).map_err(store_err(path))?;
        Ok((
            CheckpointStorage {
                store: Arc::new(store),
                root: String::new(),
                display: root.display().to_string(),
                uploaded: Mutex::new(HashMap::new()),
            },
            format!("{kind}/{name}"),
        ))
    }

    fn obj(&self, rel: &str) -> ObjPath {
        if self.root.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{}", self.root, rel))
        }
    }

    async fn put(&self, rel: &str, data: Bytes) -> Result<(), CheckpointError> {
        let p = self.obj(rel);
        self.store
            .put(&p, PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(store_err(rel))
    }

    async fn get(&self, rel: &str) -> Result<Bytes, CheckpointError> {
        let p = self.obj(rel);
        let r = self.store.get(&p).await.map_err(store_err(rel))?;
        r.bytes().await.map_err(store_err(rel))
    }

    /// Uploads a local file to `rel`, in parts when it is large; returns (size, checksum).
    async fn upload(&self, local: &Path, rel: &str) -> Result<(u64, u64), CheckpointError> {
        // Fault injection for the crash tests: a slow store, so a kill can land mid-upload.
        if let Some(ms) = std::env::var("EDDY_TEST_UPLOAD_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let data = tokio::fs::read(local).await.map_err(io_err(local))?;
        let size = data.len() as u64;
        let checksum = xxhash_rust::xxh3::xxh3_64(&data);
        if size > MULTIPART_ABOVE {
            use tokio::io::AsyncWriteExt as _;
            let mut w = object_store::buffered::BufWriter::new(self.store.clone(), self.obj(rel));
            let r = async {
                w.write_all(&data).await?;
                w.shutdown().await
            }
            .await;
            r.map_err(io_err(Path::new(rel)))?;
        } else {
            self.put(rel, Bytes::from(data)).await?;
        }
        Ok((size, checksum))
    }

    /// Uploads one instance's database checkpoint (`files` in `dir`): SSTs go to `shared/`
    /// unless an earlier checkpoint of this run uploaded them; the rest under `chk_rel`.
    /// Returns the file list and the bytes uploaded.
    pub async fn upload_instance(
        &self,
        instance: &str,
        files: &[crate::state::LocalFile],
        chk_rel: &str,
        run_id: &str,
    ) -> Result<(Vec<FileRef>, u64), CheckpointError> {
        let mut refs = Vec::with_capacity(files.len());
        let mut uploaded = 0;
        for f in files {
            let shared = f.name.ends_with(".sst");
            let known = shared
                .then(|| {
                    self.uploaded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&(instance.to_string(), f.name.clone()))
                        .cloned()
                })
                .flatten();
            let (object, size, checksum) = match known {
                Some(k) => k,
                None => {
                    let object = if shared {
                        format!("shared/{run_id}-{instance}-{}", f.name)
                    } else {
                        format!("{chk_rel}/{instance}/{}", f.name)
                    };
                    let (size, checksum) = self.upload(&f.path, &object).await?;
                    uploaded += size;
                    if shared {
                        self.uploaded
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(
                                (instance.to_string(), f.name.clone()),
                                (object.clone(), size, checksum),
                            );
                    }
                    (object, size, checksum)
                }
            };
            refs.push(FileRef {
                name: f.name.clone(),
                object,
                base: Base::Job,
                size,
                checksum,
                key_groups: f.key_groups,
                level: f.sst.map(|s| s.0),
                rank: f.sst.map(|s| s.1),
            });
        }
        Ok((refs, uploaded))
    }

    /// Remembers that a restored instance's SSTs are already stored (so they are not uploaded
    /// again by the next checkpoint).
    pub fn adopt(&self, instance: &str, refs: &[FileRef]) {
        let mut up = self.uploaded.lock().unwrap_or_else(|p| p.into_inner());
        for r in refs {
            if r.base == Base::Job && r.object.starts_with("shared/") {
                up.insert(
                    (instance.to_string(), r.name.clone()),
                    (r.object.clone(), r.size, r.checksum),
                );
            }
        }
    }

    pub fn forget_adopted(&self) {
        self.uploaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The highest checkpoint id present, complete or not: a new run numbers after it, so
    /// restoring an older savepoint never reuses (and overwrites) an existing id.
    pub async fn highest_id(&self) -> Result<u64, CheckpointError> {
        Ok(self
            .list_checkpoints()
            .await?
            .iter()
            .filter_map(|d| d.strip_prefix("checkpoints/chk-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0))
    }

    /// Writes the manifests and then, last, `_metadata.json` of a checkpoint at `dir_rel`.
    pub async fn commit(
        &self,
        dir_rel: &str,
        manifests: &[WorkerManifest],
        meta: &mut Metadata,
    ) -> Result<(), CheckpointError> {
        meta.manifests.clear();
        for m in manifests {
            let name = format!("worker-{}.manifest.json", m.worker);
            let body = serde_json::to_vec_pretty(m).map_err(|e| CheckpointError::Invalid {
                path: name.clone(),
                msg: e.to_string(),
            })?;
            self.put(&format!("{dir_rel}/{name}"), body.into()).await?;
            meta.manifests.push(name);
        }
        let body = serde_json::to_vec_pretty(meta).map_err(|e| CheckpointError::Invalid {
            path: dir_rel.into(),
            msg: e.to_string(),
        })?;
        self.put(&format!("{dir_rel}/_metadata.json"), body.into())
            .await
    }

    /// Copies a completed checkpoint into a self-contained savepoint directory.
    pub async fn savepoint_from(&self, chk_rel: &str, sp_rel: &str) -> Result<(), CheckpointError> {
        let (mut meta, mut manifests) = self.load(chk_rel).await?;
        for m in &mut manifests {
            for inst in &mut m.instances {
                for f in &mut inst.files {
                    let src = self.resolve(chk_rel, f);
                    let to = format!("files/{}-{}-{}", inst.operator, inst.worker, f.name);
                    let data = self.get(&src).await?;
                    self.put(&format!("{sp_rel}/{to}"), data).await?;
                    f.object = to;
                    f.base = Base::Own;
                }
            }
        }
        meta.savepoint = true;
        self.commit(sp_rel, &manifests, &mut meta).await
    }

    /// A stored file's path relative to the job root.
    pub fn resolve(&self, dir_rel: &str, f: &FileRef) -> String {
        match f.base {
            Base::Job => f.object.clone(),
            Base::Own => format!("{dir_rel}/{}", f.object),
        }
    }

    /// Reads a checkpoint's metadata and manifests.
    pub async fn load(
        &self,
        dir_rel: &str,
    ) -> Result<(Metadata, Vec<WorkerManifest>), CheckpointError> {
        let invalid = |msg: String| CheckpointError::Invalid {
            path: format!("{}/{dir_rel}", self.display),
            msg,
        };
        let raw = self.get(&format!("{dir_rel}/_metadata.json")).await?;
        let meta: Metadata =
            serde_json::from_slice(&raw).map_err(|e| invalid(format!("_metadata.json: {e}")))?;
        let mut manifests = Vec::new();
        for m in &meta.manifests {
            let raw = self.get(&format!("{dir_rel}/{m}")).await?;
            manifests.push(serde_json::from_slice(&raw).map_err(|e| invalid(format!("{m}: {e}")))?);
        }
        Ok((meta, manifests))
    }

    /// Checks that every file a checkpoint references exists with its recorded size.
    pub async fn verify(
        &self,
        dir_rel: &str,
        manifests: &[WorkerManifest],
    ) -> Result<(), CheckpointError> {
        for m in manifests {
            for inst in &m.instances {
                for f in &inst.files {
                    let rel = self.resolve(dir_rel, f);
                    let head = self
                        .store
                        .head(&self.obj(&rel))
                        .await
                        .map_err(store_err(&rel))?;
                    if head.size != f.size {
                        return Err(CheckpointError::Invalid {
                            path: rel,
                            msg: format!("{} bytes, expected {}", head.size, f.size),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Downloads one instance's files into `dest`, checking sizes and checksums.
    pub async fn download(
        &self,
        dir_rel: &str,
        files: &[FileRef],
        dest: &Path,
    ) -> Result<PathBuf, CheckpointError> {
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(io_err(dest))?;
        for f in files {
            let rel = self.resolve(dir_rel, f);
            let data = self.get(&rel).await?;
            if data.len() as u64 != f.size || xxhash_rust::xxh3::xxh3_64(&data) != f.checksum {
                return Err(CheckpointError::Invalid {
                    path: rel,
                    msg: "contents differ from the manifest (truncated or corrupt)".into(),
                });
            }
            let to = dest.join(&f.name);
            tokio::fs::write(&to, &data).await.map_err(io_err(&to))?;
        }
        Ok(dest.to_path_buf())
    }

    /// Completed-or-not checkpoint directories, newest first.
    pub async fn list_checkpoints(&self) -> Result<Vec<String>, CheckpointError> {
        let prefix = self.obj("checkpoints");
        let listing = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(store_err("checkpoints"))?;
        let mut dirs: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(|f| format!("checkpoints/{f}")))
            .filter(|d| d.starts_with("checkpoints/chk-"))
            .collect();
        dirs.sort();
        dirs.reverse();
        Ok(dirs)
    }

    /// Deletes every object under `dir_rel`.
    pub async fn delete_dir(&self, dir_rel: &str) -> Result<(), CheckpointError> {
        let prefix = self.obj(dir_rel);
        let mut objects = self.store.list(Some(&prefix));
        let mut paths = Vec::new();
        while let Some(o) = objects.next().await {
            paths.push(o.map_err(store_err(dir_rel))?.location);
        }
        for p in paths {
            self.store.delete(&p).await.map_err(store_err(dir_rel))?;
        }
        Ok(())
    }

    /// Keeps the newest `keep` completed checkpoints; deletes older ones, incomplete ones older
    /// than the newest complete one, and shared files no retained checkpoint references.
    pub async fn retain(&self, keep: usize) -> Result<(), CheckpointError> {
        let dirs = self.list_checkpoints().await?;
        let mut kept = 0;
        let mut referenced = BTreeSet::new();
        let mut newest_complete = false;
        for d in &dirs {
            match self.load(d).await {
                Ok((_, manifests)) if kept < keep => {
                    kept += 1;
                    newest_complete = true;
                    for m in &manifests {
                        for inst in &m.instances {
                            for f in &inst.files {
                                referenced.insert(self.resolve(d, f));
                            }
                        }
                    }
                }
                // Incomplete and newer than every complete one: maybe still being written.
                Err(_) if !newest_complete => {}
                _ => self.delete_dir(d).await?,
            }
        }
        if kept == 0 {
            return Ok(());
        }
        let shared = self.obj("shared");
        let mut objects = self.store.list(Some(&shared));
        let mut orphans = Vec::new();
        while let Some(o) = objects.next().await {
            let o = o.map_err(store_err("shared"))?;
            let rel = o
                .location
                .as_ref()
                .strip_prefix(&format!("{}/", self.root))
                .unwrap_or(o.location.as_ref())
                .to_string();
            if !referenced.contains(&rel) {
                orphans.push((o.location, rel));
            }
        }
        self.uploaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (obj, _, _)| referenced.contains(obj));
        for (p, rel) in orphans {
            self.store.delete(&p).await.map_err(store_err(&rel))?;
        }
        Ok(())
    }
}
