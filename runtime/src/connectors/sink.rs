//! Sinks write JSON lines: to stdout or to a file. Dead letters go through the same writers.

use super::{ConnectorError, SinkSpec};
use crate::operators::DeadLetter;
use crate::record::{Batch, JsonLines, write_json_str};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Smaller than a chunk of 1,024 encoded results, which then goes straight to the file
/// instead of being copied into the buffer first (2-3 % of a keyed count's instructions with
/// 256 KiB); small writes (dead letters, a watermark's few rows) are still gathered.
pub(crate) const WRITE_BUFFER: usize = 64 * 1024;

/// A sink instance; sinks run as a single instance that all workers feed.
pub trait Sink: Send {
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectorError>;
    /// Writes rows the sender already encoded as JSON lines.
    fn write_encoded(&mut self, lines: &[u8]) -> Result<(), ConnectorError>;
    fn finish(&mut self) -> Result<(), ConnectorError>;
}

pub struct LineSink {
    name: String,
    out: Box<dyn Write + Send>,
    buf: String,
    lines: Vec<u8>,
}

impl LineSink {
    pub fn open(spec: &SinkSpec) -> Result<LineSink, ConnectorError> {
        Self::open_with(spec, false)
    }

    /// Opens for appending: dead letters of earlier runs of a restarted job are kept.
    pub fn open_append(spec: &SinkSpec) -> Result<LineSink, ConnectorError> {
        Self::open_with(spec, true)
    }

    fn open_with(spec: &SinkSpec, append: bool) -> Result<LineSink, ConnectorError> {
        Ok(match spec {
            SinkSpec::Stdout => LineSink {
                name: "stdout".into(),
                out: Box::new(std::io::stdout()),
                buf: String::new(),
                lines: Vec::new(),
            },
            SinkSpec::File { path } => {
                let io = |e| ConnectorError::Io {
                    path: path.clone(),
                    source: e,
                };
                if let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let f = if append {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                } else {
                    File::create(path)
                }
                .map_err(io)?;
                LineSink {
                    name: path.clone(),
                    out: Box::new(BufWriter::with_capacity(WRITE_BUFFER, f)),
                    buf: String::new(),
                    lines: Vec::new(),
                }
            }
            SinkSpec::Parts { path } => {
                return Err(ConnectorError::Config(format!(
                    "{path}: a part-file prefix is not a line sink"
                )));
            }
            SinkSpec::Kafka(k) => {
                return Err(ConnectorError::Config(format!(
                    "kafka topic `{}` is not a line sink",
                    k.topic
                )));
            }
        })
    }

    fn io(&self, e: std::io::Error) -> ConnectorError {
        ConnectorError::Io {
            path: self.name.clone(),
            source: e,
        }
    }

    pub fn write_dead(&mut self, d: &DeadLetter) -> Result<(), ConnectorError> {
        self.buf.clear();
        self.buf.push_str("{\"step\":");
        write_json_str(&d.step, &mut self.buf);
        self.buf.push_str(",\"reason\":");
        write_json_str(&d.reason, &mut self.buf);
        self.buf.push_str(",\"record\":");
        write_json_str(&d.record, &mut self.buf);
        self.buf.push_str("}\n");
        let r = self.out.write_all(self.buf.as_bytes());
        r.map_err(|e| self.io(e))
    }
}

impl Sink for LineSink {
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectorError> {
        let mut lines = std::mem::take(&mut self.lines);
        lines.clear();
        JsonLines::new(&batch.schema).encode(batch, &mut lines);
        let r = self.out.write_all(&lines);
        self.lines = lines;
        r.map_err(|e| self.io(e))
    }

    fn write_encoded(&mut self, lines: &[u8]) -> Result<(), ConnectorError> {
        let r = self.out.write_all(lines);
        r.map_err(|e| self.io(e))
    }

    fn finish(&mut self) -> Result<(), ConnectorError> {
        let r = self.out.flush();
        r.map_err(|e| self.io(e))
    }
}
