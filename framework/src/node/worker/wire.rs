//! What a node and its slot workers say to each other: length-prefixed
//! JSON frames over the worker's stdin and stdout.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::Failure;
use crate::protocol::{Assignment, AttemptKey, SplitPlan, Usage};

/// The largest frame either side accepts (a split plan of a million tasks
/// travels as a file, not in a frame).
const MAX_FRAME: u32 = 256 << 20;

/// How a worker is set up: the first frame it reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Setup {
    /// The slot's own folder (its `inputs` and `output` live there).
    pub slot_dir: PathBuf,
    /// Where the worker leaves files for the node to upload.
    pub outbox: PathBuf,
    /// Where compiled `run-program` programs are cached.
    pub program_cache: PathBuf,
    /// The node's shared folder (`/shared`: read-only for tasks).
    pub shared_dir: PathBuf,
    /// The largest linear memory any attempt may be given, in bytes.
    pub max_memory_bytes: u64,
}

/// A request from the node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Run an attempt (after the ones sent before).
    Run(Box<Run>),
    /// Stop an attempt: at once if it runs, or skip it when its turn comes.
    Cancel(AttemptKey),
    /// Run the pool's start task (with `/shared` writable).
    StartTask(Box<StartTask>),
}

/// A pool's start task, with where its files are on this machine.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StartTask {
    /// The extracted image, mounted at `/app`.
    pub app: PathBuf,
    /// The program, under `/app`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its wall-clock limit, in milliseconds.
    pub timeout_ms: u64,
    /// Its environment.
    pub env: Vec<(String, String)>,
}

/// An attempt to run, with where its files are on this machine.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Run {
    /// What to run.
    pub assignment: Assignment,
    /// The node's id (for `TESSERA_NODE_ID`).
    pub node_id: String,
    /// The component's compiled artifact.
    pub artifact: PathBuf,
    /// The extracted application image, mounted at `/app`.
    pub app: PathBuf,
    /// Files to mount under `/inputs`: their path there and the cached copy.
    pub mounts: Vec<(String, PathBuf)>,
}

/// A file the worker left in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutboxFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
}

/// A split plan as the worker hands it over.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PlanOut {
    /// Small: the plan itself.
    Inline(SplitPlan),
    /// Large: its JSON in the outbox.
    File(OutboxFile),
}

/// What a successful attempt left behind.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Produced {
    /// Its outputs: path under `/output`, and the file in the outbox.
    pub outputs: Vec<(String, OutboxFile)>,
    /// The plan, for a split.
    pub plan: Option<PlanOut>,
}

/// How an attempt ended, as the worker saw it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Finished {
    /// Which attempt.
    pub key: AttemptKey,
    /// What it produced, or why it failed.
    pub outcome: Result<Produced, Failure>,
    /// Its stdout, if it wrote any.
    pub stdout: Option<OutboxFile>,
    /// Its stderr, if it wrote any.
    pub stderr: Option<OutboxFile>,
    /// When it started and ended (ms since the epoch).
    pub started_at: i64,
    /// When it ended.
    pub finished_at: i64,
    /// What it used.
    pub usage: Usage,
}

/// Something the worker tells the node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Event {
    /// The worker is set up and takes requests.
    Ready,
    /// It cannot start; it exits after saying why.
    Broken(String),
    /// The running attempt reported progress.
    Progress(AttemptKey, f32),
    /// An attempt ended (when it was stopped from outside, the worker
    /// exits right after).
    Finished(Box<Finished>),
    /// The start task ended.
    StartTaskFinished(crate::protocol::StartTaskReport),
}

/// Writes one frame.
pub(crate) fn write_frame<T: Serialize>(out: &mut impl Write, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n <= MAX_FRAME)
        .ok_or_else(|| io::Error::other(format!("a frame of {} bytes is too large", body.len())))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&body)?;
    Ok(())
}

/// Reads one frame; `None` at the end of the stream.
pub(crate) fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a frame of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len as usize];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(io::Error::other)
}

/// Decodes frames from bytes arriving in pieces (the node reads its
/// workers' output asynchronously).
#[derive(Default)]
pub(crate) struct FrameBuffer {
    bytes: Vec<u8>,
}

impl FrameBuffer {
    /// Appends what arrived.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// The next complete frame, if one has arrived.
    pub(crate) fn next<T: DeserializeOwned>(&mut self) -> io::Result<Option<T>> {
        let Some(header) = self.bytes.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(header.try_into().expect("four bytes"));
        if len > MAX_FRAME {
            return Err(io::Error::other(format!(
                "a frame of {len} bytes is too large"
            )));
        }
        let end = 4 + len as usize;
        if self.bytes.len() < end {
            return Ok(None);
        }
        let value = serde_json::from_slice(&self.bytes[4..end]).map_err(io::Error::other)?;
        self.bytes.drain(..end);
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whole_and_in_pieces() {
        let events = [
            Event::Ready,
            Event::Progress(
                AttemptKey {
                    job_id: "j".into(),
                    seq: 3,
                    attempt: 2,
                },
                0.5,
            ),
            Event::Broken("no".into()),
        ];
        let mut bytes = Vec::new();
        for e in &events {
            write_frame(&mut bytes, e).unwrap();
        }
        let mut reader = &bytes[..];
        let mut whole = Vec::new();
        while let Some(e) = read_frame::<Event>(&mut reader).unwrap() {
            whole.push(format!("{e:?}"));
        }
        let mut buffer = FrameBuffer::default();
        let mut pieces = Vec::new();
        for chunk in bytes.chunks(3) {
            buffer.extend(chunk);
            while let Some(e) = buffer.next::<Event>().unwrap() {
                pieces.push(format!("{e:?}"));
            }
        }
        let expected: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(whole, expected);
        assert_eq!(pieces, expected);
    }

    #[test]
    fn oversize_and_broken_frames_are_errors() {
        let mut bytes = (MAX_FRAME + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert!(read_frame::<Event>(&mut &bytes[..]).is_err());
        let mut buffer = FrameBuffer::default();
        buffer.extend(&bytes);
        assert!(buffer.next::<Event>().is_err());
        let mut bad = 2u32.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{]");
        assert!(read_frame::<Event>(&mut &bad[..]).is_err());
        assert!(
            read_frame::<Event>(&mut &b"\x01\x00"[..])
                .unwrap()
                .is_none()
        );
    }
}
