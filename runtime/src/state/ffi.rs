//! The RocksDB call the `rocksdb` binding does not wrap, through RocksDB's C API: ingesting
//! SSTs another database wrote, keeping their sequence numbers (`allow_db_generated_files`).
//! A restoring worker needs it to build its database from only the SSTs overlapping its key
//! groups (`StateStore::from_ssts`); without it, it had to download every file of an old
//! instance. Its unsafe code works on handles owned for the call (the crate has one other
//! unsafe block: `Value::clone` in `record.rs`).

use librocksdb_sys as ffi;
use rocksdb::{AsRawPtr as _, DB};
use std::ffi::{CStr, CString, c_char};
use std::path::Path;

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
