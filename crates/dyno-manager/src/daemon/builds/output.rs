//! A build's output: kept whole while the build runs (readers that come late get all of it,
//! then the rest as it comes) and written through to a file of the data dir, read from there
//! after the build (also after a daemon that died during it).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

/// The most output one build keeps; more is cut with a line saying so (a runaway buildpack
/// must not fill the daemon's memory).
const MAX_OUTPUT_BYTES: usize = 8 << 20;

#[derive(Default)]
struct Text {
    bytes: Vec<u8>,
    cut: bool,
    /// The output's file, appended to as the output comes (`None` when it cannot be opened:
    /// the output then lives in memory only).
    file: Option<std::fs::File>,
}

/// The output of a running build.
pub struct BuildOutput {
    text: Mutex<Text>,
    /// Bumped on every append; `true` once the build ended.
    changed: watch::Sender<(u64, bool)>,
}

impl BuildOutput {
    pub fn new(file: PathBuf) -> Arc<BuildOutput> {
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file);
        if let Err(e) = &opened {
            tracing::warn!("build output {}: {e}", file.display());
        }
        Arc::new(BuildOutput {
            text: Mutex::new(Text {
                file: opened.ok(),
                ..Text::default()
            }),
            changed: watch::channel((0, false)).0,
        })
    }

    /// Appends raw output (the build dyno's bytes).
    pub fn append(&self, bytes: &[u8]) {
        {
            let mut text = crate::lock(&self.text);
            if text.cut {
                return;
            }
            let kept: &[u8] = if text.bytes.len() + bytes.len() > MAX_OUTPUT_BYTES {
                text.cut = true;
                b"\n !     The build's output is over 8 MB: the rest is not kept.\n"
            } else {
                bytes
            };
            text.bytes.extend_from_slice(kept);
            if let Some(file) = text.file.as_mut() {
                use std::io::Write;
                let _ = file.write_all(kept);
            }
        }
        self.changed.send_modify(|(n, _)| *n += 1);
    }

    /// Appends one line of the platform's own (`-----> Launching...`).
    pub fn line(&self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.append(&bytes);
    }

    /// The build ended: its file is closed, readers get the end.
    pub fn finish(&self) {
        drop(crate::lock(&self.text).file.take());
        self.changed.send_modify(|(_, done)| *done = true);
    }

    /// All of the output so far, then the rest as it comes, until the build ends.
    pub fn follow(self: &Arc<Self>) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(16);
        let output = self.clone();
        tokio::spawn(async move {
            let mut changed = output.changed.subscribe();
            let mut sent = 0;
            loop {
                let done = changed.borrow_and_update().1;
                let chunk = {
                    let text = crate::lock(&output.text);
                    Bytes::copy_from_slice(&text.bytes[sent.min(text.bytes.len())..])
                };
                sent += chunk.len();
                if !chunk.is_empty() && tx.send(chunk).await.is_err() {
                    return;
                }
                if done || changed.changed().await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}

/// The output of a build that ended, from its file (empty when there is none).
pub fn finished(file: PathBuf) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let bytes = tokio::fs::read(&file).await.unwrap_or_default();
        if !bytes.is_empty() {
            let _ = tx.send(Bytes::from(bytes)).await;
        }
    });
    rx
}
