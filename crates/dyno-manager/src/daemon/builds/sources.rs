//! Source uploads (`POST /apps/{app}/sources`, then `PUT` to its URL): each a file of the data
//! dir under a random secret, for an hour. A build reads it from there (the URL must be one of
//! this daemon's: dyno builds only from its own uploads).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dyno_error::ErrorKind;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::daemon::DaemonError;

/// How long an upload slot (and its archive) stays.
const SOURCE_LIFETIME: Duration = Duration::from_secs(3600);
/// Upload slots open at once (each may hold an archive).
const MAX_SOURCES: usize = 1000;

struct Slot {
    app: String,
    file: PathBuf,
    created: Instant,
    uploaded: bool,
}

#[derive(Default)]
pub struct Sources {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Sources {
    /// A new slot of `app`; its secret.
    pub fn create(&self, app: &str, dir: &Path) -> Result<String, DaemonError> {
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let mut slots = crate::lock(&self.slots);
        expire(&mut slots);
        if slots.len() >= MAX_SOURCES {
            return Err(DaemonError::new(
                ErrorKind::Busy,
                "too many source uploads are open; build or wait for them to expire (1 hour)",
            ));
        }
        slots.insert(
            secret.clone(),
            Slot {
                app: app.to_string(),
                file: dir.join(format!("{secret}.tar")),
                created: Instant::now(),
                uploaded: false,
            },
        );
        Ok(secret)
    }

    /// Stores the upload of `secret`, whole or not at all.
    pub async fn put(
        &self,
        secret: &str,
        mut chunks: mpsc::Receiver<Result<Bytes, String>>,
        data_dir: &Path,
    ) -> Result<(), DaemonError> {
        let io_error = |e| crate::daemon::slug::data_dir_error(e, data_dir, "source upload");
        let file = self.slot_file(secret)?;
        if let Some(dir) = file.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io_error)?;
        }
        let partial = file.with_extension("part");
        let mut out = tokio::fs::File::create(&partial).await.map_err(io_error)?;
        let written: Result<(), DaemonError> = async {
            while let Some(chunk) = chunks.recv().await {
                let chunk = chunk.map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e))?;
                out.write_all(&chunk).await.map_err(io_error)?;
            }
            out.sync_all().await.map_err(io_error)?;
            tokio::fs::rename(&partial, &file).await.map_err(io_error)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
            return written;
        }
        if let Some(slot) = crate::lock(&self.slots).get_mut(secret) {
            slot.uploaded = true;
        }
        Ok(())
    }

    /// The uploaded archive of `secret`, read in chunks as the reader takes them (an archive
    /// may be hundreds of MB: never whole in memory).
    pub async fn get(&self, secret: &str) -> Result<mpsc::Receiver<Bytes>, DaemonError> {
        let file = self.uploaded(secret)?.1;
        let mut file = tokio::fs::File::open(&file)
            .await
            .map_err(|e| DaemonError::new(ErrorKind::Internal, format!("source upload: {e}")))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match file.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }

    /// The app and file of an uploaded source, named by its URL (`…/sources/{secret}`).
    pub fn by_url(&self, url: &str) -> Result<(String, PathBuf), DaemonError> {
        let secret = url
            .split_once("/sources/")
            .map(|(_, s)| s.trim_end_matches('/'))
            .filter(|s| !s.is_empty() && !s.contains('/'))
            .ok_or_else(|| {
                DaemonError::new(
                    ErrorKind::InvalidParams,
                    format!(
                        "dyno builds only from its own source uploads: create one with \
                         POST /apps/APP/sources, PUT the tarball to its put_url, and build \
                         from its get_url (got {url:?})"
                    ),
                )
            })?;
        self.uploaded(secret)
    }

    fn uploaded(&self, secret: &str) -> Result<(String, PathBuf), DaemonError> {
        let mut slots = crate::lock(&self.slots);
        expire(&mut slots);
        match slots.get(secret) {
            Some(slot) if slot.uploaded => Ok((slot.app.clone(), slot.file.clone())),
            Some(_) => Err(DaemonError::new(
                ErrorKind::InvalidParams,
                "nothing was uploaded to this source yet: PUT the tarball to its put_url first",
            )),
            None => Err(unknown()),
        }
    }

    fn slot_file(&self, secret: &str) -> Result<PathBuf, DaemonError> {
        let mut slots = crate::lock(&self.slots);
        expire(&mut slots);
        slots
            .get(secret)
            .map(|s| s.file.clone())
            .ok_or_else(unknown)
    }
}

fn unknown() -> DaemonError {
    DaemonError::new(
        ErrorKind::NotFound,
        "no such source upload (it may have expired after an hour): create a new one with \
         POST /apps/APP/sources",
    )
}

fn expire(slots: &mut HashMap<String, Slot>) {
    slots.retain(|_, slot| {
        let keep = slot.created.elapsed() < SOURCE_LIFETIME;
        if !keep {
            let _ = std::fs::remove_file(&slot.file);
        }
        keep
    });
}
