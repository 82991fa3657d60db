//! `Admin.Backup`: the backup file of a running server, streamed in chunks.

use std::io::Write;

use flagstaff_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::service::AdminService;
use crate::auth::Access;
use crate::storage::Store;

/// The largest chunk of a backup sent in one message.
const CHUNK: usize = 1024 * 1024;

/// The chunks of a backup as the server produces them; an error ends the stream.
pub type BackupStream = ReceiverStream<Result<pb::BackupChunk, Status>>;

pub(super) async fn backup<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::BackupRequest>,
) -> Result<Response<BackupStream>, Status> {
    admin.allow(&request, Access::Admin).await?;
    let envs = admin.envs.clone();
    // A few chunks ahead of the client, no more: a slow client slows the backup, and holds
    // each environment's writer lock no longer than reading it from the store takes.
    let (chunks, stream) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = Chunks {
            buffered: Vec::with_capacity(CHUNK),
            chunks: chunks.clone(),
        };
        let kind = envs.store().kind();
        if let Err(e) = crate::backup::write_to(&mut out, kind, |visit| envs.backup(visit)) {
            // The client may be gone already; then nobody needs the error.
            let _ = chunks.blocking_send(Err(Status::from(e)));
        }
    });
    Ok(Response::new(ReceiverStream::new(stream)))
}

/// Writes a backup as chunks of at most [`CHUNK`] bytes to a stream's channel.
struct Chunks {
    buffered: Vec<u8>,
    chunks: mpsc::Sender<Result<pb::BackupChunk, Status>>,
}

impl Chunks {
    fn send(&mut self, data: Vec<u8>) -> std::io::Result<()> {
        self.chunks
            .blocking_send(Ok(pb::BackupChunk { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffered.extend_from_slice(data);
        while self.buffered.len() >= CHUNK {
            let rest = self.buffered.split_off(CHUNK);
            let full = std::mem::replace(&mut self.buffered, rest);
            self.send(full)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buffered.is_empty() {
            let last = std::mem::take(&mut self.buffered);
            self.send(last)?;
        }
        Ok(())
    }
}
