//! The two RocksDB calls the `rocksdb` binding does not wrap, through RocksDB's C API:
//! each SST's sequence-number range (`rocksdb_livefiles_*_seqno`), and ingesting SSTs another
//! database wrote, keeping their sequence numbers (`allow_db_generated_files`). A restoring
//! worker needs both to build its database from only the SSTs overlapping its key groups
//! (`StateStore::from_ssts`); without them it had to download every file of an old instance.
//! All the unsafe code of the crate is here, each call on handles owned for its duration.

use librocksdb_sys as ffi;
use rocksdb::{AsRawPtr as _, DB};
use std::ffi::{CStr, CString, c_char};
use std::path::Path;

/// One SST of a database as its MANIFEST records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SstMeta {
    /// File name without directory (`000012.sst`).
    pub name: String,
    pub level: i32,
    /// Smallest and largest sequence number of its entries.
    pub seqnos: (u64, u64),
}

/// Every SST file of `db`, with level and sequence numbers.
pub fn sst_meta(db: &DB) -> Vec<SstMeta> {
    // SAFETY: `db` outlives the call; the list is owned here and destroyed before returning,
    // and the names it lends are copied out first.
    unsafe {
        let raw: *mut ffi::rocksdb_t = db.as_raw_ptr();
        let files = ffi::rocksdb_livefiles(raw);
        if files.is_null() {
            return Vec::new();
        }
        let n = ffi::rocksdb_livefiles_count(files);
        let mut out = Vec::with_capacity(n.max(0) as usize);
        for i in 0..n {
            let name = ffi::rocksdb_livefiles_name(files, i);
            if name.is_null() {
                continue;
            }
            let name = CStr::from_ptr(name).to_string_lossy();
            out.push(SstMeta {
                name: name.trim_start_matches('/').to_string(),
                level: ffi::rocksdb_livefiles_level(files, i),
                seqnos: (
                    ffi::rocksdb_livefiles_smallest_seqno(files, i),
                    ffi::rocksdb_livefiles_largest_seqno(files, i),
                ),
            });
        }
        ffi::rocksdb_livefiles_destroy(files);
        out
    }
}

/// Moves SSTs written by another database into `db`, keeping their sequence numbers. `files`
/// must come oldest first wherever they overlap (RocksDB's requirement: otherwise an older
/// value could shadow a newer one), and `db` must hold nothing they overlap.
pub fn ingest_db_generated(db: &DB, files: &[&Path]) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    let paths: Vec<CString> = files
        .iter()
        .map(|p| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| format!("{}: a path with a NUL byte", p.display()))
        })
        .collect::<Result<_, _>>()?;
    let ptrs: Vec<*const c_char> = paths.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: the options are created and destroyed here; `paths` (which `ptrs` points into)
    // and `db` outlive the call; an error string RocksDB allocates is copied, then freed.
    unsafe {
        let opts = ffi::rocksdb_ingestexternalfileoptions_create();
        ffi::rocksdb_ingestexternalfileoptions_set_move_files(opts, 1);
        // DB-generated files keep their sequence numbers; they cannot get a global one.
        ffi::rocksdb_ingestexternalfileoptions_set_snapshot_consistency(opts, 0);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_blocking_flush(opts, 0);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_db_generated_files(opts, 1);
        let mut err: *mut c_char = std::ptr::null_mut();
        ffi::rocksdb_ingest_external_file(
            db.as_raw_ptr(),
            ptrs.as_ptr(),
            ptrs.len(),
            opts,
            &mut err,
        );
        ffi::rocksdb_ingestexternalfileoptions_destroy(opts);
        if err.is_null() {
            Ok(())
        } else {
            let msg = CStr::from_ptr(err).to_string_lossy().into_owned();
            ffi::rocksdb_free(err.cast());
            Err(msg)
        }
    }
}
