//! The cache file: the last good snapshot, kept between runs so that a client starting while
//! the server is unreachable still serves the flags it last had.
//!
//! The file is JSON: `{"flagstaff_cache": 1, "epoch": E, "revision": R, "document": D}` where
//! `D` is an export document (DESIGN.md 6a) with versions. It is written off the hot path by a
//! thread of its own, latest snapshot wins, to a temporary file that is synced and then renamed
//! over the old one, so a crash leaves the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use flagstaff_engine::{Document, Snapshot};
use serde_json::{json, Value};

/// The format's version, the value of `flagstaff_cache`.
const FORMAT: u64 = 1;

/// A snapshot read back from a cache file.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) snapshot: Snapshot,
    pub(crate) epoch: String,
    pub(crate) revision: u64,
}

/// Reads the cache file at `path`; `None` (logged) when it is missing or unusable.
pub(crate) fn load(path: &Path) -> Option<Cached> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the flagstaff cache file");
            return None;
        }
    };
    match parse(&text) {
        Ok(cached) => Some(cached),
        Err(why) => {
            tracing::warn!(path = %path.display(), reason = %why, "ignoring the flagstaff cache file");
            None
        }
    }
}

fn parse(text: &str) -> Result<Cached, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if value.get("flagstaff_cache").and_then(Value::as_u64) != Some(FORMAT) {
        return Err(format!("not a flagstaff cache file of format {FORMAT}"));
    }
    let epoch = value
        .get("epoch")
        .and_then(Value::as_str)
        .ok_or("no epoch")?
        .to_owned();
    let revision = value
        .get("revision")
        .and_then(Value::as_u64)
        .ok_or("no revision")?;
    let document = value.get("document").ok_or("no document")?;
    let snapshot = Snapshot::from_value(document).map_err(|e| e.to_string())?;
    Ok(Cached {
        snapshot,
        epoch,
        revision,
    })
}

/// The cache file's text for `snapshot`, the server's `revision` of `epoch`.
fn render(snapshot: &Snapshot, epoch: &str, revision: u64) -> String {
    let document = Document {
        environment: "cache".to_owned(),
        flags: snapshot.flags().cloned().collect(),
        segments: snapshot.segments().cloned().collect(),
    };
    json!({
        "flagstaff_cache": FORMAT,
        "epoch": epoch,
        "revision": revision,
        "document": document,
    })
    .to_string()
}

/// Writes `text` to `path` atomically: a synced temporary file renamed over it.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[derive(Debug, Default)]
struct Pending {
    latest: Option<(Arc<Snapshot>, String, u64)>,
    closed: bool,
}

/// Writes each new snapshot to the cache file on a thread of its own; dropping it stops the
/// thread once the latest snapshot is written.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<(Mutex<Pending>, Condvar)>,
}

impl Writer {
    /// Starts the writing thread for `path`.
    pub(crate) fn start(path: PathBuf) -> Writer {
        let shared = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
        let theirs = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("flagstaff-cache".to_owned())
            .spawn(move || write_loop(&path, &theirs));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the flagstaff cache writer; no cache file will be written");
        }
        Writer { shared }
    }

    /// Queues `snapshot` to be written, replacing any not written yet.
    pub(crate) fn save(&self, snapshot: Arc<Snapshot>, epoch: &str, revision: u64) {
        let (pending, wake) = &*self.shared;
        let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.latest = Some((snapshot, epoch.to_owned(), revision));
        wake.notify_one();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let (pending, wake) = &*self.shared;
        pending.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        wake.notify_one();
    }
}

fn write_loop(path: &Path, shared: &(Mutex<Pending>, Condvar)) {
    let (pending, wake) = shared;
    loop {
        let next = {
            let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            while pending.latest.is_none() && !pending.closed {
                pending = wake.wait(pending).unwrap_or_else(|p| p.into_inner());
            }
            match pending.latest.take() {
                Some(next) => next,
                None => return,
            }
        };
        let (snapshot, epoch, revision) = next;
        if let Err(e) = write_atomically(path, &render(&snapshot, &epoch, revision)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the flagstaff cache file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_cache_reads_back_and_junk_is_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("flags.cache");
        let snapshot = Snapshot::from_text(
            r#"{"environment": "e", "flags": [{"key": "a", "kind": "boolean",
                "variants": {"on": true, "off": false}, "off_variant": "off", "enabled": true,
                "default": {"variant": "on"}, "version": 7}]}"#,
        )
        .expect("valid");
        write_atomically(&path, &render(&snapshot, "ep", 7)).expect("written");
        let cached = load(&path).expect("read back");
        assert_eq!((cached.epoch.as_str(), cached.revision), ("ep", 7));
        assert_eq!(
            cached.snapshot.flags().collect::<Vec<_>>(),
            snapshot.flags().collect::<Vec<_>>()
        );
        std::fs::write(&path, "{not json").expect("write");
        assert!(load(&path).is_none());
        assert!(load(&dir.path().join("missing")).is_none());
    }
}
