//! Helpers for tests that drive `eddy` as a child process and watch its log.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Lines of a child's stderr, as they come.
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a stderr line containing `needle`; returns it.
pub fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The repository's root.
#[allow(dead_code)]
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The test services' settings (Kafka, S3); brings them up if they are not, so tests never
/// skip for want of them.
#[allow(dead_code)]
pub fn services() -> std::collections::HashMap<String, String> {
    service("up");
    std::fs::read_to_string(root().join("e2e/.services.env"))
        .expect("e2e/.services.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `e2e/services.sh CMD` (up, stop-s3, start-kafka, ...) and checks it succeeded.
#[allow(dead_code)]
pub fn service(cmd: &str) {
    let ok = std::process::Command::new("bash")
        .arg(root().join("e2e/services.sh"))
        .args(cmd.split(' '))
        .status()
        .expect("e2e/services.sh")
        .success();
    assert!(ok, "e2e/services.sh {cmd} failed");
}

/// Milliseconds since the epoch, for unique names.
#[allow(dead_code)]
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
