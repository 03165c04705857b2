//! Helpers for tests that drive `eddy` as a child process and watch its log.
// Each test file compiles this module on its own and uses only some of it.
#![allow(dead_code)]

pub mod kafka;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
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
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The test services' settings (Kafka, S3); brings them up if they are not, so tests never
/// skip for want of them.
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
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Waits for a child started with a piped stderr to exit; asserts that it succeeded and
/// returns its log.
pub fn finish(mut child: Child) -> Vec<String> {
    let rx = stderr_lines(&mut child);
    let status = child.wait().expect("wait");
    let log: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "eddy failed: {}", log.join("\n"));
    log
}

/// A tiny deterministic PRNG, so a failure can be replayed.
pub fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

/// Starts `eddy run` (a command with a piped stderr) with the admin API on a free port;
/// returns the child, its log and the API's address.
pub fn start_admin(mut cmd: Command) -> (Child, mpsc::Receiver<String>, String) {
    cmd.args(["--admin-addr", "127.0.0.1:0"]);
    let mut child = cmd.spawn().expect("spawn");
    let rx = stderr_lines(&mut child);
    let line =
        wait_line(&rx, "admin API on http://", Duration::from_secs(30)).expect("admin address");
    let addr = line
        .rsplit("http://")
        .next()
        .expect("address")
        .trim()
        .to_string();
    (child, rx, addr)
}

/// `eddy stop --savepoint` against a running job; returns the savepoint's path.
pub fn stop_with_savepoint(addr: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["stop", "--admin", addr, "--savepoint", "--timeout", "60"])
        .output()
        .expect("eddy stop");
    assert!(
        out.status.success(),
        "eddy stop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// A plan in a temporary directory, run by `eddy run` with its checkpoints in `ckpt/` there
/// and its outputs under `out/`.
pub struct CheckpointedJob {
    pub dir: tempfile::TempDir,
    pub plan: std::path::PathBuf,
}

impl CheckpointedJob {
    /// Writes the plan `text` returns for the outputs' directory.
    pub fn write(text: impl FnOnce(&str) -> String) -> CheckpointedJob {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let plan = dir.path().join("job.yaml");
        std::fs::write(&plan, text(out.to_str().expect("utf8 path"))).expect("write plan");
        CheckpointedJob { dir, plan }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_eddy"));
        c.arg("run")
            .arg(&self.plan)
            .arg("--quiet")
            .args([
                "--checkpoint-dir",
                self.path("ckpt").to_str().expect("utf8"),
            ])
            .args(args)
            .env("EDDY_LOG", "eddy=info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    }

    pub fn path(&self, p: &str) -> std::path::PathBuf {
        self.dir.path().join(p)
    }

    /// The committed lines of output `f` (relative to the job's directory), sorted: workers
    /// interleave their results in any order.
    pub fn sorted_lines(&self, f: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.path(f)).unwrap_or_default();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }
}
