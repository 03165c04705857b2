//! Checkpoint storage on the real S3 server of `e2e/services.sh`: a state file larger than the
//! multipart threshold goes up in parts and comes back byte for byte (checksum checked by
//! `download`), and the object the server stores is whole; the credentials never appear in
//! what the storage prints about itself.

mod common;

use eddy::checkpoint::storage::CheckpointStorage;
use eddy::state::LocalFile;

#[test]
fn a_large_state_file_goes_up_in_parts_and_comes_back_whole() {
    let env = common::services();
    for (k, v) in &env {
        if k.starts_with("AWS_") {
            // SAFETY: set before the runtime below starts threads of its own.
            unsafe { std::env::set_var(k, v) };
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    // 40 MiB of data that does not compress or repeat: several 10 MiB parts.
    let mut data = vec![0u8; 40 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let src = dir.path().join("000042.sst");
    std::fs::write(&src, &data).expect("write");
    let unique = format!("multipart-{}-{}", std::process::id(), common::now_ms());
    let url = format!("s3://{}/tests/{unique}", env["S3_BUCKET"]);
    rt.block_on(async {
        let storage = CheckpointStorage::open(&url, "ns", "job")
            .await
            .expect("open");
        assert!(
            !storage.display.contains(&env["AWS_SECRET_ACCESS_KEY"]),
            "the storage's name shows the secret key: {}",
            storage.display
        );
        let files = [LocalFile {
            name: "000042.sst".into(),
            path: src.clone(),
            size: data.len() as u64,
            key_groups: Some((0, 127)),
            sst: None,
        }];
        let (refs, uploaded) = storage
            .upload_instance("0-win-w0", &files, "checkpoints/chk-0000000001", "run")
            .await
            .expect("upload");
        assert_eq!(uploaded, data.len() as u64);
        let back = dir.path().join("back");
        storage
            .download("checkpoints/chk-0000000001", &refs, &back)
            .await
            .expect("download (size and checksum are verified)");
        let got = std::fs::read(back.join("000042.sst")).expect("read back");
        assert!(got == data, "the file came back different");
        // The server (posix backend: one file per object) holds it whole.
        let on_disk = walk(std::path::Path::new(&env["S3_ROOT"]))
            .into_iter()
            .filter(|p| {
                let p = p.to_string_lossy();
                p.contains(&unique) && p.ends_with(&refs[0].object)
            })
            .collect::<Vec<_>>();
        assert_eq!(
            on_disk.len(),
            1,
            "object {} not found on the server",
            refs[0].object
        );
        assert_eq!(
            std::fs::metadata(&on_disk[0]).expect("stat").len(),
            data.len() as u64
        );
    });
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
